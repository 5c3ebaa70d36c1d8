"""Pure parts of the ZooKeeper layer: formats, paths, the takeover rule."""

from __future__ import annotations

import pytest

from allot.errors import InvalidNodeKey
from allot.zk.codec import (
    LeaseRecord,
    MemberInfo,
    VersionRecord,
    decode_buckets,
    decode_lease,
    decode_member_info,
    decode_time,
    decode_version,
    encode_buckets,
    encode_lease,
    encode_member_info,
    encode_time,
    encode_version,
)
from allot.zk.leases import lease_bucket
from allot.zk.paths import ZkPaths
from allot.zk.registration import dead_predecessor


def test_buckets_are_written_exactly_like_amoro() -> None:
    assert encode_buckets([7, 1, 4]) == b'["1","4","7"]'
    assert encode_buckets([]) == b"[]"
    assert decode_buckets(b'["1","4","7"]') == (1, 4, 7)
    assert decode_buckets(b'[ "7" , "1" ]') == (1, 7)  # whitespace from other writers is fine


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b'{"1": 2}', "expected a JSON list"),
        (b'["1", 2]', "is not a decimal string"),
        (b'["1", "x"]', "is not a decimal string"),
        (b'["-1"]', "is not a decimal string"),
        (b'["0"]', "is not positive"),
        (b'["3", "3"]', "listed twice"),
        (b"\xff\xfe", "not UTF-8"),
        (b"", "malformed JSON"),
        (None, "no data"),
    ],
)
def test_malformed_assignments_are_refused_with_a_reason(data: bytes | None, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_buckets(data)


def test_last_update_time_is_decimal_ascii() -> None:
    assert encode_time(1_700_000_000_123) == b"1700000000123"
    assert decode_time(b"1700000000123") == 1_700_000_000_123
    for bad in (b"", b"12.5", b"-3", b"soon", b" 12", None):
        with pytest.raises(ValueError, match="not a decimal integer"):
            decode_time(bad)


def test_version_record_round_trips_and_is_compact() -> None:
    record = VersionRecord(3, "plan-9", 1_700_000_000_000)
    assert encode_version(record) == b'{"epoch":3,"plan_id":"plan-9","applied_at":1700000000000}'
    assert decode_version(encode_version(record)) == record
    pending = VersionRecord(3, "plan-9", 1, {"plan_id": "p", "epoch": 4, "step": 1, "steps": 2})
    assert decode_version(encode_version(pending)) == pending
    for bad, reason in (
        (b"[]", "expected a JSON object"),
        (b'{"epoch": -1}', "epoch"),
        (b'{"epoch": true}', "epoch"),
        (b'{"epoch": 1, "plan_id": 5}', "plan_id"),
    ):
        with pytest.raises(ValueError, match=reason):
            decode_version(bad)


def test_member_info_round_trips_and_refuses_bad_fields() -> None:
    info = MemberInfo("node1@host", "host", 42, 2.0, 1_700_000_000_000)
    assert decode_member_info(encode_member_info(info)) == info
    assert encode_member_info(info) == (
        b'{"node_key":"node1@host","host":"host","pid":42,"weight":2.0,"started_at":1700000000000}'
    )
    for bad, reason in (
        (b'{"node_key":"a/b","host":"h","pid":1,"weight":1,"started_at":1}', "invalid node key"),
        (b'{"node_key":"a","host":"h","pid":1,"weight":0,"started_at":1}', "weight"),
        (b'{"node_key":"a","host":"h","pid":"1","weight":1,"started_at":1}', "pid"),
        (b'{"node_key":"a","pid":1,"weight":1,"started_at":1}', "host"),
        (b"null", "expected a JSON object"),
    ):
        with pytest.raises(ValueError, match=reason):
            decode_member_info(bad)


def test_lease_round_trips_and_is_compact() -> None:
    record = LeaseRecord("node1@host", 7)
    assert encode_lease(record) == b'{"node_key":"node1@host","epoch":7}'
    assert decode_lease(encode_lease(record)) == record
    # other writers' spacing is fine; a lease without an epoch still names its holder
    assert decode_lease(b'{"node_key": "a@h", "epoch": 2}') == LeaseRecord("a@h", 2)
    assert decode_lease(b'{"node_key": "a@h"}') == LeaseRecord("a@h", None)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"", "malformed JSON"),
        (b"\xff", "not UTF-8"),
        (None, "no data"),
        (b'["a@h", 1]', "expected a JSON object"),
        (b'{"epoch": 2}', "node_key"),
        (b'{"node_key": 5, "epoch": 2}', "node_key"),
        (b'{"node_key": "a@h", "epoch": -1}', "epoch"),
        (b'{"node_key": "a@h", "epoch": "2"}', "epoch"),
        (b'{"node_key": "a@h", "epoch": true}', "epoch"),
    ],
)
def test_malformed_leases_are_refused_with_a_reason(data: bytes | None, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_lease(data)


def test_a_lease_is_named_by_its_bucket_id_as_the_paths_write_it() -> None:
    assert [lease_bucket(name) for name in ("7", "100", "0")] == [7, 100, 0]
    for foreign in ("07", "+7", "-1", "lock", "", "\u00b2", "\u0667"):  # superscript 2, Arabic 7
        assert lease_bucket(foreign) is None


def test_paths_follow_the_documented_layout() -> None:
    paths = ZkPaths("/default/amoro/ams")
    assert paths.assignments("127.0.0.1:1260") == (
        "/default/amoro/ams/bucket-assignments/127.0.0.1:1260/assignments"
    )
    assert (
        paths.last_update_time("n@h")
        == "/default/amoro/ams/bucket-assignments/n@h/last-update-time"
    )
    assert paths.node("n@h") == "/default/amoro/ams/nodes/n@h"
    assert paths.assign_lock == "/default/amoro/ams/locks/assign"
    assert paths.assignment_version == "/default/amoro/ams/assignment-version"
    assert paths.lease(7) == "/default/amoro/ams/leases/7"
    assert paths.generation == "/default/amoro/ams/generation"


@pytest.mark.parametrize("key", ["../x", "a/b", "", ".", ".."])
def test_paths_refuse_keys_that_could_escape(key: str) -> None:
    with pytest.raises(InvalidNodeKey):
        ZkPaths("/r").assignments(key)


@pytest.mark.parametrize("root", ["relative", "/trailing/", "/", "//double"])
def test_paths_refuse_unusable_roots(root: str) -> None:
    with pytest.raises(ValueError, match="ZooKeeper root"):
        ZkPaths(root)


ME = MemberInfo("n@h", "hostA", 100, 1.0, 10_000)


def test_takeover_only_for_a_provably_dead_predecessor() -> None:
    def never_running(pid: int) -> bool:
        return False

    def always_running(pid: int) -> bool:
        return True

    def unknown_start(pid: int) -> int | None:
        return None

    dead = MemberInfo("n@h", "hostA", 55, 1.0, 5_000)
    # Given a predecessor on this host whose process no longer runs: take it over.
    assert dead_predecessor(dead, ME, never_running, unknown_start) is not None
    # Given the same pid as ours (an earlier session of this process, a restarted container).
    assert dead_predecessor(MemberInfo("n@h", "hostA", 100, 1.0, 1), ME, always_running) is not None
    # Given a live process on this host: never.
    assert dead_predecessor(dead, ME, always_running, unknown_start) is None
    # Given its pid reused by a process started after it registered: dead.
    assert dead_predecessor(dead, ME, always_running, lambda pid: 9_000) is not None
    # ...but a process started before it registered may be it: not taken.
    assert dead_predecessor(dead, ME, always_running, lambda pid: 4_000) is None
    # Given another host: never, whatever its pid.
    assert dead_predecessor(MemberInfo("n@h", "hostB", 55, 1.0, 1), ME, never_running) is None

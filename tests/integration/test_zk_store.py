"""The assignment store against a real ZooKeeper: exact bytes, Amoro's trees, corrupt data."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from kazoo.client import KazooClient

from allot.errors import CorruptAssignment, InvalidNodeKey
from allot.settings import Settings
from allot.testing.servers import ServerProcess
from allot.zk import AssignmentStore, ZkPaths, connect
from allot.zk.multiread import use_multi_read

NOW = 1_700_000_000_123


@pytest.fixture
def raw(zk_connect: Callable[[], KazooClient]) -> KazooClient:
    """A second session, to read and write znodes by hand."""
    return zk_connect()


def test_applied_assignments_have_amoros_paths_and_exact_bytes(
    zk: KazooClient, raw: KazooClient, zk_root: str
) -> None:
    # Given an empty root
    store = AssignmentStore(zk, ZkPaths(zk_root), clock=lambda: NOW)
    # When a plan is applied
    result = store.apply(store.read_all(), {"a@h": [7, 1, 4], "b@h": []}, plan_id="plan-1")
    # Then the znodes hold exactly Amoro's bytes, and the version record is compact JSON
    assert raw.get(f"{zk_root}/bucket-assignments/a@h/assignments")[0] == b'["1","4","7"]'
    assert raw.get(f"{zk_root}/bucket-assignments/a@h/last-update-time")[0] == b"1700000000123"
    assert raw.get(f"{zk_root}/bucket-assignments/b@h/assignments")[0] == b"[]"
    assert raw.get(f"{zk_root}/assignment-version")[0] == (
        b'{"epoch":1,"plan_id":"plan-1","applied_at":1700000000123}'
    )
    assert sorted(raw.get_children(zk_root)) == [
        "assignment-version",
        "bucket-assignments",
        "locks",
        "nodes",
    ]
    assert sorted(raw.get_children(f"{zk_root}/bucket-assignments/a@h")) == [
        "assignments",
        "last-update-time",
    ]
    assert (result.base_epoch, result.epoch, result.written) == (0, 1, ("a@h", "b@h"))


def test_reads_a_tree_written_by_amoro(
    zookeeper: ServerProcess, raw: KazooClient, zk_root: str
) -> None:
    # Given an Amoro cluster's tree, written by hand, without allot's assignment-version
    root = f"{zk_root}/default/amoro/ams"
    for key, buckets, updated in (
        ("10.0.0.1:1260", ["1", "2", "3"], b"1700000000001"),
        ("10.0.0.2:1260", ["4", "5"], b"1700000000002"),
    ):
        entry = f"{root}/bucket-assignments/{key}"
        raw.create(f"{entry}/assignments", json.dumps(buckets).encode(), makepath=True)
        raw.create(f"{entry}/last-update-time", updated)
    settings = Settings(zk_hosts=zookeeper.address, zk_root=root, zk_session_timeout=4)
    client = connect(settings)
    try:
        store = AssignmentStore(client, ZkPaths(settings.zk_root), clock=lambda: NOW)
        # When allot reads it
        snapshot = store.read_all()
        # Then every node reads, with its time, and no version yet (epoch 0)
        assert snapshot.buckets_by_node() == {"10.0.0.1:1260": [1, 2, 3], "10.0.0.2:1260": [4, 5]}
        assert snapshot.nodes["10.0.0.2:1260"].last_update_ms == 1_700_000_000_002
        assert (snapshot.version.epoch, snapshot.version.exists) == (0, False)
        assert not snapshot.corrupt
        assert not snapshot.invalid
        # And a plan (a third node joins) is written back in Amoro's format
        plan = {"10.0.0.1:1260": [1, 2], "10.0.0.2:1260": [4, 5], "10.0.0.3:1260": [3]}
        result = store.apply(snapshot, plan, plan_id="join")
        assert result.written == ("10.0.0.1:1260", "10.0.0.3:1260")
        assert raw.get(f"{root}/bucket-assignments/10.0.0.1:1260/assignments")[0] == b'["1","2"]'
        assert raw.get(f"{root}/bucket-assignments/10.0.0.3:1260/assignments")[0] == b'["3"]'
        untouched = raw.get(f"{root}/bucket-assignments/10.0.0.2:1260/last-update-time")[0]
        assert untouched == b"1700000000002"  # only changed nodes are written
        assert json.loads(raw.get(f"{root}/assignment-version")[0])["epoch"] == 1
    finally:
        client.stop()
        client.close()


def test_corrupt_nodes_are_reported_not_fatal_and_the_next_apply_rewrites_them(
    zk: KazooClient, raw: KazooClient, zk_root: str
) -> None:
    # Given one good node and several damaged by hand
    paths = ZkPaths(zk_root)
    store = AssignmentStore(zk, paths, clock=lambda: NOW)
    store.apply(store.read_all(), {"good@h": [1, 2]}, plan_id="p1")
    raw.create(paths.assignments("json@h"), b'{"1", oops', makepath=True)
    raw.create(paths.assignments("ints@h"), b"[3, 4]", makepath=True)
    raw.create(paths.assignments("time@h"), b'["5"]', makepath=True)
    raw.create(paths.last_update_time("time@h"), b"yesterday")
    raw.create(f"{paths.node_entry('empty@h')}", b"")
    raw.create(f"{paths.bucket_assignments}/bad key!", b"")
    # When everything is read
    snapshot = store.read_all()
    # Then the good node reads and every damaged one is reported with its reason
    assert snapshot.buckets_by_node() == {"good@h": [1, 2]}
    assert set(snapshot.corrupt) == {"json@h", "ints@h", "time@h", "empty@h"}
    assert "malformed JSON" in snapshot.corrupt["json@h"]
    assert "not a decimal string" in snapshot.corrupt["ints@h"]
    assert "last-update-time" in snapshot.corrupt["time@h"]
    assert "missing" in snapshot.corrupt["empty@h"]
    assert list(snapshot.invalid) == ["bad key!"]
    with pytest.raises(CorruptAssignment, match="json@h"):
        store.read("json@h")
    # When a plan names them, it overwrites the corrupt znodes (and creates missing ones)
    plan = {"good@h": [1, 2], "json@h": [3], "ints@h": [4], "time@h": [5], "empty@h": [6]}
    store.apply(snapshot, plan, plan_id="p2")
    repaired = store.read_all()
    assert not repaired.corrupt
    assert repaired.buckets_by_node() == {k: list(v) for k, v in plan.items()}
    assert raw.get(paths.last_update_time("time@h"))[0] == b"1700000000123"


def test_a_corrupt_version_record_is_reported_and_epochs_keep_increasing(
    zk: KazooClient, raw: KazooClient, zk_root: str
) -> None:
    paths = ZkPaths(zk_root)
    store = AssignmentStore(zk, paths)
    store.apply(store.read_all(), {"a@h": [1]}, plan_id="p1")
    store.apply(store.read_all(), {"a@h": [1, 2]}, plan_id="p2")
    raw.set(paths.assignment_version, b"garbage")  # znode version 2 now
    snapshot = store.read_all()
    assert snapshot.version.problem is not None
    assert snapshot.version.epoch >= 2  # a lower bound that never goes back
    result = store.apply(snapshot, {"a@h": [1, 2, 3]}, plan_id="p3")
    assert result.epoch > 2
    assert store.read_version().plan_id == "p3"
    assert store.read_version().problem is None


def test_save_read_delete_one_node(zk: KazooClient, raw: KazooClient, zk_root: str) -> None:
    paths = ZkPaths(zk_root)
    store = AssignmentStore(zk, paths, clock=lambda: NOW)
    assert store.read("n@h") is None
    store.save("n@h", [9, 3])
    store.save("n@h", [9, 3])  # safe to repeat
    node = store.read("n@h")
    assert node is not None
    assert (node.buckets, node.last_update_ms) == ((3, 9), NOW)
    assert raw.get(paths.assignments("n@h"))[0] == b'["3","9"]'
    # a raw save raises the version znode's data version (not its epoch)
    version = store.read_version()
    assert version.epoch == 0
    assert version.zversion >= 1
    raw.create(f"{paths.node_entry('n@h')}/extra", b"left by hand")
    assert store.delete("n@h") is True
    assert store.delete("n@h") is False
    assert raw.exists(paths.node_entry("n@h")) is None
    with pytest.raises(InvalidNodeKey):
        store.save("a/b", [1])


@pytest.mark.parametrize("multi_read", [True, False])
def test_read_all_of_many_nodes_with_and_without_multiread(
    zk: KazooClient, raw: KazooClient, zk_root: str, multi_read: bool
) -> None:
    # Given 1,200 nodes (more than one multiRead request) and a few oddities
    paths = ZkPaths(zk_root)
    store = AssignmentStore(zk, paths)
    plan = {f"node-{i:04d}@host": [i + 1] for i in range(1_200)}
    store.apply(store.read_all(), plan, plan_id="many")
    raw.delete(paths.last_update_time("node-0007@host"))
    raw.set(paths.assignments("node-0008@host"), b"nope")
    # When read with multiRead (ZooKeeper 3.6+) or one request per znode
    use_multi_read(zk, multi_read)
    snapshot = store.read_all()
    # Then the results are the same
    expected = {k: list(v) for k, v in plan.items() if k != "node-0008@host"}
    assert snapshot.buckets_by_node() == expected
    assert snapshot.nodes["node-0007@host"].last_update_ms is None
    assert list(snapshot.corrupt) == ["node-0008@host"]
    assert snapshot.present["node-0007@host"] == {"assignments"}
    assert snapshot.version.epoch == 1
    use_multi_read(zk, True)

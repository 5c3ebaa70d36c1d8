"""``allot pin`` and ``allot unpin``, run as real processes against a real ZooKeeper."""

from __future__ import annotations

from kazoo.client import KazooClient

from allot.settings import Settings
from allot.zk.codec import MemberInfo
from allot.zk.paths import ZkPaths
from allot.zk.pins import read_pins
from allot.zk.registration import NodeRegistration
from tests.cli import allot


def env_of(settings: Settings) -> dict[str, str]:
    return {
        "ALLOT_ZK_HOSTS": settings.zk_hosts,
        "ALLOT_ZK_ROOT": settings.zk_root,
        "ALLOT_BUCKET_COUNT": "16",
    }


def test_pin_and_unpin_write_the_pins(zk_settings: Settings, zk: KazooClient) -> None:
    paths = ZkPaths(zk_settings.zk_root)
    NodeRegistration(zk, paths, MemberInfo("a@h", "host", 1, 1.0, 0)).register()
    env = env_of(zk_settings)

    pinned = allot("pin", "7", "a@h", env=env)
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.stdout.strip() == "bucket 7 pinned to a@h"
    assert pinned.stderr == ""
    assert read_pins(zk, paths).by_bucket == {7: "a@h"}

    unpinned = allot("unpin", "7", env=env)
    assert unpinned.returncode == 0, unpinned.stderr
    assert unpinned.stdout.strip() == "bucket 7 unpinned (was on a@h)"
    assert read_pins(zk, paths).by_bucket == {}
    assert allot("unpin", "7", env=env).stdout.strip() == "bucket 7 was not pinned"


def test_a_pin_to_a_node_not_live_is_kept_with_a_warning(
    zk_settings: Settings, zk: KazooClient
) -> None:
    pinned = allot("pin", "3", "gone@h", env=env_of(zk_settings))

    assert pinned.returncode == 0, pinned.stderr
    assert "node gone@h is not live now" in pinned.stderr
    assert read_pins(zk, ZkPaths(zk_settings.zk_root)).by_bucket == {3: "gone@h"}


def test_bad_buckets_and_node_keys_get_one_line_errors(
    zk_settings: Settings, zk: KazooClient
) -> None:
    env = env_of(zk_settings)
    for args, message in [
        (("pin", "17", "a@h"), "invalid bucket 17: bucket ids are 1..16"),
        (("pin", "0", "a@h"), "invalid bucket 0"),
        (("pin", "x", "a@h"), "invalid bucket 'x': expected an integer"),
        (("pin", "3", "a/b"), "invalid node key"),
        (("unpin", "99"), "invalid bucket 99"),
    ]:
        refused = allot(*args, env=env)
        assert refused.returncode == 2, args
        assert refused.stderr.count("\n") == 1, refused.stderr
        assert message in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    assert zk.exists(ZkPaths(zk_settings.zk_root).pins) is None

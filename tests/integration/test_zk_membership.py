"""Membership against a real ZooKeeper: takeover after kill -9, refusal, expiry, displacement."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient

from allot.errors import NodeKeyTaken
from allot.settings import Settings
from allot.testing.polling import wait_for
from allot.testing.servers import ServerProcess
from allot.testing.zookeeper import expire_session
from allot.zk import (
    MemberInfo,
    MembershipWatch,
    NodeRegistration,
    ZkPaths,
    connect,
    read_members,
    this_process,
)
from allot.zk.codec import decode_member_info, encode_member_info

# A worker that registers and then lives until killed; its session outlives a kill -9 by
# zk_session_timeout (20 s here), so the successor cannot just wait for it.
WORKER = """
import sys, time
from allot.settings import Settings
from allot.zk import NodeRegistration, ZkPaths, connect, this_process
settings = Settings(zk_hosts=sys.argv[1], zk_root=sys.argv[2], zk_session_timeout=20)
client = connect(settings)
NodeRegistration(client, ZkPaths(settings.zk_root), this_process(sys.argv[3])).register()
print("registered", flush=True)
time.sleep(600)
"""


@pytest.fixture
def worker(zk_settings: Settings) -> Iterator[subprocess.Popen[str]]:
    """A real worker process registered as ``worker@test``."""
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, zk_settings.zk_hosts, zk_settings.zk_root, "worker@test"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "registered"
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_register_and_list_live_nodes(zk: KazooClient, zk_settings: Settings) -> None:
    paths = ZkPaths(zk_settings.zk_root)
    registration = NodeRegistration(zk, paths, this_process("n1@h", weight=2.5))
    registration.register()
    registration.register()  # safe to repeat
    members = read_members(zk, paths)
    node = members.live["n1@h"]
    assert node.info is not None
    assert (node.info.pid, node.info.weight) == (os.getpid(), 2.5)
    assert node.session_id == zk.client_id[0]
    registration.unregister()
    assert read_members(zk, paths).live == {}


def test_foreign_membership_znodes_are_reported_and_ignored(
    zk: KazooClient, zk_settings: Settings
) -> None:
    # Given an allot node, Amoro's own AMS member on the same root, a malformed and a lying
    # znode, and a child whose name is not a node key
    paths = ZkPaths(zk_settings.zk_root)
    NodeRegistration(zk, paths, this_process("good@h")).register()
    amoro = b'{"host":"10.0.0.7","restBindPort":1630,"thriftBindPort":1260}'
    zk.create(f"{paths.nodes}/node-0000000002", amoro, ephemeral=True)
    zk.create(paths.node("bad@h"), b"{oops", ephemeral=True)
    zk.create(paths.node("liar@h"), encode_member_info(this_process("other@h")), ephemeral=True)
    zk.create(f"{paths.nodes}/not a key", b"", ephemeral=True)
    # When membership is read
    members = read_members(zk, paths)
    # Then only the allot node is live; every other child is reported with its reason
    assert set(members.live) == {"good@h"}
    assert set(members.foreign) == {"node-0000000002", "bad@h", "liar@h"}
    assert "not an allot member" in members.foreign["node-0000000002"]
    assert list(members.invalid) == ["not a key"]
    assert set(members.ignored()) == {"node-0000000002", "bad@h", "liar@h", "not a key"}


def test_a_killed_workers_node_is_taken_over_by_its_successor_at_once(
    zk: KazooClient, zk_settings: Settings, worker: subprocess.Popen[str]
) -> None:
    # Given a worker killed with -9: its znode stays while its 20 s session lives on
    paths = ZkPaths(zk_settings.zk_root)
    path = paths.node("worker@test")
    _, stale = zk.get(path)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert zk.exists(path) is not None
    # When its successor on the same host registers under the same key
    started = time.monotonic()
    NodeRegistration(zk, paths, this_process("worker@test")).register()
    elapsed = time.monotonic() - started
    # Then it owns the znode within 2 s, without waiting for the old session to expire
    data, stat = zk.get(path)
    assert elapsed < 2.0
    assert stat.ephemeralOwner == zk.client_id[0] != stale.ephemeralOwner
    assert decode_member_info(data).pid == os.getpid()


def test_a_live_process_is_never_robbed_of_its_key(
    zk: KazooClient, zk_settings: Settings, worker: subprocess.Popen[str]
) -> None:
    # Given a live worker registered as worker@test
    paths = ZkPaths(zk_settings.zk_root)
    _, before = zk.get(paths.node("worker@test"))
    # When another process starts with the same key, it fails loudly instead of stealing
    registration = NodeRegistration(zk, paths, this_process("worker@test"))
    with pytest.raises(NodeKeyTaken, match=f"pid {worker.pid}"):
        registration.register()
    started = time.monotonic()
    with pytest.raises(NodeKeyTaken):
        registration.register(wait=0.5)  # waits for the holder to go, then gives up
    assert time.monotonic() - started >= 0.5
    _, after = zk.get(paths.node("worker@test"))
    assert after.ephemeralOwner == before.ephemeralOwner


def test_another_hosts_znode_is_waited_for_not_taken(
    zk: KazooClient, zk_settings: Settings, zookeeper: ServerProcess
) -> None:
    paths = ZkPaths(zk_settings.zk_root)
    other = connect(zk_settings)
    try:
        elsewhere = MemberInfo("n@h", "another-host", os.getpid(), 1.0, 1)
        NodeRegistration(other, paths, elsewhere).register()
        threading.Timer(0.3, other.stop).start()  # its session ends: the znode goes
        NodeRegistration(zk, paths, this_process("n@h")).register(wait=5)
        assert zk.get(paths.node("n@h"))[1].ephemeralOwner == zk.client_id[0]
    finally:
        other.close()


def test_re_registers_after_the_session_expires(
    zk: KazooClient, zk_settings: Settings, zookeeper: ServerProcess
) -> None:
    paths = ZkPaths(zk_settings.zk_root)
    NodeRegistration(zk, paths, this_process("n@h")).register()
    old_session = zk.client_id[0]
    expire_session(zk, zookeeper.address)
    assert zk.client_id[0] != old_session

    def registered_again() -> bool:
        stat = zk.exists(paths.node("n@h"))
        return stat is not None and stat.ephemeralOwner == zk.client_id[0]

    wait_for(registered_again, "n@h registered by the new session", 5)


def test_a_displaced_node_does_not_steal_back(zk: KazooClient, zk_settings: Settings) -> None:
    # Given a registered node
    paths = ZkPaths(zk_settings.zk_root)
    reasons: list[str] = []
    registration = NodeRegistration(zk, paths, this_process("n@h"), on_displaced=reasons.append)
    registration.register()
    # When another live session replaces its znode (a misconfigured twin)
    twin = connect(zk_settings)
    try:
        twin_info = encode_member_info(MemberInfo("n@h", "twin-host", 1, 1.0, 1))
        replace = twin.transaction()
        replace.delete(paths.node("n@h"))
        replace.create(paths.node("n@h"), twin_info, ephemeral=True)
        assert not any(isinstance(r, Exception) for r in replace.commit())
        # Then it notices, reports itself displaced, and leaves the twin alone: the decision is
        # made by the reconcile the deletion started, and one more reconcile (what a reconnection
        # runs) changes nothing either
        wait_for(lambda: registration.displaced is not None, "n@h to see itself displaced", 5)
        registration._reconcile()
        assert zk.get(paths.node("n@h"))[1].ephemeralOwner == twin.client_id[0]
        assert not registration.registered
        assert reasons
        assert "twin-host" in reasons[0]
    finally:
        twin.stop()
        twin.close()


def test_the_watch_reports_joins_and_departures(zk: KazooClient, zk_settings: Settings) -> None:
    paths = ZkPaths(zk_settings.zk_root)
    seen: list[frozenset[str]] = []
    watch = MembershipWatch(zk, paths, seen.append)
    registration = NodeRegistration(zk, paths, this_process("n@h"))
    registration.register()
    wait_for(lambda: bool(seen) and seen[-1] == {"n@h"}, "the watch to report n@h", 5)
    registration.unregister()
    wait_for(lambda: seen[-1] == frozenset(), "the watch to report no members", 5)
    watch.stop()

"""The assignment lock and its guard against a real ZooKeeper."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.retry import KazooRetry

from allot.errors import LockLost, ZooKeeperUnavailable
from allot.testing.polling import wait_for
from allot.testing.servers import ServerProcess, start_zookeeper
from allot.testing.zookeeper import expire_session
from allot.zk import AssignmentLock, ZkPaths


@pytest.fixture
def clients(zk_connect: Callable[[], KazooClient]) -> list[KazooClient]:
    return [zk_connect() for _ in range(2)]


def test_a_held_lock_means_skipped_without_waiting(
    clients: list[KazooClient], zk_root: str
) -> None:
    paths = ZkPaths(zk_root)
    first, second = AssignmentLock(clients[0], paths, "w1"), AssignmentLock(clients[1], paths, "w2")
    guard = first.acquire()
    assert guard is not None
    assert guard.valid
    assert guard.lock_node.startswith(f"{zk_root}/locks/assign/")
    started = time.monotonic()
    assert second.acquire() is None
    assert time.monotonic() - started < 0.5
    assert first.contenders() == ["w1"]
    first.release()
    assert not guard.valid
    with pytest.raises(LockLost, match="released"):
        guard.check()
    with second.holding() as taken:
        assert taken is not None
    assert first.acquire() is not None  # released on leaving the block
    first.release()


def test_blocking_acquisition_waits_up_to_its_timeout(
    clients: list[KazooClient], zk_root: str
) -> None:
    paths = ZkPaths(zk_root)
    first, second = AssignmentLock(clients[0], paths), AssignmentLock(clients[1], paths)
    assert first.acquire() is not None
    started = time.monotonic()
    assert second.acquire(timeout=0.5) is None
    assert 0.4 < time.monotonic() - started < 2.0
    threading.Timer(0.3, first.release).start()
    guard = second.acquire(timeout=5)
    assert guard is not None
    assert guard.valid
    second.release()


def test_the_guard_trips_when_the_session_expires_while_held(
    zookeeper: ServerProcess, clients: list[KazooClient], zk_root: str
) -> None:
    # Given a held lock
    paths = ZkPaths(zk_root)
    holder = AssignmentLock(clients[0], paths, "holder")
    guard = holder.acquire()
    assert guard is not None
    guard.check()
    # When the holder's session expires (and kazoo reconnects with a new session)
    expire_session(clients[0], zookeeper.address)
    # Then the guard refuses, though the client is connected again
    assert clients[0].connected
    with pytest.raises(LockLost, match="LOST"):
        guard.check()
    # And the lock is free for others: the expired session's znode is gone
    assert AssignmentLock(clients[1], paths).acquire() is not None
    holder.release()  # harmless after the loss


def test_acquiring_without_a_connection_is_an_error(zookeeper: ServerProcess, zk_root: str) -> None:
    client = KazooClient(hosts=zookeeper.address)
    with pytest.raises(ZooKeeperUnavailable):
        AssignmentLock(client, ZkPaths(zk_root)).acquire()


def test_a_suspension_trips_the_guard_even_when_the_session_survives(tmp_path: Path) -> None:
    # Given a lock held through a server of this test's own
    server = start_zookeeper(tmp_path / "zk")
    states: list[str] = []
    # keep reconnecting while the server is down (kazoo's default policy may give up)
    client = KazooClient(
        hosts=server.address, timeout=20, connection_retry=KazooRetry(max_tries=-1, max_delay=1.0)
    )

    def listen(state: str) -> bool:
        states.append(str(state))
        return False

    client.add_listener(listen)
    try:
        client.start(timeout=10)
        paths = ZkPaths("/allot")
        lock = AssignmentLock(client, paths, "holder")
        guard = lock.acquire()
        assert guard is not None
        session = client.client_id[0]
        # When the server goes away for a moment (SUSPENDED) and comes back in time
        server.stop()
        wait_for(lambda: "SUSPENDED" in states, "the client to see SUSPENDED", 10)
        server = start_zookeeper(tmp_path / "zk", port=server.port)
        wait_for(lambda: client.connected, "the client to reconnect", 20)
        # Then the session and its lock znode survived, but the guard stays tripped
        assert client.client_id[0] == session
        assert client.exists(guard.lock_node) is not None
        with pytest.raises(LockLost, match="SUSPENDED"):
            guard.check()
        lock.release()
    finally:
        client.stop()
        client.close()
        server.stop()

"""The ZooKeeper generation of the fence (allot.generation): a ZooKeeper rebuilt from
scratch takes the buckets over without a manual step, and a holder of the old one is fenced.

Real ZooKeeper servers (the session's, and a fresh one standing for the rebuilt ensemble) and
both databases; each node is a real :class:`BucketWork` whose queue switch is a recorder.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from sqlalchemy import Engine, select

from allot.errors import Fenced
from allot.generation import allocate_generation, decode_generation, zk_generation
from allot.testing.servers import ServerProcess, start_zookeeper
from allot.work.fence import hold_fence, read_fence, take_fence
from allot.work.leases import BucketWork
from allot.zk.paths import ZkPaths
from allot.zk.store import AssignmentStore
from models.engine import session_factory
from models.schema import FenceGeneration
from tests.integration.test_work_leases import REREAD, Node, Queues

StartNode = Callable[[str, str], Node]


@pytest.fixture
def paths(zk_root: str) -> ZkPaths:
    return ZkPaths(zk_root)


@pytest.fixture
def rebuilt(tmp_path: Path) -> Iterator[ServerProcess]:
    """A ZooKeeper started from nothing: the ensemble rebuilt after its data was lost."""
    server = start_zookeeper(tmp_path / "rebuilt")
    yield server
    server.stop()


@pytest.fixture
def clients() -> Iterator[Callable[[str], KazooClient]]:
    opened: list[KazooClient] = []

    def open_client(hosts: str) -> KazooClient:
        client = KazooClient(hosts=hosts, timeout=4)
        client.start(timeout=10)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.stop()
        client.close()


@pytest.fixture
def start_node(
    clients: Callable[[str], KazooClient], paths: ZkPaths, migrated: Engine
) -> Iterator[StartNode]:
    """``start_node(key, hosts)``: a node on the ZooKeeper at ``hosts``."""
    started: list[Node] = []

    def start(key: str, hosts: str) -> Node:
        client = clients(hosts)
        queues = Queues()
        work = BucketWork(
            client,
            paths,
            key,
            session_factory(migrated),
            serve=queues.serve,
            applied=lambda: queues.generation,
            busy=lambda: set(queues.busy),
            handoff_timeout=10.0,
            reread_seconds=REREAD,
        )
        work.start()
        node = Node(key, client, work, queues)
        started.append(node)
        return node

    yield start
    for node in started:
        node.work.stop()


def fence_of(engine: Engine, bucket: int) -> tuple[str, int, int] | None:
    with session_factory(engine)() as session:
        row = read_fence(session, bucket)
    return None if row is None else (row.node_key, row.generation, row.token)


def commit_allowed(engine: Engine, bucket: int, key: str, generation: int, token: int) -> bool:
    try:
        with session_factory(engine).begin() as session:
            hold_fence(session, bucket, key, token, generation=generation)
    except Fenced:
        return False
    return True


def counter(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(FenceGeneration.generation)).scalar_one()


def test_a_rebuilt_zookeeper_takes_the_bucket_over_and_the_old_holder_is_fenced(
    zookeeper: ServerProcess,
    rebuilt: ServerProcess,
    clients: Callable[[str], KazooClient],
    start_node: StartNode,
    paths: ZkPaths,
    migrated: Engine,
) -> None:
    # Given node a serving bucket 1 on the old ZooKeeper, whose zxids have run far ahead
    old_zk = clients(zookeeper.address)
    old_zk.ensure_path(paths.root + "/busy")
    for _ in range(200):
        old_zk.set(paths.root + "/busy", b"x")
    AssignmentStore(old_zk, paths).save("a@h", [1])
    old = start_node("a@h", zookeeper.address)
    old.wait_serving({1})
    old_token = old.lease_token(1)
    assert old_token is not None
    with session_factory(migrated)() as session:
        fence = read_fence(session, 1)
    assert fence is not None
    assert (fence.node_key, fence.token) == ("a@h", old_token)

    # When ZooKeeper is rebuilt from scratch (its data lost), and the node's key is served
    # there again (a restarted worker), while the old process still runs on the old ensemble
    AssignmentStore(clients(rebuilt.address), paths).save("a@h", [1])
    new = start_node("a@h", rebuilt.address)

    # Then the node on the rebuilt ZooKeeper serves the bucket without any manual step …
    new.wait_serving({1}, timeout=15)  # (before generations: refused, past the old token)
    new_token = new.lease_token(1)
    assert new_token is not None
    assert new_token < old_token  # the rebuilt ZooKeeper's tokens start small again
    assert fence_of(migrated, 1) == ("a@h", 2, new_token)  # a new generation, from SQL
    assert commit_allowed(migrated, 1, "a@h", 2, new_token)
    # … a commit under the old lease is refused, even with the same node key …
    assert not commit_allowed(migrated, 1, "a@h", 1, old_token)
    # … and the old process stops serving it at its next re-read, and cannot take it back
    old.wait_serving(set(), timeout=REREAD + 10)
    old.wait_passes()
    assert fence_of(migrated, 1) == ("a@h", 2, new_token)
    assert new.queues.serving == {1}


def test_a_fence_is_the_pair_generation_then_token(migrated: Engine) -> None:
    sessions = session_factory(migrated)
    with sessions.begin() as session:
        assert take_fence(session, 5, "a@h", 900, generation=1)
    # a later generation takes over with a smaller token, and with an equal one
    with sessions.begin() as session:
        assert take_fence(session, 5, "a@h", 900, generation=2)
    with sessions.begin() as session:
        assert take_fence(session, 5, "b@h", 40, generation=3)
    # an earlier generation never does, whatever its token
    with sessions.begin() as session:
        assert not take_fence(session, 5, "a@h", 10**12, generation=2)
    assert fence_of(migrated, 5) == ("b@h", 3, 40)
    # a commit must name node, generation and token
    assert commit_allowed(migrated, 5, "b@h", 3, 40)
    assert not commit_allowed(migrated, 5, "b@h", 2, 40)
    assert not commit_allowed(migrated, 5, "b@h", 3, 41)
    # within one generation, the larger token is the later lease
    with sessions.begin() as session:
        assert not take_fence(session, 5, "a@h", 39, generation=3)
    with sessions.begin() as session:
        assert take_fence(session, 5, "a@h", 41, generation=3)


def test_two_nodes_finding_no_generation_both_use_the_winning_znodes(
    zookeeper: ServerProcess,
    clients: Callable[[str], KazooClient],
    paths: ZkPaths,
    migrated: Engine,
) -> None:
    # Given two nodes on a ZooKeeper without a generation that both allocate one in SQL
    # before either creates the znode
    sessions = session_factory(migrated)
    both_allocated = threading.Barrier(2, timeout=10)
    allocated: list[int] = []

    def allocate() -> int:
        with sessions.begin() as session:
            generation = allocate_generation(session)
        allocated.append(generation)
        both_allocated.wait()
        return generation

    nodes = [clients(zookeeper.address), clients(zookeeper.address)]
    # When both read or create the generation at once
    with ThreadPoolExecutor(2) as pool:
        found = list(pool.map(lambda client: zk_generation(client, paths, allocate), nodes))
    # Then each allocation got its own number, one znode create won, and both use its number
    # (the loser's is burned: never used)
    assert sorted(allocated) == [1, 2]
    data, _ = nodes[0].get(paths.generation)
    winner = decode_generation(data)
    assert found == [winner, winner]
    assert counter(migrated) == 2
    # And a third node reads it, allocating nothing
    assert zk_generation(clients(zookeeper.address), paths, allocate) == winner
    assert counter(migrated) == 2


def test_a_generation_deleted_by_hand_is_allocated_again_larger_and_work_goes_on(
    zookeeper: ServerProcess,
    clients: Callable[[str], KazooClient],
    start_node: StartNode,
    paths: ZkPaths,
    migrated: Engine,
) -> None:
    # Given a serving bucket 1 with generation 1
    zk = clients(zookeeper.address)
    store = AssignmentStore(zk, paths)
    store.save("a@h", [1, 2])
    a = start_node("a@h", zookeeper.address)
    a.wait_serving({1, 2})
    assert fence_of(migrated, 1) == ("a@h", 1, a.lease_token(1))
    # When someone deletes the generation znode, and bucket 2 moves to b
    zk.delete(paths.generation)
    b = start_node("b@h", zookeeper.address)
    store.save("a@h", [1])
    store.save("b@h", [2])
    # Then b fences bucket 2 with a new, larger generation; a keeps bucket 1 under its own
    b.wait_serving({2})
    a.wait_serving({1})
    assert fence_of(migrated, 2) == ("b@h", 2, b.lease_token(2))
    assert fence_of(migrated, 1) == ("a@h", 1, a.lease_token(1))
    # And bucket 1 moving to b goes over under the larger pair
    store.save("a@h", [])
    store.save("b@h", [1, 2])
    b.wait_serving({1, 2})
    token = b.lease_token(1)
    assert token is not None
    assert fence_of(migrated, 1) == ("b@h", 2, token)
    assert not commit_allowed(migrated, 1, "a@h", 1, token)

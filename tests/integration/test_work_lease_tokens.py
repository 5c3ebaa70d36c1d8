"""The tokens BucketWork shares with its pool processes (allot.work.leases, allot.work.tokens)
on a real ZooKeeper and both databases: a bucket's (generation, token) pair, its fence's, is
there exactly while the node serves it (or drains it), cleared when it stops, on a lost session
included."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from kazoo.client import KazooClient
from sqlalchemy import Engine

from allot.testing.polling import wait_for
from allot.testing.servers import ServerProcess
from allot.testing.zookeeper import expire_session
from allot.work.fence import read_fence
from allot.work.leases import BucketWork
from allot.work.tokens import TokenTable
from allot.zk.paths import ZkPaths
from allot.zk.store import AssignmentStore
from models.engine import session_factory
from tests.integration.test_work_leases import REREAD, Node, Queues, paths, store

__all__ = ["paths", "store"]  # fixtures


class Watched(Queues):
    """Queues that also record the tokens shared at each switch."""

    def __init__(self, tokens: TokenTable) -> None:
        super().__init__()
        self.tokens = tokens
        self.unfenced: list[int] = []
        """Buckets handed to ``serve`` while their token was not shared yet."""

    def serve(self, buckets: frozenset[int]) -> int:
        self.unfenced += [b for b in buckets if self.tokens.token(b) == 0]
        return super().serve(buckets)


def fence_pair(engine: Engine, bucket: int) -> tuple[int, int]:
    """The (generation, token) the bucket's fence names."""
    with session_factory(engine)() as session:
        row = read_fence(session, bucket)
    assert row is not None
    return row.generation, row.token


@pytest.fixture
def start_node(
    zookeeper: ServerProcess, paths: ZkPaths, migrated: Engine
) -> Iterator[Callable[[str], tuple[Node, TokenTable]]]:
    started: list[Node] = []

    def start(key: str) -> tuple[Node, TokenTable]:
        client = KazooClient(hosts=zookeeper.address, timeout=4)
        client.start(timeout=10)
        tokens = TokenTable(100)
        queues = Watched(tokens)
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
            tokens=tokens,
        )
        work.start()
        node = Node(key, client, work, queues)
        started.append(node)
        return node, tokens

    yield start
    for node in started:
        node.work.stop()
        node.client.stop()
        node.client.close()


def test_a_buckets_token_is_shared_while_it_is_served_or_drained(
    start_node: Callable[[str], tuple[Node, TokenTable]],
    store: AssignmentStore,
    migrated: Engine,
) -> None:
    store.save("a@h", [1, 2])
    a, tokens = start_node("a@h")
    a.wait_serving({1, 2})
    # each pair is the lease's token with its fence's generation, shared before its queue
    # was consumed
    assert {b: own.token for b, own in tokens.held().items()} == a.work.held
    assert tokens.held() == {b: fence_pair(migrated, b) for b in (1, 2)}
    assert {own.generation for own in tokens.held().values()} == {1}  # the fresh database's first
    assert isinstance(a.queues, Watched)
    assert a.queues.unfenced == []

    # a bucket moving away keeps its token while a task of it runs, loses it at the release
    a.queues.busy = {1}
    store.save("a@h", [2])
    a.wait_serving({2})
    a.wait_passes()
    assert tokens.token(1) == a.work.held[1]
    a.queues.busy = set()
    wait_for(lambda: 1 not in a.work.held, "bucket 1 released", 10)
    assert tokens.held() == {2: (1, a.work.held[2])}

    # and a stop clears every token
    a.work.stop()
    assert tokens.held() == {}


def test_a_lost_session_clears_every_token_even_of_a_bucket_still_draining(
    start_node: Callable[[str], tuple[Node, TokenTable]],
    store: AssignmentStore,
    zookeeper: ServerProcess,
) -> None:
    # Given a bucket moving away from a while a task of it still runs (its token kept)
    store.save("a@h", [5])
    a, tokens = start_node("a@h")
    a.wait_serving({5})
    a.queues.busy = {5}
    store.save("a@h", [])
    a.wait_serving(set())
    a.wait_passes()
    assert tokens.token(5) == a.work.held[5]

    # When a's session is lost, then no run of the bucket may start here any more
    expire_session(a.client, zookeeper.address)
    assert tokens.held() == {}

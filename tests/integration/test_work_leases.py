"""Bucket leases and handoff (allot.work.leases) on a real ZooKeeper and both databases.

Each node is a real :class:`BucketWork` with its own ZooKeeper session; only the worker's
queue switch is a recorder (what a Celery consumer would consume), so each step of a handoff
can be held and checked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient
from sqlalchemy import Engine, update

from allot.errors import Fenced
from allot.testing.polling import wait_for
from allot.testing.servers import ServerProcess
from allot.testing.zookeeper import expire_session
from allot.work.fence import hold_fence, read_fence
from allot.work.leases import BucketWork, Recheck
from allot.zk.paths import ZkPaths
from allot.zk.store import AssignmentStore
from models.engine import session_factory
from models.schema import BucketLease


class Queues:
    """What a worker would consume: the last set handed to ``serve``; ``busy`` is set by the
    test (the buckets with a message running)."""

    def __init__(self) -> None:
        self.serving: frozenset[int] = frozenset()
        self.generation = 0
        self.busy: set[int] = set()
        self.history: list[frozenset[int]] = []

    def serve(self, buckets: frozenset[int]) -> int:
        if buckets != self.serving:
            self.serving = buckets
            self.generation += 1
            self.history.append(buckets)
        return self.generation


class Node:
    def __init__(self, key: str, client: KazooClient, work: BucketWork, queues: Queues) -> None:
        self.key, self.client, self.work, self.queues = key, client, work, queues

    def lease_token(self, bucket: int) -> int | None:
        return self.work.held.get(bucket)

    def wait_serving(self, buckets: set[int], timeout: float = 10) -> None:
        """Wait until this node's queues are exactly ``buckets``."""
        wanted = frozenset(buckets)
        wait_for(
            lambda: self.queues.serving == wanted, f"{self.key} serving {sorted(wanted)}", timeout
        )

    def wait_passes(self, count: int = 2, timeout: float = 10) -> None:
        """Wait until this node's loop has completed ``count`` more passes: the last one began
        after the call, so it saw everything the test did before."""
        start = self.work.passes
        what = f"{count} more passes of {self.key}'s lease loop"
        wait_for(lambda: self.work.passes >= start + count, what, timeout)


REREAD = 1.0
"""The nodes' periodic re-read (5 s in a worker): the foreign-writer tests wait for one."""


@pytest.fixture
def paths(zk_root: str) -> ZkPaths:
    return ZkPaths(zk_root)


@pytest.fixture
def start_node(zookeeper: ServerProcess, paths: ZkPaths, migrated: Engine) -> Iterator[object]:
    started: list[Node] = []

    def start(key: str, handoff_timeout: float = 10.0) -> Node:
        client = KazooClient(hosts=zookeeper.address, timeout=4)
        client.start(timeout=10)
        queues = Queues()
        work = BucketWork(
            client,
            paths,
            key,
            session_factory(migrated),
            serve=queues.serve,
            applied=lambda: queues.generation,
            busy=lambda: set(queues.busy),
            handoff_timeout=handoff_timeout,
            reread_seconds=REREAD,
        )
        work.start()
        node = Node(key, client, work, queues)
        started.append(node)
        return node

    yield start
    for node in started:
        node.work.stop()
        node.client.stop()
        node.client.close()


@pytest.fixture
def store(zookeeper: ServerProcess, paths: ZkPaths) -> Iterator[AssignmentStore]:
    client = KazooClient(hosts=zookeeper.address)
    client.start(timeout=10)
    yield AssignmentStore(client, paths)
    client.stop()
    client.close()


def fence_of(engine: Engine, bucket: int) -> tuple[str, int] | None:
    with session_factory(engine)() as session:
        row = read_fence(session, bucket)
    return None if row is None else (row.node_key, row.token)


def commit_allowed(engine: Engine, bucket: int, key: str, token: int, generation: int = 1) -> bool:
    """Whether a commit under ``key`` and ``token`` lands (the nodes of these tests share one
    ZooKeeper, whose generation is the first the fresh database hands out)."""
    try:
        with session_factory(engine).begin() as session:
            hold_fence(session, bucket, key, token, generation=generation)
    except Fenced:
        return False
    return True


def test_a_node_serves_its_buckets_only_after_taking_the_lease_and_the_fence(
    start_node, store: AssignmentStore, migrated: Engine, paths: ZkPaths
) -> None:
    store.save("a@h", [1, 2])
    a = start_node("a@h")
    a.wait_serving({1, 2})

    for bucket in (1, 2):
        stat = a.client.exists(paths.lease(bucket))
        assert stat is not None
        assert stat.ephemeralOwner == a.client.client_id[0]
        assert a.lease_token(bucket) == stat.czxid
        assert fence_of(migrated, bucket) == ("a@h", stat.czxid)
    # nothing was served before both were fenced: every set handed over is a subset of {1, 2}
    assert all(served <= {1, 2} for served in a.queues.history)


def test_a_busy_bucket_is_handed_over_after_its_task_finishes(
    start_node, store: AssignmentStore, migrated: Engine
) -> None:
    store.save("a@h", [1, 2])
    a = start_node("a@h")
    b = start_node("b@h")
    a.wait_serving({1, 2})
    old_token = a.lease_token(1)
    assert old_token is not None
    a.queues.busy = {1}  # a task of bucket 1 is running on a

    store.save("a@h", [2])
    store.save("b@h", [1])
    a.wait_serving({2}, timeout=5)  # a takes no new task of bucket 1 …
    a.wait_passes()
    b.wait_passes()
    assert 1 not in b.queues.serving  # … and b does not start while a's task runs
    assert a.lease_token(1) == old_token
    assert commit_allowed(migrated, 1, "a@h", old_token)  # a's running task may still commit

    a.queues.busy = set()  # the task finished
    b.wait_serving({1}, timeout=5)
    new_token = b.lease_token(1)
    assert new_token is not None
    assert new_token > old_token
    assert fence_of(migrated, 1) == ("b@h", new_token)
    assert not commit_allowed(migrated, 1, "a@h", old_token)  # a zombie commit is refused
    assert commit_allowed(migrated, 1, "b@h", new_token)


def test_the_handoff_timeout_releases_a_bucket_whose_task_hangs_and_fences_it(
    start_node, store: AssignmentStore, migrated: Engine
) -> None:
    store.save("a@h", [3])
    a = start_node("a@h", handoff_timeout=1.0)
    b = start_node("b@h")
    a.wait_serving({3})
    old_token = a.lease_token(3)
    assert old_token is not None
    a.queues.busy = {3}  # never finishes

    moved = time.monotonic()
    store.save("a@h", [])
    store.save("b@h", [3])
    b.wait_serving({3})
    assert time.monotonic() - moved >= 1.0  # not before the timeout
    assert not commit_allowed(migrated, 3, "a@h", old_token)


def test_a_bucket_that_comes_back_before_its_release_keeps_its_lease(
    start_node, store: AssignmentStore
) -> None:
    store.save("a@h", [4])
    a = start_node("a@h")
    a.wait_serving({4})
    token = a.lease_token(4)
    a.queues.busy = {4}
    store.save("a@h", [])
    a.wait_serving(set(), timeout=5)
    store.save("a@h", [4])
    a.wait_serving({4}, timeout=5)
    assert a.lease_token(4) == token


def test_a_lost_session_stops_every_queue_and_the_next_owner_takes_over(
    start_node, store: AssignmentStore, migrated: Engine, zookeeper: ServerProcess
) -> None:
    store.save("a@h", [5, 6])
    a = start_node("a@h")
    b = start_node("b@h")
    a.wait_serving({5, 6})
    old_token = a.lease_token(5)
    assert old_token is not None

    expire_session(a.client, zookeeper.address)
    wait_for(lambda: 5 not in a.queues.serving, "a's queue of bucket 5 stopped", 10)
    store.save("a@h", [])
    store.save("b@h", [5, 6])
    b.wait_serving({5, 6})
    assert not commit_allowed(migrated, 5, "a@h", old_token)
    assert 5 not in a.queues.serving
    assert 6 not in a.queues.serving


def test_a_receiver_with_a_stale_view_of_its_assignment_takes_no_lease(
    start_node, store: AssignmentStore, paths: ZkPaths
) -> None:
    store.save("b@h", [8])
    store.save("b@h", [7])  # the bucket 8 of the first write moved on
    b = start_node("b@h")
    b.wait_serving({7})
    stale_version = b.client.exists(paths.assignments("b@h")).version - 1
    b.work._take(8, stale_version, epoch=0)  # the view before the last write
    assert b.client.exists(paths.lease(8)) is None
    assert 8 not in b.work.held


def test_a_lease_deleted_by_a_foreign_writer_stops_its_queue_and_is_taken_again(
    start_node, store: AssignmentStore, migrated: Engine, paths: ZkPaths, zookeeper: ServerProcess
) -> None:
    store.save("a@h", [9])
    a = start_node("a@h")
    a.wait_serving({9})
    old_token = a.lease_token(9)
    assert old_token is not None
    seen: list[frozenset[int]] = []
    original = a.queues.serve

    def recording(buckets: frozenset[int]) -> int:
        seen.append(buckets)
        return int(original(buckets))

    a.work._serve = recording
    store.client.delete(paths.lease(9))
    wait_for(
        lambda: (a.lease_token(9) or 0) > old_token and a.queues.serving == {9},
        "a serving bucket 9 under a new lease",
        10,
    )
    assert frozenset() in seen  # the queue stopped in between
    assert not commit_allowed(migrated, 9, "a@h", old_token)


def test_a_persistent_znode_in_a_leases_place_is_removed_and_the_lease_taken(
    start_node, store: AssignmentStore, paths: ZkPaths
) -> None:
    store.client.ensure_path(paths.leases)
    store.client.create(paths.lease(10), b"not a lease")
    store.save("a@h", [10])
    a = start_node("a@h")
    a.wait_serving({10})
    stat = store.client.exists(paths.lease(10))
    assert stat is not None
    assert stat.ephemeralOwner == a.client.client_id[0]


def test_two_nodes_racing_for_one_bucket_never_both_serve_it(
    start_node, store: AssignmentStore
) -> None:
    # both were told they own bucket 11 (a split view): the lease lets only one serve it
    store.save("a@h", [11])
    store.save("b@h", [11])
    a = start_node("a@h")
    b = start_node("b@h")
    both: list[bool] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            both.append(11 in a.queues.serving and 11 in b.queues.serving)
            time.sleep(0.005)

    observer = threading.Thread(target=watch)
    observer.start()
    try:
        wait_for(lambda: 11 in a.queues.serving or 11 in b.queues.serving, "bucket 11 served", 10)
        a.wait_passes()  # both tried to take it meanwhile, and went on
        b.wait_passes()
    finally:
        stop.set()
        observer.join()
    assert not any(both)


def set_fence(engine: Engine, bucket: int, key: str, token: int) -> None:
    """A foreign writer's UPDATE of a bucket's fence row."""
    with session_factory(engine).begin() as session:
        session.execute(
            update(BucketLease)
            .where(BucketLease.bucket_id == bucket)
            .values(node_key=key, token=token)
        )


def serving_alone(start_node, store: AssignmentStore, bucket: int) -> tuple[Node, int]:
    """Node a@h serving ``bucket`` alone, and its lease token."""
    store.save("a@h", [bucket])
    a: Node = start_node("a@h")
    a.wait_serving({bucket})
    token = a.lease_token(bucket)
    assert token is not None
    return a, token


def test_a_fence_changed_by_a_foreign_writer_is_written_again_by_the_lease_holder(
    start_node, store: AssignmentStore, migrated: Engine
) -> None:
    a, token = serving_alone(start_node, store, 11)
    # When someone else points the fence at another node with a smaller token
    set_fence(migrated, 11, "intruder@h", token - 1)
    assert not commit_allowed(migrated, 11, "a@h", token)
    # Then the lease holder writes its fence again within a re-read, and keeps serving
    wait_for(
        lambda: fence_of(migrated, 11) == ("a@h", token), "a's fence written again", REREAD + 5
    )
    assert commit_allowed(migrated, 11, "a@h", token)
    assert a.queues.serving == {11}


def test_a_fence_a_foreign_writer_raised_past_the_lease_stops_the_bucket(
    start_node, store: AssignmentStore, migrated: Engine
) -> None:
    a, token = serving_alone(start_node, store, 12)
    # When someone else writes a larger token than the lease's
    set_fence(migrated, 12, "intruder@h", token + 10**9)
    # Then the holder stops serving the bucket (its tasks could not commit) and leaves the
    # fence alone: no commit by anyone but the intruder's token can land
    a.wait_serving(set(), timeout=REREAD + 5)
    assert fence_of(migrated, 12) == ("intruder@h", token + 10**9)
    assert not commit_allowed(migrated, 12, "a@h", token)


def test_a_lease_of_this_session_the_node_does_not_know_is_deleted_after_an_error(
    start_node, store: AssignmentStore, paths: ZkPaths
) -> None:
    a, _ = serving_alone(start_node, store, 13)
    # Given a lease of this session for a bucket that is not assigned here (a take whose
    # reply was lost to a ZooKeeper error before the bucket moved on)
    a.client.create(paths.lease(14), b"{}", ephemeral=True)
    # When the loop next runs after an interrupted pass
    a.work._due.add(Recheck.STRAYS)
    a.work._wake.set()
    # Then the stray lease is gone, so the bucket's owner can take it
    wait_for(lambda: a.client.exists(paths.lease(14)) is None, "the stray lease deleted", 10)
    assert a.queues.serving == {13}

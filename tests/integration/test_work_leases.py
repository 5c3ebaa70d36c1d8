"""Bucket leases and handoff (allot.work.leases) on a real ZooKeeper and both databases.

Each node is a real :class:`BucketWork` with its own ZooKeeper session; only the worker's
queue switch is a recorder (what a Celery consumer would consume), so each step of a handoff
can be held and checked. The tests of messages given back to a taken bucket's queue use a real
redis-server and kombu (the helpers of test_redelivery.py).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from kazoo.client import KazooClient
from redis import Redis
from sqlalchemy import Connection, Engine, event, insert, select, update

from allot.errors import Fenced
from allot.testing.polling import wait_for
from allot.testing.servers import ServerProcess, free_port
from allot.testing.zookeeper import CountingClient, Request, expire_session
from allot.work import leases
from allot.work.fence import hold_fence, read_fence
from allot.work.leases import SWEEP_LEASES, BucketWork, Recheck, ZkSession
from allot.work.queues import bucket_queue
from allot.work.redelivery import bucket_restorer
from allot.zk.paths import ZkPaths
from allot.zk.store import AssignmentStore
from models.engine import session_factory
from models.schema import BucketLease
from tests.e2e.proxy import Proxy
from tests.integration.test_redelivery import send, take_and_kill, unacked


class Queues:
    """What a worker would consume: the last set handed to ``serve``; ``busy`` is set by the
    test (the buckets with a message running). The worker applies each set at once, unless the
    test sets ``lagging``: then only when the test calls :meth:`apply`. ``on_serve`` and
    ``on_busy_read`` (once) let a test act at those moments of the loop."""

    def __init__(self) -> None:
        self.serving: frozenset[int] = frozenset()
        self.generation = 0
        self.busy: set[int] = set()
        self.history: list[frozenset[int]] = []
        self.lagging = False
        self.applied_generation = 0
        self.on_serve: Callable[[frozenset[int]], object] | None = None
        self.on_busy_read: Callable[[], object] | None = None

    def serve(self, buckets: frozenset[int]) -> int:
        if self.on_serve is not None:
            self.on_serve(buckets)
        if buckets != self.serving:
            self.serving = buckets
            self.generation += 1
            self.history.append(buckets)
        if not self.lagging:
            self.apply()
        return self.generation

    def apply(self) -> None:
        """The worker applies the last set handed to ``serve``."""
        self.applied_generation = self.generation

    def applied(self) -> int:
        return self.applied_generation

    def read_busy(self) -> set[int]:
        found = set(self.busy)
        hook, self.on_busy_read = self.on_busy_read, None
        if hook is not None:
            hook()
        return found


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

    def start(
        key: str,
        handoff_timeout: float = 10.0,
        restore: Callable[[frozenset[int]], int] | None = None,
        queues: Queues | None = None,
        client: KazooClient | None = None,
        sweep_leases: int = SWEEP_LEASES,
    ) -> Node:
        if client is None:
            client = KazooClient(hosts=zookeeper.address, timeout=4)
        client.start(timeout=10)
        queues = queues or Queues()
        work = BucketWork(
            client,
            paths,
            key,
            session_factory(migrated),
            serve=queues.serve,
            applied=queues.applied,
            busy=queues.read_busy,
            handoff_timeout=handoff_timeout,
            restore=restore,
            reread_seconds=REREAD,
            sweep_leases=sweep_leases,
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
    b.work._take([8], stale_version, epoch=0)  # the view before the last write
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
    # reply was lost to a ZooKeeper error before the bucket moved on: the bucket is in doubt)
    a.client.create(paths.lease(14), b"{}", ephemeral=True)
    a.work._in_doubt.add(14)
    # When the loop next runs after an interrupted pass
    a.work._due.add(Recheck.STRAYS)
    a.work._wake.set()
    # Then the stray lease is gone, so the bucket's owner can take it
    wait_for(lambda: a.client.exists(paths.lease(14)) is None, "the stray lease deleted", 10)
    assert a.queues.serving == {13}


def test_a_message_taken_between_the_drain_checks_keeps_the_lease_until_it_finished(
    start_node, store: AssignmentStore, migrated: Engine
) -> None:
    # Given a@h serving bucket 15, with a worker that applies a queue switch only later
    a, token = serving_alone(start_node, store, 15)
    b = start_node("b@h")
    a.queues.lagging = True
    delivered = threading.Event()

    def worker_takes_a_message_then_applies_the_drop() -> None:
        # between the loop's two reads: a message of bucket 15 the worker had fetched before
        # the drop starts running, then the worker applies the drop
        a.queues.busy = {15}
        a.queues.apply()
        delivered.set()

    a.queues.on_busy_read = worker_takes_a_message_then_applies_the_drop
    # When bucket 15 moves to b@h
    store.save("a@h", [])
    store.save("b@h", [15])
    wait_for(delivered.is_set, "a message delivered while the drop is applied", 10)
    a.wait_passes()
    b.wait_passes()
    # Then a@h keeps the lease while the message runs, and b@h does not serve the bucket
    assert a.lease_token(15) == token
    assert 15 not in b.queues.serving
    assert commit_allowed(migrated, 15, "a@h", token)
    # and hands it over once the message finished
    a.queues.busy = set()
    b.wait_serving({15})


BROKER_DB = 10
"""The redis database of the tests that give messages back (test_redelivery.py uses 9)."""


@pytest.fixture
def broker(redis_server: ServerProcess) -> Iterator[tuple[str, Redis]]:
    url = f"redis://{redis_server.host}:{redis_server.port}/{BROKER_DB}"
    client = Redis.from_url(url, socket_timeout=10)
    client.flushdb()
    yield url, client
    client.close()


def test_a_taken_buckets_unacknowledged_messages_are_back_before_its_queue_is_consumed(
    start_node, store: AssignmentStore, migrated: Engine, broker: tuple[str, Redis]
) -> None:
    # Given a message of bucket 20 taken by a consumer killed before it acknowledged it (kombu
    # would give it back only after its visibility timeout, an hour here)
    url, redis = broker
    cluster = f"t{uuid.uuid4().hex[:8]}"
    queue = bucket_queue(cluster, 20)
    (sent,) = send(url, queue, 1)
    take_and_kill(url, queue, 1)
    assert unacked(redis) == {sent.task_id: queue}
    assert redis.llen(queue) == 0

    # When a@h takes bucket 20 (recording the fence when it gives messages back, and the
    # queue when it starts consuming)
    restorer = bucket_restorer(url, cluster)
    fence_at_restore: list[tuple[str, int] | None] = []
    queue_at_serve: list[tuple[int, dict[str, str]]] = []

    def restore(buckets: frozenset[int]) -> int:
        fence_at_restore.append(fence_of(migrated, 20))
        return restorer(buckets)

    def on_serve(buckets: frozenset[int]) -> None:
        if 20 in buckets and not queue_at_serve:
            queue_at_serve.append((redis.llen(queue), unacked(redis)))

    queues = Queues()
    queues.on_serve = on_serve
    store.save("a@h", [20])
    a = start_node("a@h", restore=restore, queues=queues)
    a.wait_serving({20})

    # Then the message was given back after a@h wrote its fence and before it consumed the
    # queue: waiting in the queue, no longer unacknowledged
    assert fence_at_restore == [("a@h", a.lease_token(20))]
    assert queue_at_serve == [(1, {})]


def test_a_redis_outage_does_not_keep_a_taken_bucket_from_being_served(
    start_node, store: AssignmentStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a broker nobody listens on
    dead = bucket_restorer(f"redis://127.0.0.1:{free_port()}/0", "t")
    # When a@h takes bucket 21, Then it serves it, and says the messages were not given back
    store.save("a@h", [21])
    a = start_node("a@h", restore=dead)
    a.wait_serving({21})
    assert any("cannot give back" in record.getMessage() for record in caplog.records)


def test_a_bucket_fenced_again_under_its_own_lease_gives_nothing_back(
    start_node, store: AssignmentStore
) -> None:
    calls: list[frozenset[int]] = []

    def restore(buckets: frozenset[int]) -> int:
        calls.append(buckets)
        return 0

    store.save("a@h", [22, 23])
    a = start_node("a@h", restore=restore)
    a.wait_serving({22, 23})
    assert calls == [frozenset({22, 23})]
    # When bucket 22 moves away and comes back before its lease was released (a message of it
    # still runs here: giving it back would deliver this node's own message twice)
    a.queues.busy = {22}
    store.save("a@h", [23])
    a.wait_serving({23})
    store.save("a@h", [22, 23])
    a.wait_serving({22, 23})
    # Then nothing was given back again
    assert calls == [frozenset({22, 23})]


def lease_paths(requests: list[Request], paths: ZkPaths, *, watched: bool = False) -> set[str]:
    """The znodes under ``{root}/leases`` (the directory included) that ``requests`` name, or
    only those they set a watch on."""
    return {
        path
        for request in requests
        if request.watch or not watched
        for path in request.paths
        if path == paths.leases or path.startswith(paths.leases + "/")
    }


def test_another_nodes_lease_changes_cost_a_node_no_zookeeper_request(
    start_node, store: AssignmentStore, paths: ZkPaths, zookeeper: ServerProcess
) -> None:
    # Given a@h serving buckets 1 and 2 (its client records every request) and b@h serving
    # thirty others
    others = set(range(3, 33))
    store.save("a@h", [1, 2])
    store.save("b@h", sorted(others))
    recorded = CountingClient(hosts=zookeeper.address, timeout=4)
    a = start_node("a@h", client=recorded)
    b = start_node("b@h")
    a.wait_serving({1, 2})
    b.wait_serving(others)
    a.wait_passes()
    start = len(recorded.requests)

    # When b@h's thirty buckets move to c@h: thirty leases deleted and thirty taken
    c = start_node("c@h")
    store.save("b@h", [])
    store.save("c@h", sorted(others))
    c.wait_serving(others)
    b.wait_serving(set())
    a.wait_passes()

    # Then a@h asked ZooKeeper about its own two leases only (its periodic re-read), listed
    # no lease directory, and watches its own two leases, nothing else under {root}/leases
    seen = recorded.since(start)
    own = {paths.lease(1), paths.lease(2)}
    assert lease_paths(seen, paths) <= own
    assert not [request for request in seen if request.kind.startswith("GetChildren")]
    assert lease_paths(recorded.requests, paths, watched=True) == own
    assert a.queues.serving == {1, 2}


def test_a_reconnect_reads_only_the_leases_the_node_holds_or_waits_for(
    start_node, store: AssignmentStore, paths: ZkPaths, zookeeper: ServerProcess
) -> None:
    # Given b@h holding forty leases, and a@h (through a proxy that can cut its connection)
    # holding buckets 1 and 2 and waiting for bucket 3, which b@h holds too
    others = set(range(3, 43))
    store.save("b@h", sorted(others))
    b = start_node("b@h")
    b.wait_serving(others)
    store.save("a@h", [1, 2, 3])
    proxy = Proxy((zookeeper.host, zookeeper.port))
    try:
        recorded = CountingClient(hosts=f"127.0.0.1:{proxy.port}", timeout=4)
        a = start_node("a@h", client=recorded)
        a.wait_serving({1, 2})
        a.wait_passes()
        states: list[str] = []

        def follow(state: str) -> bool:
            states.append(state)
            return False

        recorded.add_listener(follow)

        # When a@h's connection drops and comes back within the session
        start = len(recorded.requests)
        proxy.reset()
        wait_for(lambda: "SUSPENDED" in states, "a@h's connection dropped", 10)
        wait_for(lambda: states[-1:] == ["CONNECTED"], "a@h reconnected", 10)
        a.wait_passes(3)
    finally:
        proxy.close()

    # Then the same session goes on, and after the reconnect a@h read again (and watches
    # again) the leases of the buckets it holds or waits for, none of b@h's forty others
    seen = recorded.since(start)
    mine = {paths.lease(1), paths.lease(2), paths.lease(3)}
    assert "LOST" not in states
    assert a.work.session is ZkSession.CONNECTED
    assert lease_paths(seen, paths) == mine
    assert lease_paths(seen, paths, watched=True) == mine
    assert not [request for request in seen if request.kind.startswith("GetChildren")]
    assert a.queues.serving == {1, 2}
    assert 3 not in a.work.held


def test_the_re_reads_sweep_the_held_leases_a_slice_at_a_time_and_find_a_lost_watch(
    start_node, store: AssignmentStore, paths: ZkPaths, zookeeper: ServerProcess
) -> None:
    # Given a@h holding twelve leases, reading at most five again per re-read (one a second)
    held = set(range(1, 13))
    store.save("a@h", sorted(held))
    recorded = CountingClient(hosts=zookeeper.address, timeout=4)
    a = start_node("a@h", client=recorded, sweep_leases=5)
    a.wait_serving(held)
    a.wait_passes()

    # When nothing changes for 2.5 s (two or three re-reads, at least a second apart)
    start = len(recorded.requests)
    time.sleep(2.5)

    # Then a@h read no more than three slices of its leases, not all twelve at every re-read
    reads = [
        request
        for request in recorded.since(start)
        if request.kind == "Exists" and lease_paths([request], paths)
    ]
    assert 0 < len(reads) <= 15

    # When the watch on bucket 7's lease is lost without a reconnect (kazoo forgets it) and
    # another session replaces the lease
    recorded._data_watchers.pop(paths.lease(7), None)
    store.client.delete(paths.lease(7))
    store.client.create(paths.lease(7), b"{}", ephemeral=True)

    # Then the sweep finds it within ceil(12 / 5) = 3 re-reads, and the queue stops
    wait_for(lambda: 7 not in a.queues.serving, "a@h to stop serving bucket 7", 3 * REREAD + 3)
    assert 7 not in a.work.held
    assert a.queues.serving == held - {7}


def test_a_node_given_many_buckets_fences_them_a_batch_per_sql_transaction(
    start_node, store: AssignmentStore, migrated: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a node assigned all 100 buckets, fencing 40 per transaction (200 in a worker),
    # counting its SQL transactions that write a fence
    monkeypatch.setattr(leases, "FENCE_BATCH", 40)
    buckets = set(range(1, 101))
    store.save("a@h", sorted(buckets))
    writes: list[int] = []
    numbers = itertools.count()

    def begin(connection: Connection) -> None:
        connection.info["transaction"] = next(numbers)

    def count(connection: Connection, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith(("UPDATE BUCKET_LEASE", "INSERT INTO BUCKET")):
            writes.append(connection.info["transaction"])

    event.listen(migrated, "begin", begin)
    event.listen(migrated, "before_cursor_execute", count)
    try:
        a = start_node("a@h")
        a.wait_serving(buckets, timeout=60)
    finally:
        event.remove(migrated, "before_cursor_execute", count)
        event.remove(migrated, "begin", begin)

    # Then every bucket is fenced under its own lease, in ceil(100 / 40) = 3 transactions
    assert {
        bucket for bucket in buckets if fence_of(migrated, bucket) != ("a@h", a.lease_token(bucket))
    } == set()
    assert len(set(writes)) == 3


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_fence_row_held_by_a_stuck_commit_holds_back_only_its_own_bucket(
    start_node, store: AssignmentStore, migrated: Engine
) -> None:
    # Given bucket 3's fence row held by a commit that does not finish
    with migrated.begin() as connection:
        connection.execute(
            insert(BucketLease).values(bucket_id=3, node_key="gone@h", token=1, generation=0)
        )
    stuck = migrated.connect()
    transaction = stuck.begin()
    stuck.execute(select(BucketLease).where(BucketLease.bucket_id == 3).with_for_update())
    try:
        # When a node is assigned buckets 1 to 5
        store.save("a@h", [1, 2, 3, 4, 5])
        a = start_node("a@h")

        # Then it serves the four others meanwhile, and bucket 3 once the commit ends
        a.wait_serving({1, 2, 4, 5}, timeout=20)
    finally:
        transaction.rollback()
        stuck.close()
    a.wait_serving({1, 2, 3, 4, 5}, timeout=20)
    assert fence_of(migrated, 3) == ("a@h", a.lease_token(3))


def test_a_node_cut_from_the_broker_releases_its_idle_buckets_without_a_confirmation(
    start_node, store: AssignmentStore, paths: ZkPaths
) -> None:
    # Given a@h serving buckets 1, 2 and 3, a message of bucket 2 taken, and a consumer that
    # no longer applies a queue switch (it lost the broker: it cannot confirm a drop)
    store.save("a@h", [1, 2, 3])
    a = start_node("a@h", handoff_timeout=300)
    a.wait_serving({1, 2, 3})
    a.queues.lagging = True
    a.queues.busy = {2}

    # When the node steps aside: cut from the broker, its assignment entry deleted
    a.work.cut_from_broker(True)
    store.delete("a@h")

    # Then the leases of the idle buckets go at once, long before the handoff timeout
    wait_for(lambda: set(a.work.held) == {2}, "a@h to release buckets 1 and 3", 10)
    assert store.client.exists(paths.lease(1)) is None
    assert store.client.exists(paths.lease(3)) is None

    # and the busy one only once its message ended
    a.wait_passes(3)
    assert set(a.work.held) == {2}
    a.queues.busy = set()
    wait_for(lambda: not a.work.held, "a@h to release bucket 2", 10)
    assert store.client.exists(paths.lease(2)) is None

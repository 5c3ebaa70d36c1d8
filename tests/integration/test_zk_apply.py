"""The fenced apply against a real ZooKeeper: races, stale lock holders, steps, removal."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from kazoo.client import KazooClient

from allot.errors import InvalidPlan, LockLost, StaleAssignment
from allot.testing.cluster import round_robin
from allot.testing.servers import ServerProcess
from allot.testing.zookeeper import expire_session
from allot.zk import AllAssignments, AssignmentLock, AssignmentStore, ZkPaths
from allot.zk.apply import commit_ops
from allot.zk.batch import diff, first_failure, plan_steps
from allot.zk.lock import LockGuard

BUCKETS = 64


def spread(nodes: list[str], buckets: int = BUCKETS) -> dict[str, list[int]]:
    """The balanced initial assignment of these tests: buckets dealt round-robin."""
    return round_robin(nodes, buckets)


@pytest.fixture
def clients(zk_connect: Callable[[], KazooClient]) -> list[KazooClient]:
    return [zk_connect() for _ in range(2)]


def assert_tree_is(store: AssignmentStore, expected: dict[str, list[int]]) -> AllAssignments:
    snapshot = store.read_all()
    assert snapshot.buckets_by_node() == expected
    assert not snapshot.corrupt
    return snapshot


@pytest.mark.parametrize("round_", range(5))
def test_two_appliers_race_on_one_version_exactly_one_wins(
    clients: list[KazooClient], zk_root: str, round_: int
) -> None:
    # Given two appliers that read the same snapshot at epoch 1
    paths = ZkPaths(zk_root)
    first, second = (AssignmentStore(c, paths) for c in clients)
    first.apply(first.read_all(), spread(["a", "b"]), plan_id="base")
    snapshots = [first.read_all(), second.read_all()]
    plans = [spread(["a", "b", "c"]), spread(["a", "b", "d", "e"])]
    outcomes: list[object] = [None, None]
    barrier = threading.Barrier(2)

    def run(index: int) -> None:
        store = (first, second)[index]
        barrier.wait()
        try:
            outcomes[index] = store.apply(snapshots[index], plans[index], plan_id=f"p{index}")
        except StaleAssignment as exc:
            outcomes[index] = exc

    # When both apply at once
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # Then exactly one wins, the other gets StaleAssignment, and the tree is the winner's
    stale = [isinstance(o, StaleAssignment) for o in outcomes]
    assert sorted(stale) == [False, True]
    winner = stale.index(False)
    final = assert_tree_is(first, {**plans[winner]})
    assert (final.version.epoch, final.version.plan_id) == (2, f"p{winner}")


def test_a_stale_snapshot_cannot_overwrite_a_newer_assignment(
    clients: list[KazooClient], zk_root: str
) -> None:
    store = AssignmentStore(clients[0], ZkPaths(zk_root))
    store.apply(store.read_all(), spread(["a", "b"]), plan_id="p1")
    old = store.read_all()
    store.apply(old, spread(["a", "b", "c"]), plan_id="p2")
    with pytest.raises(StaleAssignment, match="another plan was applied first"):
        store.apply(old, spread(["a"]), plan_id="p3", remove=["b"])
    assert_tree_is(store, spread(["a", "b", "c"]))


def test_the_same_plan_applied_twice_is_recognised(
    clients: list[KazooClient], zk_root: str
) -> None:
    store = AssignmentStore(clients[0], ZkPaths(zk_root))
    snapshot = store.read_all()
    first = store.apply(snapshot, spread(["a", "b"]), plan_id="once")
    again = store.apply(snapshot, spread(["a", "b"]), plan_id="once")  # a redelivered task
    assert (first.epoch, first.already_applied) == (1, False)
    assert (again.epoch, again.already_applied, again.written) == (1, True, ())


def test_a_plan_that_changes_nothing_writes_nothing(
    clients: list[KazooClient], zk_root: str
) -> None:
    store = AssignmentStore(clients[0], ZkPaths(zk_root))
    store.apply(store.read_all(), spread(["a", "b"]), plan_id="p1")
    snapshot = store.read_all()
    result = store.apply(snapshot, spread(["a", "b"]), plan_id="p2")
    assert (result.epoch, result.transactions) == (1, 0)
    assert store.read_version().zversion == snapshot.version.zversion


def test_removed_nodes_lose_their_entries_and_double_owners_are_refused(
    clients: list[KazooClient], zk_root: str
) -> None:
    paths = ZkPaths(zk_root)
    store = AssignmentStore(clients[0], paths)
    store.apply(store.read_all(), spread(["a", "b", "c"]), plan_id="p1")
    clients[1].create(f"{paths.node_entry('c')}/left-by-hand", b"")
    snapshot = store.read_all()
    with pytest.raises(InvalidPlan, match="would be held by both"):
        store.apply(snapshot, spread(["a", "b"]), plan_id="p2")  # c still holds its buckets
    result = store.apply(snapshot, spread(["a", "b"]), plan_id="p2", remove=["c"])
    assert result.removed == ("c",)
    assert clients[1].exists(paths.node_entry("c")) is None
    assert_tree_is(store, spread(["a", "b"]))


def holding_the_lock(
    holder: KazooClient, zk_root: str
) -> tuple[ZkPaths, AssignmentStore, AssignmentLock, LockGuard, AllAssignments]:
    """A store with plan p1 (nodes a and b) applied, the lock held by ``holder``, and the
    snapshot a cycle would plan from."""
    paths = ZkPaths(zk_root)
    store = AssignmentStore(holder, paths)
    store.apply(store.read_all(), spread(["a", "b"]), plan_id="p1")
    lock = AssignmentLock(holder, paths, "holder")
    guard = lock.acquire()
    assert guard is not None
    return paths, store, lock, guard, store.read_all()


def test_a_lock_holder_whose_session_expired_cannot_write(
    zookeeper: ServerProcess, clients: list[KazooClient], zk_root: str
) -> None:
    # Given a cycle holding the lock, with a snapshot read
    paths, store, lock, guard, snapshot = holding_the_lock(clients[0], zk_root)
    holder, other = clients
    # When its session expires mid-cycle (and another process takes the lock)
    expire_session(holder, zookeeper.address)
    assert AssignmentLock(other, paths, "other").acquire(timeout=5) is not None
    # Then the guard stops the write, and nothing changed
    with pytest.raises(LockLost, match="LOST"):
        store.apply(snapshot, spread(["a"]), plan_id="p2", remove=["b"], guard=guard)
    assert_tree_is(AssignmentStore(other, paths), spread(["a", "b"]))
    lock.release()


def test_the_transaction_itself_checks_the_lock_znode(
    clients: list[KazooClient], zk_root: str
) -> None:
    # Given a holder whose lock znode vanished while its local guard still looks fine
    # (the race between guard.check() and the commit)
    _, store, lock, guard, snapshot = holding_the_lock(clients[0], zk_root)
    other = clients[1]
    other.delete(guard.lock_node)
    assert guard.valid
    # When it applies, then ZooKeeper rolls the transaction back: nothing is written
    with pytest.raises(LockLost, match="lock znode is gone"):
        store.apply(snapshot, spread(["a"]), plan_id="p2", remove=["b"], guard=guard)
    assert_tree_is(store, spread(["a", "b"]))
    assert store.read_version().plan_id == "p1"
    lock.release()


def test_a_plan_over_the_request_limit_is_applied_in_fenced_steps(
    clients: list[KazooClient], zk_root: str
) -> None:
    paths = ZkPaths(zk_root)
    store = AssignmentStore(clients[0], paths)
    nodes = [f"node-{i:02d}@h" for i in range(12)]
    store.apply(store.read_all(), spread(nodes[:6]), plan_id="p1")
    snapshot = store.read_all()
    result = store.apply(snapshot, spread(nodes), plan_id="p2", max_request_bytes=1_500)
    assert result.transactions > 2
    assert max(result.request_bytes) <= 1_500
    final = assert_tree_is(store, spread(nodes))
    assert (final.version.epoch, final.version.plan_id, final.version.pending) == (2, "p2", None)


def test_an_interrupted_split_leaves_a_safe_tree_that_the_next_plan_repairs(
    clients: list[KazooClient], zk_root: str
) -> None:
    # Given a plan cut into steps of which only the first was committed (the applier died)
    paths = ZkPaths(zk_root)
    client = clients[0]
    store = AssignmentStore(client, paths)
    nodes = [f"node-{i:02d}@h" for i in range(12)]
    store.apply(store.read_all(), spread(nodes[:6]), plan_id="p1")
    snapshot = store.read_all()
    changes = diff(snapshot, spread(nodes))
    steps = plan_steps(
        client.default_acl, client.chroot, paths, snapshot, changes,
        plan_id="dies", now=1, removed_children={}, max_request_bytes=1_500,
    )  # fmt: skip
    assert len(steps) > 2
    results, _ = commit_ops(client, steps[0], None, 1_500, "first step")
    assert first_failure(results) is None
    # Then readers see no bucket held twice, the old epoch, and a pending marker
    middle = store.read_all()
    owners = [b for buckets in middle.buckets_by_node().values() for b in buckets]
    assert len(owners) == len(set(owners))
    assert middle.version.epoch == 1
    assert middle.version.pending is not None
    # And the next plan, read from that tree, applies and publishes epoch 2
    result = store.apply(middle, spread(nodes), plan_id="next")
    assert result.epoch == 2
    final = assert_tree_is(store, spread(nodes))
    assert final.version.pending is None


def test_touch_refreshes_times_fenced_on_the_version(
    clients: list[KazooClient], zk_root: str
) -> None:
    paths = ZkPaths(zk_root)
    times = iter([1_000, 2_000, 3_000, 4_000])
    store = AssignmentStore(clients[0], paths, clock=lambda: next(times))
    store.apply(store.read_all(), spread(["a", "b"]), plan_id="p1")
    snapshot = store.read_all()
    assert store.touch(snapshot, ["a", "b", "unknown"]) == 2
    assert {n.last_update_ms for n in store.read_all().nodes.values()} == {2_000}
    store.apply(snapshot, spread(["a", "b", "c"]), plan_id="p2")
    with pytest.raises(StaleAssignment):
        store.touch(snapshot, ["a"])

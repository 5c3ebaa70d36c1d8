"""The assignment cycle against real ZooKeeper and real SQL (SQLite and PostgreSQL).

Nodes are real ZooKeeper sessions with membership znodes; the cycle runs in-process so faults
can be injected at exact points (a crash between steps, a session expiring mid-cycle).
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from allot.cycle import AssignmentCycle, CycleHooks, plans
from allot.testing.zookeeper import expire_session
from allot.zk.client import connect
from allot.zk.codec import MemberInfo, encode_buckets
from allot.zk.lock import AssignmentLock
from allot.zk.paths import ZkPaths
from allot.zk.registration import NodeRegistration
from allot.zk.store import AssignmentStore
from models import Node, Plan
from models.engine import session_factory
from models.schema import MirrorState
from tests.cli import allot
from tests.integration.conftest import GRACE, Cluster, sizes


def test_first_assignment_is_34_33_33_in_zookeeper_and_sql(cluster: Cluster) -> None:
    for key in ("a@h", "b@h", "c@h"):
        cluster.join(key)

    report = cluster.cycle().run("beat")

    assert (report.outcome, report.epoch, report.moves) == ("applied", 1, 100)
    assert report.joined == ["a@h", "b@h", "c@h"]
    assert sizes(cluster.assert_consistent()) == {"a@h": 34, "b@h": 33, "c@h": 33}
    again = cluster.cycle().run("beat")
    assert (again.outcome, again.epoch, again.moves) == ("unchanged", 1, 0)


def test_a_fourth_node_gets_exactly_the_minimum_moves(cluster: Cluster) -> None:
    for key in ("a@h", "b@h", "c@h"):
        cluster.join(key)
    cluster.cycle().run()
    before = cluster.assert_consistent()

    cluster.join("d@h")
    report = cluster.cycle().run("membership")

    after = cluster.assert_consistent()
    moved = sum(len(set(after.get(k, [])) - set(before.get(k, []))) for k in after)
    assert report.moves == report.min_moves == moved == 25
    assert sizes(after) == {"a@h": 25, "b@h": 25, "c@h": 25, "d@h": 25}
    assert report.moves_by_node["d@h"] == {"in": 25, "out": 0}


def test_a_dead_node_keeps_its_buckets_until_the_grace_period_ends(cluster: Cluster) -> None:
    for key in ("a@h", "b@h", "c@h"):
        cluster.join(key)
    cluster.cycle().run()
    before = cluster.assert_consistent()

    cluster.leave("c@h")
    during = cluster.cycle().run("membership")
    assert (during.outcome, during.suspect, during.departed) == ("unchanged", ["c@h"], ["c@h"])
    assert during.next_deadline == pytest.approx(GRACE)
    assert cluster.assert_consistent() == before

    cluster.clock.advance(GRACE - 1)
    assert cluster.cycle().run("beat").outcome == "unchanged"
    cluster.clock.advance(1)
    after_grace = cluster.cycle().run("grace")

    after = cluster.assert_consistent()
    assert after_grace.outcome == "applied"
    assert after_grace.offline == ["c@h"]
    assert after_grace.moves == len(before["c@h"]) == 33
    # the survivors kept everything they had and took exactly the dead node's buckets
    assert set(after["a@h"]) >= set(before["a@h"])
    assert set(after["b@h"]) >= set(before["b@h"])
    gained = set(after["a@h"]) - set(before["a@h"]) | set(after["b@h"]) - set(before["b@h"])
    assert gained == set(before["c@h"])
    assert sizes(after) == {"a@h": 50, "b@h": 50}


def test_a_node_back_within_the_grace_period_keeps_its_buckets(cluster: Cluster) -> None:
    for key in ("a@h", "b@h", "c@h"):
        cluster.join(key)
    cluster.cycle().run()
    before = cluster.assert_consistent()

    cluster.leave("b@h")
    assert cluster.cycle().run("membership").suspect == ["b@h"]
    cluster.clock.advance(GRACE / 2)
    cluster.join("b@h")
    report = cluster.cycle().run("membership")
    cluster.clock.advance(GRACE)

    assert (report.outcome, report.moves, report.suspect) == ("unchanged", 0, [])
    assert cluster.cycle().run("beat").moves == 0
    assert cluster.assert_consistent() == before


def test_a_dry_run_plan_is_refused_as_stale_after_a_membership_change(cluster: Cluster) -> None:
    for key in ("a@h", "b@h"):
        cluster.join(key)
    cluster.cycle().run()
    cluster.join("c@h")
    dry = cluster.cycle().run("manual", dry_run=True)
    assert (dry.outcome, dry.moves) == ("generated", 33)
    assert dry.plan_id is not None
    cluster.join("d@h")

    refused = cluster.cycle().apply_stored(dry.plan_id)

    assert refused.outcome == "rejected"
    assert "stale" in (refused.reason or "")
    with cluster.engine.connect() as connection:
        status = connection.execute(select(Plan.status).where(Plan.plan_id == dry.plan_id))
        assert status.scalar_one() == "rejected"


def test_a_fresh_dry_run_plan_applies_exactly_as_shown(cluster: Cluster) -> None:
    for key in ("a@h", "b@h"):
        cluster.join(key)
    cluster.cycle().run()
    cluster.join("c@h")
    dry = cluster.cycle().run("manual", dry_run=True, max_moves=5)
    assert dry.plan_id is not None

    applied = cluster.cycle().apply_stored(dry.plan_id)

    assert (applied.outcome, applied.moves, applied.epoch) == ("applied", 5, 2)
    assert sizes(cluster.assert_consistent())["c@h"] == 5
    again = cluster.cycle().apply_stored(dry.plan_id)
    assert again.outcome == "rejected"


class Crash(Exception):
    pass


def crash(_plan_id: str) -> None:
    raise Crash


def test_a_crash_between_zookeeper_and_sql_converges_on_the_next_cycle(cluster: Cluster) -> None:
    for key in ("a@h", "b@h"):
        cluster.join(key)
    with pytest.raises(Crash):
        cluster.cycle(CycleHooks(after_zookeeper=crash)).run()
    assert cluster.sql_assignment() == {}  # ZooKeeper has the plan, SQL does not yet

    report = cluster.cycle().run("beat")

    # the next cycle mirrors ZooKeeper and records the plan ZooKeeper names
    assert report.outcome == "unchanged"
    cluster.assert_consistent()
    with cluster.engine.connect() as connection:
        row = connection.execute(select(Plan.status, Plan.epoch, Plan.trigger)).one()
    assert tuple(row) == ("applied", 1, "catch-up")


def test_a_plan_is_recorded_in_sql_only_after_zookeeper_committed(cluster: Cluster) -> None:
    # Given a node, and a cycle that looks at SQL just before its ZooKeeper transaction
    cluster.join("a@h")
    recorded_before: list[int] = []

    def look(_plan_id: str) -> None:
        with session_factory(cluster.engine)() as session:
            recorded_before.append(len(plans.list_plans(session)))

    # When it applies
    report = cluster.cycle(CycleHooks(before_zookeeper=look)).run("beat")

    # Then nothing was in SQL before ZooKeeper (the failover's path is ZooKeeper alone), and
    # the plan is recorded applied, with its moves, in the mirror's transaction
    assert recorded_before == [0]
    assert (report.outcome, report.epoch) == ("applied", 1)
    with session_factory(cluster.engine)() as session:
        detail = plans.find_plan(session, report.plan_id or "")
    assert (detail.plan.status, detail.plan.epoch, len(detail.moves)) == ("applied", 1, 100)


def test_a_crash_before_the_zookeeper_transaction_leaves_nothing_to_settle(
    cluster: Cluster,
) -> None:
    cluster.join("a@h")
    with pytest.raises(Crash):
        cluster.cycle(CycleHooks(before_zookeeper=crash)).run()

    report = cluster.cycle().run("beat")

    assert (report.outcome, report.epoch, report.recovered) == ("applied", 1, [])
    with session_factory(cluster.engine)() as session:
        statuses = sorted(p.status for p in plans.list_plans(session))
    assert statuses == ["applied"]
    cluster.assert_consistent()


@pytest.mark.parametrize("landed", [False, True], ids=["before-zookeeper", "after-zookeeper"])
def test_a_stored_plan_left_applying_by_a_crash_is_settled_by_the_next_cycle(
    cluster: Cluster, landed: bool
) -> None:
    # Given a dry-run plan applied by hand, whose cycle crashes before or after ZooKeeper
    for key in ("a@h", "b@h"):
        cluster.join(key)
    cluster.cycle().run()
    cluster.join("c@h")
    dry = cluster.cycle().run("manual", dry_run=True)
    assert dry.plan_id is not None
    hooks = CycleHooks(after_zookeeper=crash) if landed else CycleHooks(before_zookeeper=crash)
    with pytest.raises(Crash):
        cluster.cycle(hooks).apply_stored(dry.plan_id)
    with session_factory(cluster.engine)() as session:
        assert plans.find_plan(session, dry.plan_id).plan.status == "applying"

    # When the next cycle runs
    report = cluster.cycle().run("beat")

    # Then its recovery finishes the plan when ZooKeeper has it, and fails it when not
    assert report.recovered == [dry.plan_id]
    with session_factory(cluster.engine)() as session:
        row = plans.find_plan(session, dry.plan_id).plan
    assert (row.status, row.epoch) == (("applied", 2) if landed else ("failed", None))
    assert sizes(cluster.assert_consistent()) == {"a@h": 34, "b@h": 33, "c@h": 33}


def test_a_cycle_skips_while_another_holds_the_lock(cluster: Cluster) -> None:
    cluster.join("a@h")
    other = AssignmentLock(cluster.client, ZkPaths(cluster.settings.zk_root))
    with other.holding() as guard:
        assert guard is not None
        report = cluster.cycle().run("beat")
    assert (report.outcome, report.reason) == ("skipped", "another cycle holds the lock")
    assert cluster.zk_assignment() == {}


def test_a_session_lost_mid_cycle_aborts_without_writing(cluster: Cluster) -> None:
    cluster.join("a@h")

    def lose_session(_plan_id: str) -> None:
        expire_session(cluster.client, cluster.settings.zk_hosts)

    report = cluster.cycle(CycleHooks(before_zookeeper=lose_session)).run("beat")

    # Then it aborts and writes nothing, to ZooKeeper or to SQL (not even its plan)
    assert report.outcome == "aborted"
    assert cluster.zk_assignment() == {}
    assert cluster.sql_assignment() == {}
    with session_factory(cluster.engine)() as session:
        assert plans.list_plans(session) == []
    # And the next holder applies its own
    following = cluster.cycle().run("beat")
    assert (following.outcome, following.recovered) == ("applied", [])
    cluster.assert_consistent()


def test_a_stalled_holder_never_overwrites_sql_with_an_older_assignment(cluster: Cluster) -> None:
    for key in ("a@h", "b@h"):
        cluster.join(key)
    cluster.cycle().run()
    other = connect(cluster.settings)
    newer: list[str] = []

    stalled: list[str] = []

    def stall(plan_id: str) -> None:
        # while this holder is stalled after its ZooKeeper write, its session expires and
        # another cycle applies a newer assignment, recording the stalled plan it was based on
        stalled.append(plan_id)
        expire_session(cluster.client, cluster.settings.zk_hosts)
        cluster.join("c@h")
        report = AssignmentCycle(
            other, session_factory(cluster.engine), cluster.settings, clock=cluster.clock
        ).run("membership")
        newer.append(report.outcome)

    try:
        cluster.leave("b@h")
        assert cluster.cycle().run("membership").suspect == ["b@h"]
        cluster.clock.advance(GRACE)
        cluster.cycle(CycleHooks(after_zookeeper=stall)).run("grace")
    finally:
        other.stop()
        other.close()

    assert newer == ["applied"]
    assert sizes(cluster.assert_consistent()) == {"a@h": 50, "c@h": 50}
    with session_factory(cluster.engine)() as session:
        missed = plans.find_plan(session, stalled[0]).plan
    assert (missed.status, missed.trigger, missed.epoch) == ("applied", "catch-up", 2)


def test_a_write_racing_the_cycle_makes_it_plan_again(cluster: Cluster) -> None:
    for key in ("a@h", "b@h"):
        cluster.join(key)
    cluster.cycle().run()
    store = AssignmentStore(cluster.client, ZkPaths(cluster.settings.zk_root))
    cluster.leave("b@h")
    assert cluster.cycle().run("membership").suspect == ["b@h"]
    cluster.clock.advance(GRACE)

    def b_leaves_cleanly(_plan_id: str) -> None:
        store.delete("b@h")  # what a worker's clean stop does, between read and write

    report = cluster.cycle(CycleHooks(before_zookeeper=b_leaves_cleanly)).run("grace")

    assert (report.outcome, report.rounds) == ("applied", 2)
    assert sizes(cluster.assert_consistent()) == {"a@h": 100}


def test_a_node_that_left_cleanly_is_recorded_offline(cluster: Cluster) -> None:
    for key in ("a@h", "b@h"):
        cluster.join(key)
    cluster.cycle().run()
    cluster.leave("b@h")
    AssignmentStore(cluster.client, ZkPaths(cluster.settings.zk_root)).delete("b@h")

    assert cluster.cycle().run("membership").outcome == "applied"

    with cluster.engine.connect() as connection:
        states = dict(connection.execute(select(Node.node_key, Node.state)).all())
    assert states == {"a@h": "live", "b@h": "offline"}
    assert sizes(cluster.assert_consistent()) == {"a@h": 100}


def test_status_survives_an_unreadable_last_cycle(cluster: Cluster) -> None:
    cluster.join("a@h")
    cluster.cycle().run()
    cluster.client.set(ZkPaths(cluster.settings.zk_root).last_cycle, b"not json")
    env = {
        "ALLOT_ZK_HOSTS": cluster.settings.zk_hosts,
        "ALLOT_ZK_ROOT": cluster.settings.zk_root,
        "ALLOT_DATABASE_URL": cluster.settings.database_url,
    }

    result = allot("status", env=env)

    assert result.returncode == 0, result.stderr
    assert "last cycle: unreadable" in result.stdout


def test_a_cycle_that_moves_nothing_writes_nothing(cluster: Cluster) -> None:
    # Given an applied assignment, mirrored in SQL
    for key in ("a@h", "b@h"):
        cluster.join(key)
    cluster.cycle().run("beat")
    root = ZkPaths(cluster.settings.zk_root)

    def written() -> tuple[object, ...]:
        times = [cluster.client.exists(root.last_update_time(k)).mzxid for k in ("a@h", "b@h")]
        with cluster.engine.connect() as connection:
            fence = connection.execute(select(MirrorState.updated_at)).scalar_one()
            seen = sorted(connection.execute(select(Node.last_seen)).scalars())
        return (cluster.client.exists(root.assignment_version).mzxid, times, fence, seen)

    before = written()

    # When cycles run with nothing to move (the times were written less than half an
    # assign_interval ago, an hour here so that a stalled machine cannot make them old; SQL
    # mirrors ZooKeeper's epoch and every node's state)
    settings = cluster.settings.model_copy(update={"assign_interval": 7200.0})
    quiet = AssignmentCycle(
        cluster.client, session_factory(cluster.engine), settings, clock=cluster.clock
    )
    reports = [quiet.run("beat") for _ in range(3)]

    # Then they read and compare and stop: no ZooKeeper write, no SQL transaction
    assert [r.outcome for r in reports] == ["unchanged"] * 3
    assert written() == before
    assert {"read", "plan", "zookeeper", "sql"} <= set(reports[-1].steps)
    cluster.assert_consistent()


def test_a_node_turning_suspect_is_still_recorded_when_nothing_moves(cluster: Cluster) -> None:
    # Given an applied assignment
    for key in ("a@h", "b@h"):
        cluster.join(key)
    cluster.cycle().run("beat")
    # When b's session ends (it keeps its buckets for the grace period: nothing moves)
    cluster.leave("b@h")
    report = cluster.cycle().run("membership")
    # Then SQL records b suspect all the same
    assert (report.outcome, report.suspect) == ("unchanged", ["b@h"])
    with cluster.engine.connect() as connection:
        states = dict(connection.execute(select(Node.node_key, Node.state)).all())
    assert states == {"a@h": "live", "b@h": "suspect"}


def test_a_burst_of_joins_is_planned_in_one_round(cluster: Cluster) -> None:
    # Given a node, and the membership version a trigger saw when the next node joined
    cluster.join("a@h")
    cluster.cycle().run("membership")
    sent_for = cluster.client.exists(ZkPaths(cluster.settings.zk_root).nodes).cversion + 1
    cluster.join("n0@h")
    keys = [f"n{index}@h" for index in range(1, 8)]
    sessions = {key: connect(cluster.settings) for key in keys}  # opened before the burst

    def join_the_rest() -> None:
        for key in keys:  # one every ~50 ms: far inside the settle window, even on a busy machine
            info = MemberInfo(key, "host", 1, 1.0, 0)
            NodeRegistration(sessions[key], ZkPaths(cluster.settings.zk_root), info).register()
            cluster.nodes[key] = sessions[key]  # closed with the cluster
            time.sleep(0.05)

    settings = cluster.settings.model_copy(update={"membership_settle": 2.0})
    cycle = AssignmentCycle(
        cluster.client, session_factory(cluster.engine), settings, clock=cluster.clock
    )
    thread = threading.Thread(target=join_the_rest)
    thread.start()
    try:
        # When the membership cycle sent for the first join runs while the others join
        report = cycle.run("membership", membership=sent_for)
    finally:
        thread.join(30)
    # Then it waited for membership to settle and planned every node in one round
    assert (report.outcome, report.rounds) == ("applied", 1)
    assert report.live == sorted(["a@h", "n0@h", *keys])
    assert report.steps["settle"] > 0
    cluster.assert_consistent()


def test_a_hand_edit_that_bypasses_the_version_is_still_mirrored(cluster: Cluster) -> None:
    # Given an applied assignment, mirrored in SQL
    for key in ("a@h", "b@h"):
        cluster.join(key)
    cluster.cycle().run("beat")
    held = cluster.zk_assignment()
    a, b = held["a@h"][0], held["b@h"][0]
    # When a foreign writer swaps one bucket of a with one of b, leaving assignment-version be
    root = ZkPaths(cluster.settings.zk_root)
    cluster.client.set(root.assignments("a@h"), encode_buckets([b, *held["a@h"][1:]]))
    cluster.client.set(root.assignments("b@h"), encode_buckets([a, *held["b@h"][1:]]))
    report = cluster.cycle().run("beat")
    # Then nothing moves (the counts are balanced), and SQL is brought to what ZooKeeper holds
    # although SQL's epoch and plan match assignment-version
    assert report.outcome == "unchanged"
    assert sizes(cluster.assert_consistent()) == {"a@h": 50, "b@h": 50}

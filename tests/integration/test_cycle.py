"""The assignment cycle against real ZooKeeper and real SQL (SQLite and PostgreSQL).

Nodes are real ZooKeeper sessions with membership znodes; the cycle runs in-process so faults
can be injected at exact points (a crash between steps, a session expiring mid-cycle).
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from allot.cycle import AssignmentCycle, CycleHooks, plans
from allot.testing.zookeeper import expire_session
from allot.zk.client import connect
from allot.zk.lock import AssignmentLock
from allot.zk.paths import ZkPaths
from allot.zk.store import AssignmentStore
from models import Node, Plan
from models.engine import session_factory
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

    assert report.outcome == "unchanged"
    assert len(report.recovered) == 1
    cluster.assert_consistent()
    with cluster.engine.connect() as connection:
        row = connection.execute(select(Plan.status, Plan.epoch)).one()
    assert tuple(row) == ("applied", 1)


def test_a_crash_before_the_zookeeper_transaction_fails_the_plan(cluster: Cluster) -> None:
    cluster.join("a@h")
    with pytest.raises(Crash):
        cluster.cycle(CycleHooks(after_plan_recorded=crash)).run()

    report = cluster.cycle().run("beat")

    assert (report.outcome, report.epoch) == ("applied", 1)
    with session_factory(cluster.engine)() as session:
        statuses = sorted(p.status for p in plans.list_plans(session))
    assert statuses == ["applied", "failed"]
    cluster.assert_consistent()


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

    report = cluster.cycle(CycleHooks(after_plan_recorded=lose_session)).run("beat")

    # Then it aborts and writes nothing, to ZooKeeper or to SQL (not even its plan's failure)
    assert report.outcome == "aborted"
    assert cluster.zk_assignment() == {}
    assert cluster.sql_assignment() == {}
    with session_factory(cluster.engine)() as session:
        [stuck] = plans.list_plans(session)
    assert stuck.status == "applying"
    # And the next holder, whose token proves the old one gone, fails it and applies its own
    following = cluster.cycle().run("beat")
    assert following.outcome == "applied"
    assert following.recovered == [stuck.plan_id]
    with session_factory(cluster.engine)() as session:
        assert plans.find_plan(session, stuck.plan_id).plan.status == "failed"
    cluster.assert_consistent()


def test_a_stalled_holder_never_overwrites_sql_with_an_older_assignment(cluster: Cluster) -> None:
    for key in ("a@h", "b@h"):
        cluster.join(key)
    cluster.cycle().run()
    other = connect(cluster.settings)
    newer: list[str] = []

    def stall(plan_id: str) -> None:
        # while this holder is stalled after its ZooKeeper write, its session expires and
        # another cycle recovers its plan and applies a newer assignment
        expire_session(cluster.client, cluster.settings.zk_hosts)
        cluster.join("c@h")
        report = AssignmentCycle(
            other, session_factory(cluster.engine), cluster.settings, clock=cluster.clock
        ).run("membership")
        assert report.recovered == [plan_id]
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

    report = cluster.cycle(CycleHooks(after_plan_recorded=b_leaves_cleanly)).run("grace")

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

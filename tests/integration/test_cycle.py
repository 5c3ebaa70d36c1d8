"""The assignment cycle against real ZooKeeper and real SQL (SQLite and PostgreSQL).

Nodes are real ZooKeeper sessions with membership znodes; the cycle runs in-process so faults
can be injected at exact points (a crash between steps, a session expiring mid-cycle).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from kazoo.client import KazooClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from allot.cycle import AssignmentCycle, CycleHooks, plans
from allot.settings import Settings
from allot.testing.cluster import sql_assignment, zk_assignment
from allot.testing.servers import ServerProcess
from allot.testing.zookeeper import expire_session
from allot.zk.client import connect
from allot.zk.codec import MemberInfo
from allot.zk.lock import AssignmentLock
from allot.zk.paths import ZkPaths
from allot.zk.registration import NodeRegistration
from allot.zk.store import AssignmentStore
from models import Node, Plan
from models.engine import session_factory
from tests.cli import allot

GRACE = 30.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@dataclass
class Cluster:
    settings: Settings
    engine: Engine
    client: KazooClient
    clock: Clock
    nodes: dict[str, KazooClient] = field(default_factory=dict)

    def cycle(
        self,
        hooks: CycleHooks | None = None,
        *,
        client: KazooClient | None = None,
        sessions: sessionmaker[Session] | None = None,
    ) -> AssignmentCycle:
        """A cycle on this cluster (through another ZooKeeper client or database if given)."""
        return AssignmentCycle(
            client or self.client,
            sessions or session_factory(self.engine),
            self.settings,
            clock=self.clock,
            hooks=hooks,
        )

    def join(self, key: str, weight: float = 1.0) -> None:
        node = connect(self.settings)
        NodeRegistration(
            node, ZkPaths(self.settings.zk_root), MemberInfo(key, "host", 1, weight, 0)
        ).register()
        self.nodes[key] = node

    def leave(self, key: str) -> None:
        """The node's session ends (its membership znode disappears at once)."""
        node = self.nodes.pop(key)
        node.stop()
        node.close()

    def zk_assignment(self) -> dict[str, list[int]]:
        return zk_assignment(AssignmentStore(self.client, ZkPaths(self.settings.zk_root)))

    def sql_assignment(self) -> dict[str, list[int]]:
        return sql_assignment(self.engine)

    def assert_consistent(self) -> dict[str, list[int]]:
        """ZooKeeper and SQL agree and every bucket has exactly one owner."""
        zk = self.zk_assignment()
        assert zk == self.sql_assignment()
        owned = sorted(bucket for buckets in zk.values() for bucket in buckets)
        assert owned == list(range(1, self.settings.bucket_count + 1))
        return zk


@pytest.fixture
def cluster(zookeeper: ServerProcess, zk_root: str, migrated: Engine) -> Iterator[Cluster]:
    settings = Settings(
        zk_hosts=zookeeper.address,
        zk_root=zk_root,
        zk_session_timeout=4.0,
        database_url=migrated.url.render_as_string(hide_password=False),
        node_offline_timeout=GRACE,
    )
    client = connect(settings)
    result = Cluster(settings, migrated, client, Clock())
    yield result
    for key in list(result.nodes):
        result.leave(key)
    client.stop()
    client.close()


def sizes(assignment: dict[str, list[int]]) -> dict[str, int]:
    return {key: len(buckets) for key, buckets in assignment.items()}


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

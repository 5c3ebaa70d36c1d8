"""Plan records and the SQL mirror of the assignment, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, select

from allot.cycle import mirror, plans
from allot.cycle.mirror import NodeObservation
from allot.errors import InvalidInput, NotFound
from allot.planner import NodeInfo, Snapshot, plan
from models import Bucket, Node
from models.engine import session_factory
from models.states import NodeState, PlanStatus


def owners_and_epochs(engine: Engine) -> dict[int, tuple[str | None, int]]:
    with engine.connect() as connection:
        rows = connection.execute(select(Bucket.bucket_id, Bucket.node_key, Bucket.epoch))
        return {bucket: (node, epoch) for bucket, node, epoch in rows}


def test_mirror_sets_owners_and_bumps_the_epoch_only_of_moved_buckets(migrated: Engine) -> None:
    sessions = session_factory(migrated)
    first = {"a@h": range(1, 51), "b@h": range(51, 101)}
    with sessions.begin() as session:
        assert mirror.mirror_assignment(session, first, epoch=1) == 100

    second = {"a@h": range(1, 41), "b@h": range(51, 91), "c@h": [*range(41, 51), *range(91, 101)]}
    with sessions.begin() as session:
        assert mirror.mirror_assignment(session, second, epoch=2) == 20
    with sessions.begin() as session:
        assert mirror.mirror_assignment(session, second, epoch=3) == 0

    state = owners_and_epochs(migrated)
    assert state[1] == ("a@h", 1)
    assert state[41] == ("c@h", 2)
    assert state[100] == ("c@h", 2)


def test_plans_are_recorded_with_their_moves_and_found_by_prefix(migrated: Engine) -> None:
    sessions = session_factory(migrated)
    made = plan(Snapshot(bucket_count=4, nodes={"a@h": NodeInfo()}, assignments={}), "balanced")
    assert len(made.moves) == 4
    plan_id = plans.new_plan_id()
    with sessions.begin() as session:
        for _ in range(2):  # recording the same id again is a no-op
            plans.record_plan(
                session,
                made,
                plan_id=plan_id,
                trigger="manual",
                status=PlanStatus.GENERATED,
                base_epoch=0,
                max_moves=None,
            )
    with sessions.begin() as session:
        detail = plans.find_plan(session, plan_id[:8])
        assert detail.plan.status == PlanStatus.GENERATED
        assert list(detail.moves) == [
            (1, None, "a@h"),
            (2, None, "a@h"),
            (3, None, "a@h"),
            (4, None, "a@h"),
        ]
        assert plans.set_status(
            session, plan_id, PlanStatus.APPLYING, expected=[PlanStatus.GENERATED]
        )
        assert not plans.set_status(
            session, plan_id, PlanStatus.APPLYING, expected=[PlanStatus.GENERATED]
        )
        assert plans.set_status(session, plan_id, PlanStatus.APPLIED, epoch=7)
    with sessions() as session:
        row = plans.find_plan(session, plan_id).plan
        assert (row.status, row.epoch) == (PlanStatus.APPLIED, 7)
        assert row.applied_at is not None
        assert [p.plan_id for p in plans.list_plans(session)] == [plan_id]
        with pytest.raises(InvalidInput, match="too short"):
            plans.find_plan(session, "abc")
        with pytest.raises(NotFound, match="no plan"):
            plans.find_plan(session, "f" * 32)


def test_node_rows_remember_when_a_node_was_first_seen_gone(migrated: Engine) -> None:
    sessions = session_factory(migrated)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with sessions.begin() as session:
        mirror.record_nodes(
            session,
            [
                NodeObservation("a@h", NodeState.LIVE, 2.0, "h1"),
                NodeObservation("b@h", NodeState.LIVE),
            ],
            t0,
        )
    with sessions.begin() as session:
        mirror.record_nodes(
            session, [NodeObservation("b@h", NodeState.SUSPECT)], t0 + dt.timedelta(seconds=5)
        )
    with sessions.begin() as session:
        mirror.record_nodes(
            session, [NodeObservation("b@h", NodeState.OFFLINE)], t0 + dt.timedelta(seconds=9)
        )
        assert mirror.departed_since(session) == {"b@h": t0 + dt.timedelta(seconds=5)}

    with sessions.begin() as session:
        mirror.record_nodes(
            session, [NodeObservation("b@h", NodeState.LIVE)], t0 + dt.timedelta(seconds=20)
        )
        assert mirror.departed_since(session) == {}
        a = session.get(Node, "a@h")
        assert a is not None
        assert (a.state, a.weight, a.host) == ("live", 2.0, "h1")

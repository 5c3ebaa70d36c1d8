"""Bounded history (allot.history) on both databases: old attempts and plans go in batches,
recent ones stay, and so do a run's committed row within the redelivery window, applying
plans, the newest plan and the newest applied one; pruning is idempotent
and safe to run twice at once; ``allot db prune`` says what would go and what went."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, insert, select

from allot.history import Cutoffs, count_prunable, prune
from allot.names import parse_table_name
from allot.registry import register_tables
from allot.settings import Settings
from models.base import utcnow
from models.engine import session_factory
from models.schema import Plan, PlanMove, TableIdentifier, TableTaskRun
from models.states import PlanStatus, RunStatus
from tests.cli import allot

NOW = utcnow()
DAY = dt.timedelta(days=1)
SETTINGS = Settings(run_history_days=7, plan_history_days=30, redelivery_timeout=300)
_ids = itertools.count()


@pytest.fixture
def table_id(migrated: Engine) -> int:
    with session_factory(migrated).begin() as session:
        register_tables(session, [parse_table_name("c.d.orders")])
        return session.execute(select(TableIdentifier.table_id)).scalar_one()


def add_runs(engine: Engine, table_id: int, age: dt.timedelta, status: str, count: int = 1) -> None:
    with engine.begin() as connection:
        for _ in range(count):
            connection.execute(
                insert(TableTaskRun).values(
                    run_id=f"run-{next(_ids)}",
                    task_name="test.task",
                    table_id=table_id,
                    bucket_id=1,
                    node_key="a@h",
                    token=1,
                    status=status,
                    started_at=NOW - age,
                )
            )


def add_plan(engine: Engine, age: dt.timedelta, status: str, moves: int = 2) -> str:
    plan_id = f"plan-{next(_ids):04}"
    with engine.begin() as connection:
        connection.execute(
            insert(Plan).values(
                plan_id=plan_id,
                trigger="beat",
                status=status,
                strategy="balanced",
                base_epoch=0,
                created_at=NOW - age,
            )
        )
        for bucket in range(1, moves + 1):
            connection.execute(
                insert(PlanMove).values(plan_id=plan_id, bucket_id=bucket, to_node="a@h")
            )
    return plan_id


def runs_by_status(engine: Engine) -> dict[str, int]:
    query = select(TableTaskRun.status, func.count()).group_by(TableTaskRun.status)
    with engine.connect() as connection:
        return dict(connection.execute(query).all())


def plan_ids(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(select(Plan.plan_id)).scalars())


def move_plans(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(select(PlanMove.plan_id)).scalars())


def test_old_attempts_go_in_batches_and_recent_ones_stay(migrated: Engine, table_id: int) -> None:
    # Given 11 attempts older than the 7 days kept (one `running`, as an older allot left
    # them: a row is now written once its attempt ended), and 3 recent
    add_runs(migrated, table_id, 8 * DAY, RunStatus.COMMITTED, 6)
    add_runs(migrated, table_id, 30 * DAY, RunStatus.FAILED, 2)
    add_runs(migrated, table_id, 9 * DAY, RunStatus.FENCED, 2)
    add_runs(migrated, table_id, 20 * DAY, RunStatus.RUNNING)
    add_runs(migrated, table_id, 6 * DAY, RunStatus.COMMITTED, 3)
    sessions = session_factory(migrated)
    cutoffs = Cutoffs.at(NOW, SETTINGS)
    assert count_prunable(sessions, cutoffs).runs == 11

    # When it prunes 3 rows per transaction
    seen: list[tuple[str, int]] = []
    report = prune(sessions, cutoffs, batch_size=3, progress=lambda *step: seen.append(step))

    # Then the 11 old ones went in 4 batches of runs (3+3+3+2), the rest stayed
    assert report.runs == 11
    assert report.complete
    assert [deleted for kind, deleted in seen if kind == "runs"] == [3, 6, 9, 11]
    assert runs_by_status(migrated) == {"committed": 3}


def test_a_committed_row_outlives_the_redelivery_timeout_whatever_the_days(
    migrated: Engine, table_id: int
) -> None:
    # Given history kept for about 9 s but messages redelivered after 300 s
    settings = Settings(run_history_days=0.0001, redelivery_timeout=300)
    add_runs(migrated, table_id, dt.timedelta(seconds=100), RunStatus.COMMITTED)
    add_runs(migrated, table_id, dt.timedelta(seconds=400), RunStatus.COMMITTED)

    # When it prunes
    report = prune(session_factory(migrated), Cutoffs.at(NOW, settings))

    # Then only the committed row older than the redelivery timeout went
    assert report.runs == 1
    assert runs_by_status(migrated) == {"committed": 1}


def test_old_plans_go_with_their_moves_but_applying_newest_and_newest_applied_stay(
    migrated: Engine,
) -> None:
    # Given plans older than 30 days, among them one applying and the newest applied one, and
    # a newest plan that is old too (a cluster that has not planned for long)
    gone = {add_plan(migrated, (40 + age) * DAY, PlanStatus.FAILED) for age in range(5)}
    gone.add(add_plan(migrated, 60 * DAY, PlanStatus.APPLIED))
    applying = add_plan(migrated, 50 * DAY, PlanStatus.APPLYING)
    newest_applied = add_plan(migrated, 35 * DAY, PlanStatus.APPLIED)
    newest = add_plan(migrated, 31 * DAY, PlanStatus.REJECTED)
    sessions = session_factory(migrated)
    cutoffs = Cutoffs.at(NOW, SETTINGS)
    assert count_prunable(sessions, cutoffs).plans == 6

    # When it prunes 2 plans per transaction
    report = prune(sessions, cutoffs, batch_size=2)

    # Then the six others went in three batches or more, their moves with them
    assert report.plans == 6
    assert plan_ids(migrated) == move_plans(migrated) == {applying, newest_applied, newest}
    assert not gone & plan_ids(migrated)


def test_recent_plans_stay(migrated: Engine) -> None:
    old = add_plan(migrated, 31 * DAY, PlanStatus.APPLIED)
    recent = {add_plan(migrated, age * DAY, PlanStatus.APPLIED) for age in (29, 1)}

    assert prune(session_factory(migrated), Cutoffs.at(NOW, SETTINGS)).plans == 1
    assert plan_ids(migrated) == recent
    assert old not in plan_ids(migrated)


def test_pruning_again_or_twice_at_once_deletes_each_row_once(
    migrated: Engine, table_id: int
) -> None:
    # Given 40 old attempts and 10 old plans (and a newer one)
    add_runs(migrated, table_id, 10 * DAY, RunStatus.COMMITTED, 40)
    for age in range(10):
        add_plan(migrated, (40 + age) * DAY, PlanStatus.APPLIED, moves=1)
    add_plan(migrated, DAY, PlanStatus.APPLIED)
    sessions = session_factory(migrated)
    cutoffs = Cutoffs.at(NOW, SETTINGS)

    # When two pruners run at once, in small batches, each until nothing is left
    reports = []

    def pruner() -> None:
        while True:
            report = prune(sessions, cutoffs, batch_size=4)
            reports.append(report)
            if report.runs == report.plans == 0:
                return

    threads = [threading.Thread(target=pruner) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # Then every old row went exactly once between them, and a further prune finds nothing
    assert sum(report.runs for report in reports) == 40
    assert sum(report.plans for report in reports) == 10
    assert runs_by_status(migrated) == {}
    assert len(plan_ids(migrated)) == 1
    again = prune(sessions, cutoffs)
    assert (again.runs, again.plans, again.complete) == (0, 0, True)


def test_a_spent_time_budget_stops_between_batches(migrated: Engine, table_id: int) -> None:
    add_runs(migrated, table_id, 10 * DAY, RunStatus.FAILED, 5)
    ticks: Iterator[float] = itertools.count(0.0, 1.0)

    report = prune(
        session_factory(migrated),
        Cutoffs.at(NOW, SETTINGS),
        batch_size=2,
        budget=2.5,
        clock=lambda: next(ticks),
    )

    assert (report.runs, report.complete) == (4, False)
    assert runs_by_status(migrated) == {"failed": 1}


def test_allot_db_prune_counts_then_deletes(migrated: Engine, table_id: int) -> None:
    add_runs(migrated, table_id, 10 * DAY, RunStatus.FAILED, 3)
    add_runs(migrated, table_id, DAY, RunStatus.COMMITTED)
    add_plan(migrated, 40 * DAY, PlanStatus.APPLIED)
    add_plan(migrated, DAY, PlanStatus.APPLIED)
    env = {"ALLOT_DATABASE_URL": migrated.url.render_as_string(hide_password=False)}

    dry = allot("db", "prune", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would delete 3 runs started before" in dry.stdout
    assert "and 1 plans created before" in dry.stdout
    assert runs_by_status(migrated) == {"failed": 3, "committed": 1}

    done = allot("db", "prune", "--batch-size", "2", "-f", "json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["runs"], report["plans"], report["dry_run"]) == (3, 1, False)
    assert report["batches"] >= 3
    assert runs_by_status(migrated) == {"committed": 1}

"""Periodic work on a real worker: a table is the unit of fairness.

A table whose run outlasts the period skips the periods it overlaps, its bucket-mates commit
every period, and no table ever has two runs at once.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest
from sqlalchemy import Engine, select

from allot.names import parse_table_name
from allot.registry import register_tables
from allot.testing.cluster import QUICK_START, LocalCluster
from models.engine import session_factory
from models.schema import TableIdentifier
from tests.e2e.conftest import START
from tests.e2e.fair_tasks import EVERY, fair_run, metadata

BUCKETS = 3
# a new table takes the emptiest bucket (ties to the lowest id): t00_slow, t03, t06 and t09
# share bucket 1, the others fill buckets 2 and 3
SLOW = "cat.db.t00_slow"
TABLES = [SLOW, *(f"cat.db.t{index:02d}" for index in range(1, 12))]
PERIODS = 5  # measured periods of every fast table


@pytest.fixture
def migrated(engine: Engine) -> Engine:
    """The fresh database, upgraded to the newest schema with three buckets."""
    from allot.database import upgrade

    upgrade(engine, bucket_count=BUCKETS)
    return engine


def runs(engine: Engine) -> dict[int, list[tuple[int, float, float]]]:
    """Committed runs per table: (period, started, ended), by period."""
    found: dict[int, list[tuple[int, float, float]]] = defaultdict(list)
    with engine.connect() as connection:
        for run_id, table_id, started, ended in connection.execute(select(fair_run)):
            found[table_id].append((int(run_id.rsplit(":", 1)[1]), started, ended))
    return {table: sorted(spans) for table, spans in found.items()}


def test_a_slow_table_skips_periods_while_its_bucket_mates_keep_every_period(
    cluster: LocalCluster, migrated: Engine
) -> None:
    # Given 12 tables in 3 buckets, one of them slow (its runs take 1.5 periods) sharing
    # bucket 1 with three fast ones, and one worker with four pool processes serving them all
    metadata.create_all(migrated)
    with session_factory(migrated).begin() as session:
        register_tables(session, [parse_table_name(name) for name in TABLES])
    with migrated.connect() as connection:
        rows = connection.execute(
            select(TableIdentifier.table_name, TableIdentifier.table_id, TableIdentifier.bucket_id)
        ).all()
    ids = {name: table_id for name, table_id, _ in rows}
    bucket = {table_id: bucket_id for _, table_id, bucket_id in rows}
    slow = ids["t00_slow"]
    mates = {table for table in bucket if bucket[table] == bucket[slow] and table != slow}
    fast = set(bucket) - {slow}
    assert len(mates) == 3
    assert len(set(bucket.values())) == BUCKETS
    env = cluster.env | {
        "ALLOT_TASK_MODULES": "tests.e2e.fair_tasks",
        "ALLOT_BUCKET_COUNT": str(BUCKETS),
    }
    cluster.processes["a"] = cluster.group.worker("a", env, *QUICK_START, "-c", "4")

    # When it runs the periodic task until every fast table has committed PERIODS periods
    # after the first period in which all of them ran (the worker starts mid-period)
    def measured() -> dict[int, list[tuple[int, float, float]]] | None:
        found = runs(cluster.engine)
        if not fast <= set(found):
            return None
        start = max(spans[0][0] for table, spans in found.items() if table in fast)
        done = all(spans[-1][0] >= start + PERIODS for t, spans in found.items() if t in fast)
        return found if done and slow in found else None

    found = cluster.wait_for(
        measured, f"{PERIODS} periods of every fast table", START + (PERIODS + 4) * EVERY
    )
    start = max(spans[0][0] for table, spans in found.items() if table in fast)
    window = set(range(start, start + PERIODS + 1))

    # Then every fast table, the slow table's bucket-mates included, committed every period
    for table in fast:
        periods = {period for period, _, _ in found[table]}
        assert window <= periods, (table, table in mates, sorted(window - periods))
    # And the slow table skipped the periods its runs overlapped: every other period
    slow_periods = [period for period, _, _ in found[slow]]
    assert len(slow_periods) >= 2, slow_periods
    assert all(b - a >= 2 for a, b in itertools.pairwise(slow_periods)), slow_periods
    # And no table ever had two runs at once, nor two commits of one period
    for table, spans in found.items():
        assert len({period for period, _, _ in spans}) == len(spans), table
        for (_, _, ended), (_, started, _) in itertools.pairwise(spans):
            assert ended <= started, f"table {table}: two runs overlapped"

"""Periodic work on a real worker: a table is the unit of fairness.

A table whose run outlasts the period skips the periods it overlaps, its bucket-mate commits
every period, and no table ever has two runs at once.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

from sqlalchemy import Engine, select

from allot.names import parse_table_name
from allot.registry import register_tables
from allot.testing.cluster import QUICK_START, LocalCluster
from models.engine import session_factory
from models.schema import TableIdentifier
from tests.e2e.conftest import START
from tests.e2e.fair_tasks import fair_run, metadata

# the first name takes bucket 1, the next 99 buckets 2-100, the last bucket 1 again
SLOW = "cat.db.a_slow"
MATE = "cat.db.z_mate"
TABLES = [SLOW, *(f"cat.db.f{index:03d}" for index in range(99)), MATE]


def runs(engine: Engine) -> dict[int, list[tuple[int, float, float]]]:
    """Committed runs per table: (period, started, ended), by period."""
    found: dict[int, list[tuple[int, float, float]]] = defaultdict(list)
    with engine.connect() as connection:
        for run_id, table_id, started, ended in connection.execute(select(fair_run)):
            found[table_id].append((int(run_id.rsplit(":", 1)[1]), started, ended))
    return {table: sorted(spans) for table, spans in found.items()}


def test_a_slow_table_skips_periods_while_its_bucket_mate_keeps_every_period(
    cluster: LocalCluster, migrated: Engine
) -> None:
    # Given a slow table (15 s runs, every 10 s) sharing bucket 1 with a fast one, 99 other
    # fast tables, and one worker with four pool processes serving every bucket
    metadata.create_all(migrated)
    with session_factory(migrated).begin() as session:
        register_tables(session, [parse_table_name(name) for name in TABLES])
    with migrated.connect() as connection:
        ids = dict(
            connection.execute(select(TableIdentifier.table_name, TableIdentifier.table_id))
            .tuples()
            .all()
        )
        buckets = dict(
            connection.execute(select(TableIdentifier.table_id, TableIdentifier.bucket_id))
            .tuples()
            .all()
        )
    slow, mate = ids["a_slow"], ids["z_mate"]
    assert buckets[slow] == buckets[mate]
    env = cluster.env | {
        "ALLOT_TASK_MODULES": "tests.e2e.fair_tasks",
        "ALLOT_REDELIVERY_TIMEOUT": "8",
    }
    cluster.processes["a"] = cluster.group.worker("a", env, *QUICK_START, "-c", "4")

    # When it runs the periodic task until the mate has committed five periods
    def mate_runs() -> list[tuple[int, float, float]] | None:
        spans = runs(cluster.engine).get(mate, [])
        return spans if len(spans) >= 5 else None

    cluster.wait_for(mate_runs, "five periods of the slow table's bucket-mate", START + 90)
    found = runs(cluster.engine)

    # Then the mate committed every period from its first (nothing waited on the slow table)
    mate_periods = [period for period, _, _ in found[mate]]
    assert mate_periods == list(range(mate_periods[0], mate_periods[0] + len(mate_periods)))
    # And so did every other fast table over those periods
    window = set(mate_periods[1:-1])
    for table, spans in found.items():
        if table != slow:
            assert window <= {period for period, _, _ in spans}, table
    # And the slow table skipped the periods its runs overlapped, never running twice at once
    slow_periods = [period for period, _, _ in found[slow]]
    assert len(slow_periods) >= 2
    assert all(b - a >= 2 for a, b in itertools.pairwise(slow_periods))
    for table, spans in found.items():
        for (_, _, ended), (_, started, _) in itertools.pairwise(spans):
            assert ended <= started, f"table {table}: two runs overlapped"

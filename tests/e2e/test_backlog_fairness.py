"""A backlog of one table's sends on a real worker (docs/table-work.md, case 14).

A node takes from its bucket queues round-robin, so the other bucket keeps every period. Inside
the backlogged bucket the queue is first in, first out: without a priority, a bucket-mate's
periodic run waits behind the backlog queued before it and runs right after it (not starved);
sent with ``priority=9`` (a list kombu reads after the default one), the backlog is passed by
the periodic runs. Every message commits once.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from sqlalchemy import Engine, func, select

from allot.names import parse_table_name
from allot.registry import register_tables
from allot.testing.cluster import QUICK_START, LocalCluster
from models.engine import session_factory
from models.schema import TableIdentifier, TableTaskRun
from models.states import RunStatus
from tests.e2e.backlog_tasks import EVERY, backlog_run, metadata
from tests.e2e.conftest import START

BUCKETS = 2
# a new table takes the emptiest bucket (ties to the lowest id): t0_hot, t2 and t4 share
# bucket 1, t1, t3 and t5 are bucket 2
HOT = "cat.db.t0_hot"
TABLES = [HOT, *(f"cat.db.t{index}" for index in range(1, 6))]
BACKLOG = 30  # sends to the hot table, at once
SECONDS = 0.5  # each: with two pool processes the backlog takes about 8 s, four periods
SLACK = 1.5  # seconds for a tick and a run to pass through the worker


class Run(NamedTuple):
    run_id: str
    task: str
    table_id: int
    started: float
    ended: float

    @property
    def period(self) -> int:
        return int(self.run_id.rsplit(":", 1)[1])


@pytest.fixture
def migrated(engine: Engine) -> Engine:
    """The fresh database, upgraded to the newest schema with two buckets."""
    from allot.database import upgrade

    upgrade(engine, bucket_count=BUCKETS)
    return engine


def runs(engine: Engine) -> list[Run]:
    """Every committed run, by start."""
    with engine.connect() as connection:
        return sorted(
            (Run(*row) for row in connection.execute(select(backlog_run))),
            key=lambda run: run.started,
        )


def committed(engine: Engine) -> dict[str, int]:
    """run id -> committed attempts."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(TableTaskRun.run_id, func.count())
            .where(TableTaskRun.status == RunStatus.COMMITTED)
            .group_by(TableTaskRun.run_id)
        )
        return {row[0]: row[1] for row in rows}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("priority", [0, 9])
def test_a_backlog_of_one_tables_sends_starves_no_other_table(
    cluster: LocalCluster, migrated: Engine, tmp_path: Path, priority: int
) -> None:
    # Given six tables in two buckets, a task every 2 s on each, and one worker with two pool
    # processes serving both buckets
    metadata.create_all(migrated)
    with session_factory(migrated).begin() as session:
        register_tables(session, [parse_table_name(name) for name in TABLES])
    with migrated.connect() as connection:
        rows = connection.execute(
            select(TableIdentifier.table_name, TableIdentifier.table_id, TableIdentifier.bucket_id)
        ).all()
    ids = {name: table_id for name, table_id, _ in rows}
    bucket = {table_id: bucket_id for _, table_id, bucket_id in rows}
    hot = ids["t0_hot"]
    mates = {table for table in bucket if bucket[table] == bucket[hot] and table != hot}
    others = {table for table in bucket if bucket[table] != bucket[hot]}
    assert len(mates) == 2
    assert len(others) == 3
    env = cluster.env | {
        "ALLOT_TASK_MODULES": "tests.e2e.backlog_tasks",
        "ALLOT_BUCKET_COUNT": str(BUCKETS),
    }
    cluster.processes["a"] = cluster.group.worker("a", env, *QUICK_START, "-c", "2")

    def all_tables_ran() -> bool:
        periods: dict[int, set[int]] = {}
        for run in runs(cluster.engine):
            periods.setdefault(run.period, set()).add(run.table_id)
        return any(tables == set(bucket) for tables in periods.values())

    cluster.wait_for(all_tables_ran, "a period run on every table", START)

    # When a backlog of sends to the hot table is pushed into its bucket's queue at once
    out = tmp_path / "sent.txt"
    sender = [sys.executable, "-m", "tests.e2e.backlog_sender", HOT]
    sender += [str(BACKLOG), str(SECONDS), str(priority), str(out)]
    began = time.time()
    assert cluster.group.start("sender", sender, env).popen.wait(60) == 0
    queued = time.time()  # every send is in the queue; ticks sent from now on are behind them
    sent = out.read_text().split()
    assert len(sent) == BACKLOG

    # and it drains, every table running a period after it
    def drained() -> list[Run] | None:
        found = runs(cluster.engine)
        backlog = [run for run in found if run.task == "send"]
        if len(backlog) < BACKLOG:
            return None
        end = max(run.ended for run in backlog)
        after = {run.table_id for run in found if run.task == "periodic" and run.started > end}
        return found if after == set(bucket) else None

    found = cluster.wait_for(drained, "the backlog drained", 60)
    backlog = [run for run in found if run.task == "send"]
    periodic = [run for run in found if run.task == "periodic"]
    first_start = min(run.started for run in backlog)
    last_start = max(run.started for run in backlog)
    last_end = max(run.ended for run in backlog)
    assert first_start >= began

    # Then (a) the other bucket's tables committed every period spent in the backlog
    window = [
        period
        for period in range(int(first_start // EVERY), int(last_end // EVERY) + 1)
        if period * EVERY >= first_start and (period + 1) * EVERY <= last_end
    ]
    assert len(window) >= 2, (first_start, last_end)
    for table in others:
        periods = {run.period for run in periodic if run.table_id == table}
        assert set(window) <= periods, (table, sorted(set(window) - periods))

    # (b) the hot table's bucket-mates were not starved: their first periodic run of a period
    # begun once the backlog was queued (its tick queued behind the backlog) ...
    for table in mates:
        first = next(r for r in periodic if r.table_id == table and r.period * EVERY >= queued)
        if priority:
            # ... passed the backlog: it committed before the backlog's last send started
            assert first.ended < last_start, (table, first, last_start)
        else:
            # ... waited behind the backlog queued before it (started after its last send),
            # and ran right after it: at most the period it skipped meanwhile later
            assert first.started > last_start, (table, first, last_start)
            assert first.ended <= last_end + EVERY + SLACK, (table, first, last_end)

    # (c) every message committed exactly once: each send, and each table's period
    assert sorted(run.run_id for run in backlog) == sorted(sent)
    run_ids = [run.run_id for run in found]
    assert len(run_ids) == len(set(run_ids))
    attempts = committed(cluster.engine)
    assert {run: attempts.get(run) for run in run_ids} == dict.fromkeys(run_ids, 1)

"""The tasks of the table-work benchmark (bench/work.py); workers load this module through
``ALLOT_TASK_MODULES=bench.work_tasks``.

- ``bench.table_insert``: a table task whose body inserts one row inside ``ctx.commit()``
  (fenced, recorded in ``table_task_run``), after working ``seconds``.
- ``bench.plain_insert``: the same insert as a plain Celery task on Celery's default queue,
  unfenced, in a transaction of its own on the same engine;
- ``bench.plain_insert_late``: the same plain task acknowledged late, as table tasks are (a
  control: what late acknowledgement alone costs).

Both write one ``bench_effect`` row per run (``at``: the worker's clock just before its
commit). When ``BENCH_TALLY_DIR`` is set, every pool process counts, per task name, the runs,
the SQL statements and transactions they issued, the seconds spent in SQL and in the task
(wall clock and CPU), and writes the totals to ``BENCH_TALLY_DIR/<pid>.json`` every
:data:`TALLY_EVERY` runs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from celery import Task, shared_task
from celery.signals import task_postrun, task_prerun
from sqlalchemy import Column, Engine, Float, Integer, MetaData, String, Table, event, insert
from sqlalchemy.orm import Session

from allot.work import TableContext, table_task
from allot.work.database import work_sql

TABLE_TASK = "bench.table_insert"
PLAIN_TASK = "bench.plain_insert"
LATE_TASK = "bench.plain_insert_late"
TASKS = {"table": TABLE_TASK, "plain": PLAIN_TASK, "late": LATE_TASK}
"""The task of each kind of run (``bench_effect.kind``)."""
TALLY_EVERY = 100

metadata = MetaData()
effect = Table(
    "bench_effect",
    metadata,
    Column("run_id", String(255)),
    Column("kind", String(16)),
    Column("bucket_id", Integer),
    Column("node_key", String(128)),
    Column("at", Float),
)
"""One row per committed run (created by the benchmark)."""


def effect_row(run_id: str, kind: str, node_key: str, bucket_id: int | None) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "kind": kind,
        "bucket_id": bucket_id,
        "node_key": node_key,
        "at": time.time(),
    }


STARTED_LOG = "BENCH_STARTED_LOG"
"""The variable naming the file where a run that works ``seconds`` says it started, on a line
``run_id node_key``: a run writes no history row until it ends."""


@table_task(name=TABLE_TASK)
def table_insert(ctx: TableContext, seconds: float = 0.0) -> None:
    """Work ``seconds``, then insert one row, fenced."""
    if seconds:
        if started := os.environ.get(STARTED_LOG):
            with open(started, "a") as log:
                log.write(f"{ctx.run_id} {ctx.node_key}\n")
        time.sleep(seconds)
    with ctx.commit() as session:
        session.execute(
            insert(effect).values(effect_row(ctx.run_id, "table", ctx.node_key, ctx.bucket_id))
        )


def plain_body(task: Task, kind: str) -> None:
    """The same insert, unfenced: one transaction, no run history."""
    row = effect_row(task.request.id, kind, task.request.hostname, None)
    with work_sql().sessions.begin() as session:
        session.execute(insert(effect).values(row))


@shared_task(name=PLAIN_TASK, bind=True)
def plain_insert(self: Task) -> None:
    plain_body(self, "plain")


@shared_task(name=LATE_TASK, bind=True, acks_late=True)
def plain_insert_late(self: Task) -> None:
    plain_body(self, "late")


# -- counting what a run costs, in the pool process ------------------------------------------


@dataclass
class Tally:
    """What the runs of one task cost in one or more pool processes, in total."""

    runs: int = 0
    statements: int = 0
    """SQL statements sent to the database (SQLite's explicit ``BEGIN`` included)."""
    transactions: int = 0
    """Transactions committed."""
    sql_seconds: float = 0.0
    """Wall clock inside statements and commits."""
    task_seconds: float = 0.0
    """Wall clock from ``task_prerun`` to ``task_postrun``."""
    cpu_seconds: float = 0.0
    """CPU of the pool process over the same span."""


class Counter:
    """SQL statements, commits and times of the task running in this (pool) process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.tallies: dict[str, Tally] = defaultdict(Tally)
        self.current: Tally | None = None
        self.local = threading.local()
        self.task_started = 0.0
        self.cpu_started = 0.0
        self.commit_started = 0.0

    def install(self) -> None:
        event.listen(Engine, "before_cursor_execute", self.before_execute)
        event.listen(Engine, "after_cursor_execute", self.after_execute)
        event.listen(Session, "before_commit", self.before_commit)
        event.listen(Session, "after_commit", self.after_commit)
        task_prerun.connect(self.prerun, weak=False)
        task_postrun.connect(self.postrun, weak=False)

    def before_execute(self, *_: Any) -> None:
        self.local.started = time.perf_counter()

    def after_execute(self, *_: Any) -> None:
        if self.current is not None:
            self.current.statements += 1
            self.current.sql_seconds += time.perf_counter() - self.local.started

    def before_commit(self, *_: Any) -> None:
        self.commit_started = time.perf_counter()

    def after_commit(self, *_: Any) -> None:
        if self.current is not None:
            self.current.transactions += 1
            self.current.sql_seconds += time.perf_counter() - self.commit_started

    def prerun(self, sender: Any = None, **_: Any) -> None:
        self.current = self.tallies[getattr(sender, "name", "?")]
        self.task_started = time.perf_counter()
        self.cpu_started = time.process_time()

    def postrun(self, **_: Any) -> None:
        tally, self.current = self.current, None
        if tally is None:
            return
        tally.runs += 1
        tally.task_seconds += time.perf_counter() - self.task_started
        tally.cpu_seconds += time.process_time() - self.cpu_started
        if tally.runs % TALLY_EVERY == 0:
            totals = {name: asdict(t) for name, t in self.tallies.items()}
            path = self.directory / f"{os.getpid()}.json"
            path.with_suffix(".tmp").write_text(json.dumps(totals))
            path.with_suffix(".tmp").replace(path)


def read_tallies(directory: Path) -> dict[str, Tally]:
    """The tallies of every pool process that wrote one, summed per task name."""
    summed: dict[str, Tally] = defaultdict(Tally)
    for path in sorted(directory.glob("*.json")):
        for name, values in json.loads(path.read_text()).items():
            total = summed[name]
            for key, value in values.items():
                setattr(total, key, getattr(total, key) + value)
    return dict(summed)


if os.environ.get("BENCH_TALLY_DIR"):
    Counter(Path(os.environ["BENCH_TALLY_DIR"])).install()

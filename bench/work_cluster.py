"""The table-work benchmark's side of a local cluster: the tables, sending table and plain
tasks from this process, and reading back what the workers recorded.

This process sends through allot's own Celery app (``tasks``), configured from the cluster's
environment (:func:`allot_app`), so table tasks take the router to their bucket's queue as any
sender's would. Times read back are wall-clock seconds (``time.time()``): the workers, this
process and ZooKeeper share one machine and one clock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from sqlalchemy import Engine, func, select

from allot.names import parse_table_name
from allot.registry import register_tables
from allot.settings import get_settings
from allot.testing.cluster import LocalCluster
from bench.work_tasks import TABLE_TASK, TASKS, effect, metadata
from models.engine import session_factory
from models.schema import BucketLease, TableTaskRun
from models.states import RunStatus


def allot_app(cluster: LocalCluster) -> Celery:
    """allot's Celery app in this process, configured like the cluster's workers."""
    os.environ.update({k: v for k, v in cluster.env.items() if k.startswith("ALLOT_")})
    get_settings.cache_clear()
    app: Celery = importlib.import_module("tasks").app
    return app


def register(cluster: LocalCluster, per_bucket: int) -> dict[int, list[str]]:
    """Create the effect table and register ``per_bucket`` tables in every bucket; the table
    names by bucket (the registry gives each new table the emptiest bucket)."""
    metadata.create_all(cluster.engine)
    count = cluster.settings.bucket_count * per_bucket
    names = [f"bench.db.t{index:05d}" for index in range(count)]
    with session_factory(cluster.engine).begin() as session:
        registered = register_tables(session, [parse_table_name(name) for name in names])
    by_bucket: dict[int, list[str]] = {}
    for name, registration in zip(names, registered, strict=True):
        by_bucket.setdefault(registration.bucket_id, []).append(name)
    return by_bucket


def served(cluster: LocalCluster) -> dict[str, list[int]] | None:
    """The assignment once ZooKeeper, SQL and every bucket's fence agree on it, else None."""
    zk = cluster.zk()
    if sum(map(len, zk.values())) != cluster.settings.bucket_count or zk != cluster.sql():
        return None
    with cluster.engine.connect() as connection:
        rows = connection.execute(select(BucketLease.bucket_id, BucketLease.node_key))
        fenced = dict(rows.tuples().all())
    owner = {bucket: node for node, buckets in zk.items() for bucket in buckets}
    return zk if fenced == owner else None


# -- sending ---------------------------------------------------------------------------------


@dataclass
class Sent:
    """Tasks sent through ``app`` by this process (from any thread: the tasks are looked up in
    ``app``, not in Celery's per-thread current app): task id -> (bucket, or None for a plain
    task; send time)."""

    app: Celery
    calls: dict[str, tuple[int | None, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def table(self, tables: dict[int, list[str]], bucket: int, seconds: float = 0.0) -> str:
        """Send one ``bench.table_insert`` on a table of ``bucket``; its task id."""
        table = tables[bucket][len(self.calls) % len(tables[bucket])]
        task_id: str = self.app.tasks[TABLE_TASK].delay(table, seconds=seconds).id
        with self.lock:
            self.calls[task_id] = (bucket, time.time())
        return task_id

    def plain(self, kind: str = "plain") -> str:
        """Send one plain task of ``kind`` (``plain`` or ``late``); its task id."""
        task_id: str = self.app.tasks[TASKS[kind]].delay().id
        with self.lock:
            self.calls[task_id] = (None, time.time())
        return task_id

    def table_ids(self) -> set[str]:
        """The table tasks sent so far."""
        with self.lock:
            return {task_id for task_id, (bucket, _) in self.calls.items() if bucket is not None}


@contextlib.contextmanager
def sending(sent: Sent, tables: dict[int, list[str]], rate: float) -> Iterator[None]:
    """Send table tasks at ``rate`` per second in a thread while the block runs, one bucket
    after the other (every bucket gets one every ``buckets / rate`` seconds)."""
    stop = threading.Event()
    buckets = sorted(tables)

    def loop() -> None:
        began, index = time.monotonic(), 0
        while not stop.is_set():
            sent.table(tables, buckets[index % len(buckets)])
            index += 1
            stop.wait(max(0.0, began + index / rate - time.monotonic()))

    thread = threading.Thread(target=loop, name="bench-sender", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


# -- reading back ----------------------------------------------------------------------------


def epoch_seconds(moment: dt.datetime) -> float:
    """A row's timestamp (UTC; SQLite returns it without a zone) as ``time.time()`` seconds."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def effect_count(engine: Engine, kind: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).where(effect.c.kind == kind)).scalar_one()
        )


def effect_times(engine: Engine, kind: str, since: float) -> list[float]:
    """When each run of ``kind`` wrote its row (the worker's clock), from ``since`` on."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(effect.c.at).where(effect.c.kind == kind, effect.c.at >= since)
        )
        return sorted(at for (at,) in rows)


def repeated(engine: Engine) -> tuple[int, int]:
    """``(runs with more than one committed attempt, runs with more than one effect row)``."""
    with engine.connect() as connection:
        committed = (
            select(TableTaskRun.run_id)
            .where(TableTaskRun.status == RunStatus.COMMITTED)
            .group_by(TableTaskRun.run_id)
            .having(func.count() > 1)
        )
        effects = (
            select(effect.c.run_id)
            .where(effect.c.kind == "table")
            .group_by(effect.c.run_id)
            .having(func.count() > 1)
        )
        return (
            len(connection.execute(committed).all()),
            len(connection.execute(effects).all()),
        )


@dataclass(frozen=True)
class RunRow:
    attempt_id: int
    run_id: str
    bucket_id: int
    node_key: str
    status: str
    started: float
    finished: float | None


def attempts(engine: Engine, after: int = 0, **where: Any) -> list[RunRow]:
    """Attempts in ``table_task_run`` with an ``attempt_id`` above ``after`` (``where``:
    column == value), oldest first."""
    query = select(
        TableTaskRun.attempt_id,
        TableTaskRun.run_id,
        TableTaskRun.bucket_id,
        TableTaskRun.node_key,
        TableTaskRun.status,
        TableTaskRun.started_at,
        TableTaskRun.finished_at,
    ).where(TableTaskRun.attempt_id > after)
    for column, value in where.items():
        query = query.where(getattr(TableTaskRun, column) == value)
    with engine.connect() as connection:
        return [
            RunRow(
                attempt,
                run,
                bucket,
                node,
                status,
                epoch_seconds(started),
                None if finished is None else epoch_seconds(finished),
            )
            for attempt, run, bucket, node, status, started, finished in connection.execute(
                query.order_by(TableTaskRun.attempt_id)
            )
        ]


def last_attempt(engine: Engine) -> int:
    """The newest ``attempt_id`` (0 before the first attempt)."""
    with engine.connect() as connection:
        return int(connection.execute(select(func.max(TableTaskRun.attempt_id))).scalar() or 0)


def committed_ids(engine: Engine) -> set[str]:
    """The runs with a committed attempt."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(TableTaskRun.run_id).where(TableTaskRun.status == RunStatus.COMMITTED)
        )
        return {run for (run,) in rows}


# -- CPU ---------------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(cluster: LocalCluster) -> dict[str, float]:
    """CPU seconds used so far, from ``/proc``: by the running workers' main processes
    (``main``) and pool processes (``pool``), the cluster's Redis (``redis``) and ZooKeeper
    (``zookeeper``), the PostgreSQL server processes serving its database (``database``; SQLite
    runs inside the pool processes), this process (``bench``), and by the whole machine
    (``all``: every process, other users' included, and the kernel)."""
    leaders = {process.pid for process in cluster.processes.values() if process.running}
    # Redis renames its process "/usr/bin/redis-server HOST:PORT"
    redis_title = f"redis-server {urlsplit(cluster.env['ALLOT_BROKER_URL']).netloc}".encode()
    zookeeper_dir = str(cluster.workdir / "zookeeper").encode()
    # a PostgreSQL backend is titled "postgres: CLUSTER: USER DATABASE HOST(PORT) STATE"
    database = f" {cluster.engine.url.database} ".encode()
    used = dict.fromkeys(("pool", "main", "redis", "zookeeper", "database", "bench"), 0.0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            group, pid = int(fields[2]), int(stat.parent.name)
            if group in leaders:  # a worker's process group: its main process and its pool
                part = "main" if pid == group else "pool"
            elif pid == os.getpid():
                part = "bench"
            else:
                command = (stat.parent / "cmdline").read_bytes()
                if redis_title in command:
                    part = "redis"
                elif zookeeper_dir in command:
                    part = "zookeeper"
                elif command.startswith(b"postgres: ") and database in command:
                    part = "database"
                else:
                    continue
        except OSError:
            continue  # ended meanwhile
        used[part] += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    total = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    used["all"] = (sum(total[:8]) - total[3] - total[4]) / CLOCK_TICKS  # busy: not idle, iowait
    return used


# -- the workers' logs -----------------------------------------------------------------------

LOG_LINE = re.compile(
    r"^\[(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] (?P<text>.*)$"
)
HANDOFF_STEPS = {
    "donor drops the queue": re.compile(r"^Canceling queue allot\.\S+\.bucket\.(\d+)$"),
    "donor releases the lease": re.compile(r"^released the lease of bucket (\d+)$"),
    "receiver takes the lease": re.compile(r"^took the lease of bucket (\d+) "),
    "receiver consumes the queue": re.compile(
        r"^Started consuming from allot\.\S+\.bucket\.(\d+)$"
    ),
}
"""The lines a worker logs as a bucket changes hands (allot.work.leases, Celery's consumer)."""


def handoff_steps(
    cluster: LocalCluster, buckets: set[int], since: float
) -> dict[str, dict[int, float]]:
    """When each step of :data:`HANDOFF_STEPS` was first logged for each of ``buckets`` from
    ``since`` on (log lines carry local time to the millisecond)."""
    found: dict[str, dict[int, float]] = {step: {} for step in HANDOFF_STEPS}
    for process in cluster.group.started:
        for line in process.output().splitlines():
            logged = LOG_LINE.match(line)
            if logged is None:
                continue
            for step, pattern in HANDOFF_STEPS.items():
                matched = pattern.match(logged["text"])
                if matched is None or int(matched[1]) not in buckets:
                    continue
                at = dt.datetime.strptime(logged["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                first = found[step].get(int(matched[1]))
                if at >= since and (first is None or at < first):
                    found[step][int(matched[1])] = at
    return found

"""Periodic table work: ``@table_task(every=S)`` runs once per ``S`` seconds for every table.

A table is the unit of fairness. The node serving a bucket sends the bucket's tick,
``allot.work.tick``, into the bucket's queue once per period (:class:`Ticker`, driven by
:class:`~allot.work.leases.BucketWork`; task id ``tick:{task}:{bucket}:{period}``). The tick
only fans out: it reads the bucket's tables from SQL and sends the table task itself, once per
table, into the same queue, with the task id ``{task}:{table_id}:{period}``
(:func:`period_run_id`, also the run id); the worker's pool runs those messages side by side,
so a slow table delays no other table's period.

A table whose previous periodic run has not finished skips the period. Which period each table
was last sent is kept in Redis, one hash per task and bucket (:class:`PeriodLedger`, shared by
every node, so a bucket's new owner knows its predecessor's run in flight); a run has finished
when Celery stored its result (success or failure). The tick claims the tables it sends in one
optimistic Redis transaction, so two ticks of one period (a tick delivered twice, two owners
around a handoff) send each table's run once; :func:`due_tables` is the decision. A run whose
result never shows up (expired, lost with Redis, a tick killed between its claim and its
sends) holds its table back for one period plus ``ALLOT_REDELIVERY_TIMEOUT`` at most.

Periods come from each node's wall clock (``period = int(time // every)``); a tick of a period
older than its table's last claimed one sends nothing. ``docs/table-work.md`` has the cases.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from celery import Celery, Task, shared_task
from celery.exceptions import Reject
from celery.states import READY_STATES
from kombu.exceptions import OperationalError
from redis import Redis, WatchError
from redis.exceptions import RedisError

from allot.names import TableName
from allot.registry import list_tables
from allot.work.database import work_sql
from allot.work.queues import bucket_queue
from allot.work.task import table_tasks

log = logging.getLogger(__name__)

TICK_TASK = "allot.work.tick"


def tick_id(task: str, bucket_id: int, period: int) -> str:
    """The Celery task id of the tick of ``task`` for ``bucket_id`` in ``period``."""
    return f"tick:{task}:{bucket_id}:{period}"


def period_run_id(task: str, table_id: int, period: int) -> str:
    """The task id and run id of ``task`` on table ``table_id`` in ``period``: the same on
    every node, so the committed-run index lets one period of a table commit once."""
    return f"{task}:{table_id}:{period}"


def due_tables(
    tables: Iterable[int],
    period: int,
    last: Mapping[int, int],
    finished: Collection[int],
    every: float,
    patience: float,
) -> list[int]:
    """The tables of ``tables`` whose run of ``period`` is to be sent.

    ``last`` maps a table to the last period whose run was sent for it; ``finished`` holds the
    tables whose last run has finished. A table is due when no run was sent for it, or its last
    run is of an earlier period and has finished, or was sent more than ``every + patience``
    seconds ago (its result is taken as lost). A table whose last run is of ``period`` or later
    is never due (a tick delivered twice, or late)."""
    due = []
    for table in tables:
        previous = last.get(table)
        if previous is None:
            due.append(table)
        elif previous >= period:
            continue
        elif table in finished or (period - previous) * every > every + patience:
            due.append(table)
    return due


class PeriodLedger:
    """The period each table was last sent a periodic run, in Redis: one hash per task and
    bucket, ``allot:{cluster}:periodic:{task}:{bucket}`` (field table id, value period),
    expiring unless a tick touches it within ``ttl`` seconds.

    Redis unreachable: :meth:`claim` raises ``RedisError`` and nothing is sent (the tick goes
    back to its queue). Hash lost (a Redis restart without persistence): every table is due at
    its next tick; a run still in flight may then overlap the next period's.
    """

    def __init__(self, client: Redis, cluster: str, ttl: float) -> None:
        self.client = client
        self.cluster = cluster
        self.ttl = max(int(ttl), 1)

    def key(self, task: str, bucket_id: int) -> str:
        """The hash of ``task`` on ``bucket_id``."""
        return f"allot:{self.cluster}:periodic:{task}:{bucket_id}"

    def claim(
        self,
        task: str,
        bucket_id: int,
        period: int,
        decide: Callable[[Mapping[int, int]], list[int]],
    ) -> list[int]:
        """Record ``period`` for the tables ``decide(last)`` returns (``last``: the hash as it
        is), atomically: a concurrent claim on the same hash makes this one read it again and
        decide anew. Returns the tables claimed.

        Raises:
            RedisError: Redis cannot be reached (nothing claimed).
        """
        key = self.key(task, bucket_id)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.hgetall(key)
                    chosen = decide({int(table): int(last) for table, last in raw.items()})
                    pipe.multi()
                    if chosen:
                        pipe.hset(key, mapping={str(table): str(period) for table in chosen})
                    pipe.expire(key, self.ttl)
                    pipe.execute()
                    return chosen
                except WatchError:
                    continue

    def restore(self, task: str, bucket_id: int, previous: Mapping[int, int | None]) -> None:
        """Give tables claimed but not sent their previous period back (None: no entry), so
        the tick sent back claims them again; best effort (Redis may be down: then they wait
        for their patience)."""
        key = self.key(task, bucket_id)
        try:
            with self.client.pipeline() as pipe:
                for table, period in previous.items():
                    if period is None:
                        pipe.hdel(key, str(table))
                    else:
                        pipe.hset(key, str(table), str(period))
                pipe.execute()
        except RedisError as exc:
            log.warning(
                "could not give back the claims of %s on bucket %d: %s", task, bucket_id, exc
            )


def finished_runs(app: Celery, run_ids: Mapping[int, str]) -> set[int]:
    """The tables of ``run_ids`` (table -> task id) whose run has a stored result (success or
    failure): one ``MGET`` on a Redis result backend, one read per run on another."""
    if not run_ids:
        return set()
    backend = app.backend
    client = getattr(backend, "client", None)
    if isinstance(client, Redis) and hasattr(backend, "get_key_for_task"):
        tables = list(run_ids)
        keys = [backend.get_key_for_task(run_ids[table]) for table in tables]
        done = set()
        for table, raw in zip(tables, client.mget(keys), strict=True):
            if raw is not None and backend.decode_result(raw).get("status") in READY_STATES:
                done.add(table)
        return done
    return {table for table, run in run_ids.items() if app.AsyncResult(run).ready()}


def ledger_client(app: Celery) -> Redis:
    """The Redis of the ledger: the result backend's client, else one on the broker's URL."""
    client = getattr(app.backend, "client", None)
    if isinstance(client, Redis):
        return client
    return Redis.from_url(app.conf.broker_url)


class Ticker:
    """Sends the ticks of the buckets a node serves (called from the lease loop): one per
    task, bucket and period, the first pass of each period; the tick decides per table."""

    def __init__(
        self,
        app: Celery,
        cluster: str,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.cluster = cluster
        self._wall = wall
        self._last: dict[tuple[str, int], int] = {}

    def tick(self, serving: frozenset[int]) -> int:
        """Send the ticks that are due; returns how many were sent."""
        sent = 0
        now = self._wall()
        for name, spec in table_tasks().items():
            if spec.every is None:
                continue
            period = int(now // spec.every)
            for bucket in sorted(serving):
                if self._last.get((name, bucket), period - 1) >= period:
                    continue
                self.app.send_task(
                    TICK_TASK,
                    kwargs={"task": name, "bucket_id": bucket, "period": period},
                    queue=bucket_queue(self.cluster, bucket),
                    task_id=tick_id(name, bucket, period),
                )
                self._last[(name, bucket)] = period
                sent += 1
        for key in [key for key in self._last if key[1] not in serving]:
            del self._last[key]
        return sent


@shared_task(name=TICK_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def tick(self: Task, task: str, bucket_id: int, period: int) -> dict[str, Any]:
    """Send ``task``'s run of ``period`` to every table of ``bucket_id`` whose previous run
    has finished (:func:`due_tables`); returns how many tables, sent and skipped.

    Raises:
        Reject: Redis or the broker could not be reached: the tick goes back to its queue
            (tables already sent are claimed and not sent again).
    """
    spec = table_tasks().get(task)
    if spec is None or spec.every is None:
        log.error("tick for unknown table task %s: is it in ALLOT_TASK_MODULES?", task)
        return {"task": task, "error": "unknown table task"}
    every = spec.every
    sql = work_sql()
    with sql.sessions() as session:
        rows = list_tables(session, bucket_id=bucket_id)
    names: dict[int, TableName] = {}
    for table_id, catalog, db, table, bucket in rows:
        names[table_id] = TableName(catalog, db, table)
        sql.tables[names[table_id]] = (table_id, bucket)
    patience = sql.settings.redelivery_timeout
    ledger = PeriodLedger(ledger_client(self.app), sql.settings.cluster, 4 * every + patience)

    seen: dict[int, int] = {}

    def decide(last: Mapping[int, int]) -> list[int]:
        seen.clear()
        seen.update(last)
        pending = {
            table: period_run_id(task, table, previous)
            for table, previous in last.items()
            if table in names and previous < period
        }
        finished = finished_runs(self.app, pending)
        return due_tables(names, period, last, finished, every, patience)

    queue = bucket_queue(sql.settings.cluster, bucket_id)
    due: list[int] = []
    sent: list[int] = []
    try:
        due = ledger.claim(task, bucket_id, period, decide)
        with self.app.producer_or_acquire() as producer:
            for table_id in due:
                sent.append(table_id)
                self.app.send_task(
                    task,
                    args=[str(names[table_id])],
                    queue=queue,
                    task_id=period_run_id(task, table_id, period),
                    producer=producer,
                )
    except (RedisError, OperationalError) as exc:  # kombu's, after its retries
        log.warning("tick %s of bucket %d could not send its runs: %s", task, bucket_id, exc)
        ledger.restore(task, bucket_id, {t: seen.get(t) for t in due[len(sent) - 1 :]})
        raise Reject(exc, requeue=True) from None
    return {
        "task": task,
        "bucket_id": bucket_id,
        "period": period,
        "tables": len(names),
        "sent": len(due),
        "skipped": len(names) - len(due),
    }

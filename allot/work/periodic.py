"""Periodic table work: ``@table_task(every=S)`` runs once per ``S`` seconds for every table.

The node serving a bucket sends the bucket's tick, ``allot.work.tick``, into the bucket's
queue once per period (:class:`Ticker`, driven by :class:`~allot.work.leases.BucketWork`):
one message per bucket per period, whoever owns the bucket. The tick reads the bucket's tables
from SQL (a node loads only its own tables) and runs the task for each, one run per table per
period (run id ``{task}:{table_id}:{period}``), so a tick delivered twice, or sent by two
owners around a handoff, commits each table's run once.

A period is not doubled: a tick is sent only when the same node's previous tick of that task
and bucket has finished (its result is ready); while it runs, the periods it overlaps are
skipped. A node that takes a bucket over does not know its predecessor's tick, which may
still be in the queue: it runs after it, never beside it (one bucket, one consumer).

Periods come from each node's wall clock (``period = int(time // every)``): nodes whose clocks
disagree by less than a period agree on it; around a handoff to a node whose clock is behind,
a period may be ticked again, and its runs (same ids) commit nothing twice; to one whose clock
is ahead, a period may be skipped. ``docs/table-work.md`` has the case.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Celery, Task, shared_task
from celery.result import AsyncResult

from allot.errors import Fenced
from allot.names import TableName
from allot.registry import list_tables
from allot.work.database import work_sql
from allot.work.queues import bucket_queue
from allot.work.run import NotHere, execute, node_key_of, requeue
from allot.work.task import table_tasks

log = logging.getLogger(__name__)

TICK_TASK = "allot.work.tick"


def tick_id(task: str, bucket_id: int, period: int) -> str:
    """The Celery task id of the tick of ``task`` for ``bucket_id`` in ``period``."""
    return f"tick:{task}:{bucket_id}:{period}"


def period_run_id(task: str, table_id: int, period: int) -> str:
    """The run id of ``task`` on table ``table_id`` in ``period``: the same on every node, so
    the committed-run index lets one period of a table commit once, whichever nodes tick it."""
    return f"{task}:{table_id}:{period}"


class Ticker:
    """Sends the ticks of the buckets a node serves (called from the lease loop)."""

    def __init__(
        self,
        app: Celery,
        cluster: str,
        wall: Callable[[], float] = time.time,
        patience: float = 300.0,
    ) -> None:
        self.app = app
        self.cluster = cluster
        self._wall = wall
        self.patience = patience
        """Seconds beyond a period after which an unfinished tick no longer holds back the next
        (its result may be gone: expired, lost with Redis): the redelivery timeout."""
        self._last: dict[tuple[str, int], tuple[int, str, float]] = {}

    def tick(self, serving: frozenset[int]) -> int:
        """Send the ticks that are due; returns how many were sent."""
        sent = 0
        now = self._wall()
        for name, spec in table_tasks().items():
            if spec.every is None:
                continue
            period = int(now // spec.every)
            for bucket in sorted(serving):
                last = self._last.get((name, bucket))
                if last is not None and last[0] >= period:
                    continue
                if (
                    last is not None
                    and now - last[2] < spec.every + self.patience
                    and not AsyncResult(last[1], app=self.app).ready()
                ):
                    continue  # the previous period still runs: this one is skipped
                task_id = tick_id(name, bucket, period)
                self.app.send_task(
                    TICK_TASK,
                    kwargs={"task": name, "bucket_id": bucket, "period": period},
                    queue=bucket_queue(self.cluster, bucket),
                    task_id=task_id,
                )
                self._last[(name, bucket)] = (period, task_id, now)
                sent += 1
        for key in [key for key in self._last if key[1] not in serving]:
            del self._last[key]
        return sent


@shared_task(name=TICK_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def tick(self: Task, task: str, bucket_id: int, period: int) -> dict[str, Any]:
    """Run ``task`` once for every table of ``bucket_id`` in ``period``."""
    spec = table_tasks().get(task)
    if spec is None:
        log.error("tick for unknown table task %s: is it in ALLOT_TASK_MODULES?", task)
        return {"task": task, "error": "unknown table task"}
    sql = work_sql()
    node_key = node_key_of(sql.settings, self.request.hostname)
    with sql.sessions() as session:
        rows = list_tables(session, bucket_id=bucket_id)
    counts = {"tables": len(rows), "ran": 0, "failed": 0}
    for table_id, catalog, db, table, bucket in rows:
        name = TableName(catalog, db, table)
        sql.tables[name] = (table_id, bucket)
        try:
            execute(sql, spec, name, period_run_id(task, table_id, period), node_key, {})
            counts["ran"] += 1
        except (NotHere, Fenced) as exc:
            # sent back whole (rejected back to its queue if the broker refuses: the period
            # is not lost); the tables that ran commit nothing again (their run ids)
            requeue(self, repr(exc), bucket_queue(sql.settings.cluster, bucket_id))
        except Exception:
            counts["failed"] += 1
            log.exception("%s on %s failed in period %d", task, name, period)
    return {"task": task, "bucket_id": bucket_id, "period": period, **counts}

"""The Celery application, configured from allot's settings.

``celery -A tasks worker|beat|flower`` finds :data:`app` here. Serialization is JSON only, task
events are on (``worker_send_task_events``, ``task_send_sent_event``) so Flower sees every run,
and the beat schedule runs ``allot.assign`` every ``ALLOT_ASSIGN_INTERVAL`` seconds with an
``expires`` shorter than the interval (a backlog of stale ticks never piles up), and
``allot.prune`` every :data:`PRUNE_INTERVAL` seconds (:mod:`allot.history`).

Table work (:mod:`allot.work`): the app loads the modules of ``ALLOT_TASK_MODULES``, routes
every table task to its bucket's queue (``task_routes``), lets each worker consume the bucket
queues its leases allow (the :class:`~allot.work.consumer.BucketQueues` consumer step), polls
Redis every 0.1 s so a queue added at run time is read at once, and has Redis hand a message
taken by a killed worker to another after ``ALLOT_REDELIVERY_TIMEOUT`` (plus one sweep,
:func:`restore_interval`).
"""

from __future__ import annotations

import sys

from celery import Celery

from allot.errors import ConfigurationError
from allot.metrics.instruments import record_table_task
from allot.settings import Settings, get_settings
from allot.work.consumer import BucketQueues
from allot.work.routing import route
from allot.work.run import attempt_ended

TASK_MODULES = ["tasks.assign", "tasks.node", "tasks.prune", "allot.work.periodic"]

REDIS_POLLING_INTERVAL = 0.1
"""Seconds a Redis read blocks before the worker looks at its queue list again: a bucket queue
added at run time is consumed within this (docs/bucket-queues.md)."""


PRUNE_INTERVAL = 300.0
"""Seconds between two ``allot.prune`` runs from beat (each spends at most a minute)."""


def beat_schedule(settings: Settings) -> dict[str, dict[str, object]]:
    """The beat entries: the assignment cycle, and the pruning of the history."""
    interval = settings.assign_interval
    return {
        "allot-assign": {
            "task": "allot.assign",
            "schedule": interval,
            "kwargs": {"trigger": "beat"},
            "options": {"expires": max(interval * 0.9, 0.5)},
        },
        "allot-prune": {
            "task": "allot.prune",
            "schedule": PRUNE_INTERVAL,
            "options": {"expires": PRUNE_INTERVAL * 0.9},
        },
    }


def restore_interval(redelivery_timeout: float) -> float:
    """Seconds between two sweeps for messages whose worker died: a fifth of the redelivery
    timeout, between 1 and 10 s, so such a message is back within 1.2 times that timeout."""
    return min(10.0, max(1.0, redelivery_timeout / 5))


def create_app(settings: Settings | None = None) -> Celery:
    """Build the Celery app from ``settings`` (default: the environment)."""
    settings = settings or get_settings()
    celery_app = Celery("allot", include=TASK_MODULES + settings.task_module_names)
    celery_app.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.celery_result_backend,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        worker_prefetch_multiplier=1,
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        beat_schedule=beat_schedule(settings),
        task_routes=(route,),
        broker_transport_options={
            "polling_interval": REDIS_POLLING_INTERVAL,
            "visibility_timeout": settings.redelivery_timeout,
            # sweep for messages of killed workers every interval (kombu's default scans only
            # every 10th sweep of 10 s: a message could wait 100 s past its timeout)
            "unacked_restore_interval": restore_interval(settings.redelivery_timeout),
            "unacked_restore_throttle": 1,
        },
        allot_cluster=settings.cluster,
    )
    celery_app.steps["consumer"].add(BucketQueues)
    return celery_app


def _app_or_exit() -> Celery:
    """:func:`create_app`, or one line on stderr and exit status 2 for a bad setting: a worker,
    beat or Flower started with, say, ``ALLOT_NODE_WEIGHT=abc`` says which setting is wrong
    instead of printing a traceback."""
    try:
        return create_app()
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


app = _app_or_exit()


@attempt_ended.connect
def _count_attempt(sender: object = None, *, task: str, status: str, **_: object) -> None:
    """Count each table task attempt's end in the node's metrics (:mod:`allot.metrics`)."""
    record_table_task(task, status)

"""The Celery application, configured from allot's settings.

``celery -A tasks worker|beat|flower`` finds :data:`app` here. Serialization is JSON only, task
events are on (``worker_send_task_events``, ``task_send_sent_event``) so Flower sees every run,
and the beat schedule runs ``allot.assign`` every ``ALLOT_ASSIGN_INTERVAL`` seconds with an
``expires`` shorter than the interval (a backlog of stale ticks never piles up).
"""

from __future__ import annotations

import sys

from celery import Celery

from allot.errors import ConfigurationError
from allot.settings import Settings, get_settings

TASK_MODULES = ["tasks.assign", "tasks.node"]


def beat_schedule(settings: Settings) -> dict[str, dict[str, object]]:
    """The beat entry of the assignment cycle."""
    interval = settings.assign_interval
    return {
        "allot-assign": {
            "task": "allot.assign",
            "schedule": interval,
            "kwargs": {"trigger": "beat"},
            "options": {"expires": max(interval * 0.9, 0.5)},
        }
    }


def create_app(settings: Settings | None = None) -> Celery:
    """Build the Celery app from ``settings`` (default: the environment)."""
    settings = settings or get_settings()
    celery_app = Celery("allot", include=TASK_MODULES)
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
    )
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

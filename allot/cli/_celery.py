"""Sending a task to the workers from the command line and waiting for its result.

The CLI sends tasks by name through a client-only Celery app of its own: it never imports the
workers' app (``tasks``), which sits above the domain."""

from __future__ import annotations

from typing import Any

from allot.cli._context import cli_config
from allot.errors import AllotError, ServiceError


def call_task(name: str, kwargs: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send task ``name`` through the broker and wait up to ``timeout`` s for its result.

    Raises:
        ServiceError: the broker cannot be reached, no worker answered in time, or the task
            failed (the message carries the worker's error).
    """
    from celery import Celery
    from celery.exceptions import TimeoutError as CeleryTimeout
    from kombu.exceptions import OperationalError

    settings = cli_config().settings
    app = Celery("allot-cli", broker=settings.broker_url, backend=settings.celery_result_backend)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_send_sent_event=True,  # Flower lists the task as sent by the CLI
    )
    try:
        result = app.send_task(name, kwargs=kwargs)
    except Exception as exc:  # kombu's OperationalError, or the backend's retry giving up
        raise ServiceError(
            f"cannot reach the broker at {settings.broker_url} ({exc}): is Redis running?"
        ) from None
    try:
        value = result.get(timeout=timeout, propagate=True)
    except CeleryTimeout:
        result.forget()
        raise ServiceError(
            f"no worker answered {name} within {timeout:g} s: are workers running "
            "(`celery -A tasks worker`)? The task stays queued until one takes it."
        ) from None
    except (OperationalError, ConnectionError, RuntimeError) as exc:
        raise ServiceError(f"lost the result backend while waiting for {name}: {exc}") from None
    except AllotError:
        raise
    except Exception as exc:
        raise ServiceError(f"{name} failed on the worker: {type(exc).__name__}: {exc}") from None
    if not isinstance(value, dict):
        raise ServiceError(f"{name} returned {value!r} instead of a report")
    return value

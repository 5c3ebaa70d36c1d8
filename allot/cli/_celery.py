"""Sending a task to the workers from the command line and waiting for its result.

The CLI sends tasks by name through a client-only Celery app of its own: it never imports the
workers' app (``tasks``), which sits above the domain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from allot.cli._context import cli_config
from allot.errors import AllotError, ServiceError

CONNECT_RETRY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.3, "interval_max": 0.3}
"""How the CLI retries reaching the broker and the result backend before it says it cannot."""


def send_task(
    name: str,
    *,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
) -> Any:
    """Send task ``name`` through the broker (to ``queue``, or the default queue) and return
    its Celery ``AsyncResult`` without waiting.

    Raises:
        ServiceError: the broker cannot be reached; nothing was sent.
    """
    from celery import Celery

    settings = cli_config().settings
    app = Celery("allot-cli", broker=settings.broker_url, backend=settings.celery_result_backend)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_send_sent_event=True,  # Flower lists the task as sent by the CLI
        # a person is waiting: give up on an unreachable Redis after about a second, not 20 s
        result_backend_transport_options={"retry_policy": CONNECT_RETRY},
        task_publish_retry_policy=CONNECT_RETRY,
    )
    options = {} if queue is None else {"queue": queue}
    try:
        return app.send_task(name, args=list(args), kwargs=kwargs or {}, **options)
    except Exception as exc:  # kombu's OperationalError, or the backend's retry giving up
        reason = " ".join(str(exc).split())  # one line: some of these span several
        raise ServiceError(
            f"cannot reach the broker at {settings.broker_url} ({reason}): is Redis running?"
        ) from None


def wait_for(result: Any, name: str, timeout: float) -> Any:
    """Wait up to ``timeout`` s for the result of a sent task (:func:`send_task`) and return
    it (any JSON value).

    Raises:
        ServiceError: no worker answered in time (the task stays queued), the result backend
            was lost, or the task failed (the message carries the worker's error).
        AllotError: the task raised one on the worker (raised again here as it was).
    """
    from celery.exceptions import TimeoutError as CeleryTimeout
    from kombu.exceptions import OperationalError

    try:
        value = result.get(timeout=timeout, propagate=False)
    except CeleryTimeout:
        result.forget()
        raise ServiceError(
            f"no worker answered {name} within {timeout:g} s: are workers running "
            "(`celery -A tasks worker`)? The task stays queued until one takes it."
        ) from None
    except (OperationalError, ConnectionError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())
        raise ServiceError(f"lost the result backend while waiting for {name}: {reason}") from None
    if isinstance(value, AllotError):
        raise value  # an allot error the worker raised says what went wrong itself
    if isinstance(value, BaseException) or result.failed():
        reason = " ".join(str(value).split())
        raise ServiceError(f"{name} failed on the worker: {type(value).__name__}: {reason}")
    return value


def call_task(name: str, kwargs: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send task ``name`` to the default queue and wait up to ``timeout`` s for its report.

    Raises:
        ServiceError: as :func:`send_task` and :func:`wait_for`, or the task returned
            something other than a report (a JSON object).
    """
    value = wait_for(send_task(name, kwargs=kwargs), name, timeout)
    if not isinstance(value, dict):
        raise ServiceError(f"{name} returned {value!r} instead of a report")
    return value

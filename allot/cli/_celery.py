"""Sending a task to the workers from the command line and waiting for its result."""

from __future__ import annotations

from typing import Any

from allot.errors import AllotError, ServiceError
from allot.settings import load_settings


def call_task(name: str, kwargs: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send task ``name`` through the broker and wait up to ``timeout`` s for its result.

    Raises:
        ServiceError: the broker cannot be reached, no worker answered in time, or the task
            failed (the message carries the worker's error).
    """
    from celery.exceptions import TimeoutError as CeleryTimeout
    from kombu.exceptions import OperationalError

    from tasks.app import create_app

    settings = load_settings()
    app = create_app(settings)
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

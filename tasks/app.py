"""The Celery application, configured from allot's settings."""

from __future__ import annotations

from celery import Celery

from allot.settings import get_settings


def create_app() -> Celery:
    """Build the Celery app from the current settings (broker, backend, serialization, events)."""
    settings = get_settings()
    celery_app = Celery("allot")
    celery_app.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.celery_result_backend,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
    )
    return celery_app


app = create_app()

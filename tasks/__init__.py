"""The Celery side of allot: ``celery -A tasks worker|beat|flower``.

The app is configured from :mod:`allot.settings` (broker, result backend) with JSON
serialization and task events on, so Flower sees every run.
"""

from tasks.app import app

__all__ = ["app"]

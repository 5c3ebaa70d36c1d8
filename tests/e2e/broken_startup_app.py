"""The allot Celery app with a fault injected into the worker's start-up hook: the node
registers, then joining the trigger duty fails with an unexpected error
(``celery -A tests.e2e.broken_startup_app worker``)."""

from __future__ import annotations

from typing import Any

import tasks.node
from tasks import app


class _BrokenDuty:
    def __init__(self, *_: Any, **__: Any) -> None:
        raise RuntimeError("injected fault: the trigger duty cannot start")


tasks.node.TriggerDuty = _BrokenDuty  # type: ignore[attr-defined,assignment]

__all__ = ["app"]

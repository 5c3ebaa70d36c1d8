"""The allot Celery app with a fault injected: the first cycle that reaches ZooKeeper kills its
process before the SQL mirror (``celery -A tests.e2e.crashing_app worker``)."""

from __future__ import annotations

import os
from pathlib import Path

import tasks.runtime
from allot.cycle import CycleHooks
from tasks import app

MARKER = Path(os.environ["ALLOT_E2E_CRASH_MARKER"])


def _crash_once(plan_id: str) -> None:
    if not MARKER.exists():
        MARKER.write_text(plan_id)
        os._exit(70)


tasks.runtime.cycle_hooks = CycleHooks(after_zookeeper=_crash_once)

__all__ = ["app"]

"""The allot Celery app with a pause injected, so a test can freeze a cycle at an exact point.

``celery -A tests.e2e.pausing_app worker`` with

- ``ALLOT_E2E_PAUSE_AT`` naming a :class:`~allot.cycle.CycleHooks` field (``after_lock`` or
  ``before_catch_up``) and ``ALLOT_E2E_PAUSE_DIR`` a directory: the first cycle of the process
  that reaches that point writes ``paused`` there (holding its pid) and waits until the test
  writes ``go``. The test freezes the process (SIGSTOP) meanwhile, lets its ZooKeeper session
  expire, moves the cluster on, then resumes it;
- or ``ALLOT_E2E_HOLD_LOCK`` (seconds): every cycle holds the lock that long after taking it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import tasks.runtime
from allot.cycle import CycleHooks
from tasks import app


def _pause_once(*_: Any) -> None:
    directory = Path(os.environ["ALLOT_E2E_PAUSE_DIR"])
    paused, go = directory / "paused", directory / "go"
    if paused.exists():
        return
    paused.write_text(str(os.getpid()))
    while not go.exists():
        time.sleep(0.05)


def _hold(*_: Any) -> None:
    time.sleep(float(os.environ["ALLOT_E2E_HOLD_LOCK"]))


if "ALLOT_E2E_HOLD_LOCK" in os.environ:
    tasks.runtime.cycle_hooks = CycleHooks(after_lock=_hold)
else:
    tasks.runtime.cycle_hooks = CycleHooks(**{os.environ["ALLOT_E2E_PAUSE_AT"]: _pause_once})

__all__ = ["app"]

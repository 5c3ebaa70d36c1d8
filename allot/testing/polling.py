"""Waiting for events, for tests and benchmarks: poll until a condition holds, or repeat a
step in a background thread while a block of code runs.

A test waits for the event that proves a thing happened (the znode, the row, the cycle
report); a benchmark polls at a fixed, fine interval because the wait is its measurement.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None],
    what: str,
    timeout: float,
    *,
    interval: float | None = None,
    failed: Callable[[], str | None] | None = None,
    details: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    Without ``interval`` the first retry comes after 50 ms and the delay doubles up to 0.5 s;
    with it, ``predicate`` is polled every ``interval`` seconds. ``failed`` is asked after each
    falsy answer and ends the wait at once when it names a reason (``"node1 exited"``).

    Raises:
        AssertionError: at the deadline, or when ``failed`` names a reason; the message says
            why, names ``what`` and ends with ``details()``.
    """
    deadline = time.monotonic() + timeout
    delay = 0.05 if interval is None else interval
    while True:
        value = predicate()
        if value:
            return value
        reason = failed() if failed is not None else None
        if reason is None and time.monotonic() > deadline:
            reason = f"timed out after {timeout:g} s"
        if reason is not None:
            shown = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"{reason} waiting for {what}{shown}")
        time.sleep(delay)
        if interval is None:
            delay = min(delay * 2, 0.5)


@contextlib.contextmanager
def repeating(
    step: Callable[[], object], interval: float, *, join_timeout: float = 5.0
) -> Iterator[None]:
    """Call ``step()`` at once and then every ``interval`` seconds in a daemon thread, until
    the block ends; then stop the thread and wait up to ``join_timeout`` seconds for it.

    An exception raised by ``step`` ends the thread (Python reports it); catch in ``step``
    what may fail and should not end the repetition.
    """
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            step()
            stop.wait(interval)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(join_timeout)

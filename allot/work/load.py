"""Measuring bucket load on a node: the seconds its table work takes per bucket, summed over a
sliding window and published to ZooKeeper for strategy ``load`` (DESIGN.md, "Assignment by
measured work").

Three parts, none of them in a run's SQL transaction:

- :class:`LoadMeter`: one cumulative total of seconds per bucket, in memory shared by the
  worker's main process and its pool processes (an anonymous shared ``mmap`` of doubles,
  created in the main process before the pool forks, like :mod:`allot.work.tokens`; a solo or
  threads pool shares it as any object). :func:`allot.work.run.execute` adds a run's elapsed
  seconds (the body and its commit) when the body ran, whatever its outcome (committed,
  failed, fenced); a message sent back before its body ran costs nothing.
- :class:`LoadWindow`: in the main process, a ring of the totals' increments, one per
  ``ALLOT_LOAD_PUBLISH_INTERVAL``, whose sum is the seconds of the last ``ALLOT_LOAD_WINDOW``;
  memory grows with the buckets that ran work in an interval, never with the runs.
- :class:`LoadReporter`: a thread of the main process that every interval turns the totals
  into the window's sums and publishes them (only when changed) to ``{root}/load/{nodeKey}``
  (:class:`allot.zk.load.LoadPublisher`).

Bounds: a run counts in the interval in which it ended, all of it (a run longer than the
window is counted whole when it ends), so the window's edges are exact to one publish
interval; what a cycle reads is at most one interval stale; a restarted worker starts with an
empty window (its buckets read light until it has run a window's work again); a measurement
whose adder cannot take the meter's lock within :data:`LOCK_SECONDS` (another process died
holding it) is dropped and logged, never blocking a run.

Concurrency: adders (pool processes, threads) add under one ``multiprocessing.Lock`` created
with the meter, so additions are never lost; the main process reads the totals without the
lock, each an aligned 8-byte double read whole (a read sees a total before or after an
addition, and totals only grow).
"""

from __future__ import annotations

import collections
import logging
import mmap
import multiprocessing
import threading
import time
from collections.abc import Callable, Mapping

from allot.zk.load import LoadPublisher

log = logging.getLogger(__name__)

WORD_BYTES = 8
LOCK_SECONDS = 1.0
"""How long an adder waits for the meter's lock before it drops its measurement."""
_VANISHING = 1e-9
"""Sums at or below this are rounding residue of a bucket whose runs all left the window."""


class LoadMeter:
    """Cumulative seconds of table work per bucket ``1..bucket_count``, shared with every
    process forked after it was created. Add with :meth:`add`; read with :meth:`totals`."""

    def __init__(self, bucket_count: int) -> None:
        if bucket_count < 1:
            raise ValueError(f"bucket count must be positive, not {bucket_count}")
        self.bucket_count = bucket_count
        self._memory = mmap.mmap(-1, WORD_BYTES * (bucket_count + 1))  # zeros, shared
        self._seconds = memoryview(self._memory).cast("d")
        self._lock = multiprocessing.Lock()

    def add(self, bucket: int, seconds: float) -> bool:
        """Add ``seconds`` (>= 0) of work to ``bucket``; False when it was not counted (a
        bucket without a slot, a negative time, or the lock not taken in time)."""
        if not 1 <= bucket <= self.bucket_count or not seconds >= 0:
            return False
        if not self._lock.acquire(timeout=LOCK_SECONDS):
            log.warning(
                "bucket %d: its load meter stayed locked; %.3f s not counted", bucket, seconds
            )
            return False
        try:
            self._seconds[bucket] += seconds
        finally:
            self._lock.release()
        return True

    def totals(self) -> dict[int, float]:
        """Every bucket's cumulative seconds since the meter was made (buckets with none left
        out)."""
        values = self._seconds.tolist()
        return {bucket: value for bucket, value in enumerate(values) if bucket and value > 0}


class LoadWindow:
    """The seconds per bucket over the last ``window`` seconds, from successive readings of
    cumulative totals (:meth:`observe`). Not thread-safe: one thread observes."""

    def __init__(self, window: float) -> None:
        if not window > 0:
            raise ValueError(f"the load window must be positive, not {window}")
        self.window = window
        self._last: dict[int, float] = {}
        self._ring: collections.deque[tuple[float, dict[int, float]]] = collections.deque()
        self._sums: dict[int, float] = {}
        self._present: collections.Counter[int] = collections.Counter()

    def observe(self, now: float, totals: Mapping[int, float]) -> dict[int, float]:
        """Take the cumulative ``totals`` read at monotonic time ``now``; return the seconds
        per bucket added within ``(now - window, now]`` (every bucket that ran work then,
        owned or not), ascending by bucket."""
        increment = {
            bucket: total - self._last.get(bucket, 0.0)
            for bucket, total in totals.items()
            if total > self._last.get(bucket, 0.0)
        }
        self._last = dict(totals)
        if increment:
            self._ring.append((now, increment))
            for bucket, seconds in increment.items():
                self._sums[bucket] = self._sums.get(bucket, 0.0) + seconds
                self._present[bucket] += 1
        while self._ring and self._ring[0][0] <= now - self.window:
            _, old = self._ring.popleft()
            for bucket, seconds in old.items():
                self._present[bucket] -= 1
                if self._present[bucket] == 0:
                    del self._present[bucket], self._sums[bucket]
                else:
                    self._sums[bucket] = max(self._sums[bucket] - seconds, _VANISHING)
        return dict(sorted(self._sums.items()))


class LoadReporter:
    """The main process's thread publishing this node's load every ``interval`` seconds.

    Failure modes: publishing is best effort (:class:`~allot.zk.load.LoadPublisher`: nothing
    is written while the session is suspended, an error is logged and the next interval tries
    again, a new session gets its ephemeral znode again); an unexpected error is logged and
    the thread goes on; :meth:`stop` ends it within one interval.
    """

    def __init__(
        self,
        meter: LoadMeter,
        publisher: LoadPublisher,
        *,
        window: float,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.meter = meter
        self.publisher = publisher
        self.window = LoadWindow(window)
        self.interval = interval
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def report(self) -> dict[int, float]:
        """Read the meter, slide the window and publish it when it changed; the window's
        sums."""
        sums = self.window.observe(self.clock(), self.meter.totals())
        self.publisher.publish(self.window.window, sums)
        return sums

    def start(self) -> None:
        """Report now and then every interval, in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="allot-load", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reporting (the znode goes with the session)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 1)

    def _run(self) -> None:
        while True:
            try:
                self.report()
            except Exception:
                log.exception("could not report this node's load")
            if self._stop.wait(self.interval):
                return


_node_load: LoadMeter | None = None
"""This worker's meter, made in its main process before the pool forks (None outside a
worker, or when it could not be made)."""


def share_node_load(bucket_count: int) -> LoadMeter:
    """This worker's meter, created in its main process before the pool starts (once: a
    second call returns the first meter, which the pool may already share)."""
    global _node_load
    if _node_load is None:
        _node_load = LoadMeter(bucket_count)
    return _node_load


def node_load() -> LoadMeter | None:
    """This worker's meter (None outside a worker: runs there are not measured)."""
    return _node_load

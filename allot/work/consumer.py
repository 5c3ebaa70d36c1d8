"""The worker's side of bucket queues: consume exactly the queues :mod:`allot.work.leases` asks.

:class:`BucketQueues` is a consumer bootstep. Whatever thread decides the set of buckets to
serve calls :meth:`BucketQueues.serve`; the set is stored and one reconcile is scheduled on the
worker's event loop with ``consumer.call_soon`` (thread-safe in kombu 5.7; calling
``add_task_queue`` / ``cancel_task_queue`` from another thread is not). The reconcile compares
the wanted set with what the task consumer consumes and cancels, then adds, the difference in
one go: separate add and cancel callbacks queued in one tick run in no guaranteed order.
:meth:`start` runs on every broker (re)connection, after Celery rebuilt the task consumer from
the selected queues, and applies the set again, so a queue dropped while the connection was
down is not consumed again after it (celery#987). docs/bucket-queues.md has the measurements
behind each choice.

:attr:`BucketQueues.applied` counts reconciles done; :meth:`serve` returns the count its own
reconcile will reach. Once :attr:`applied` reaches it, no new message of a dropped queue is
started: a message a blocking read had already taken goes back to its queue.

:meth:`BucketQueues.heartbeat` tells whether the worker's event loop still runs with a broker
connection (a wedged consumer does not): :mod:`allot.work.stepaside` asks it once a probe.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, ClassVar

from celery import bootsteps

from allot.work.queues import bucket_queue, queue_bucket

log = logging.getLogger(__name__)


class BucketQueues(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consume the queues of the buckets this node serves, and only those."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    current: ClassVar[BucketQueues | None] = None
    """The step of this worker process (one consumer per worker)."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.consumer = parent
        self.cluster: str = parent.app.conf.get("allot_cluster") or "default"
        self.wanted: frozenset[int] = frozenset()
        self.requested = 0
        self.applied = 0
        self._lock = threading.Lock()
        self.loop_seen = 0.0
        """``time.monotonic()`` when the worker's event loop last ran a :meth:`heartbeat`
        stamp while connected to the broker, or last added or cancelled a queue in a
        reconcile (0: never): a reconcile of thousands of queues keeps the loop busy for
        seconds, working, not wedged, and the stamp asked meanwhile waits behind it."""
        self._stamp_asked = 0.0
        BucketQueues.current = self

    def start(self, parent: Any) -> None:
        self._apply(self.requested)

    def serve(self, buckets: frozenset[int]) -> int:
        """Consume exactly the queues of ``buckets`` from now on; returns the reconcile count
        at which that is done (compare with :attr:`applied`). Safe from any thread."""
        with self._lock:
            if buckets == self.wanted:
                return self.requested
            self.wanted = buckets
            self.requested += 1
            generation = self.requested
        self.consumer.call_soon(self._apply, generation)
        return generation

    def heartbeat(self) -> bool:
        """True when the event loop ran the stamp asked at the previous call while connected
        to the broker (a consumer that is connected and not wedged); then asks for a new one.
        Safe from any thread; at most one stamp is waiting at a time."""
        alive = self.loop_seen >= self._stamp_asked > 0.0
        if alive or self._stamp_asked == 0.0:
            self._stamp_asked = time.monotonic()
            self.consumer.call_soon(self._stamp)
        return alive

    def _stamp(self) -> None:
        if getattr(self.consumer, "task_consumer", None) is not None:
            self.loop_seen = time.monotonic()
        else:  # not connected: ask again at the next heartbeat
            self._stamp_asked = 0.0

    def _apply(self, generation: int) -> None:
        consumer = self.consumer
        tasks = getattr(consumer, "task_consumer", None)
        if tasks is None:
            return  # not connected: start() applies the set after the connection
        with self._lock:
            wanted = {bucket_queue(self.cluster, bucket) for bucket in self.wanted}
            generation = self.requested
        selected = set(consumer.app.amqp.queues.consume_from) | {q.name for q in tasks.queues}
        current = {name for name in selected if queue_bucket(self.cluster, name) is not None}
        for name in sorted(current - wanted):
            consumer.cancel_task_queue(name)
            self.loop_seen = time.monotonic()
        for name in sorted(wanted - current):
            consumer.add_task_queue(name)
            self.loop_seen = time.monotonic()
        self.applied = max(self.applied, generation)


def busy_buckets(cluster: str) -> set[int]:
    """The buckets whose messages this worker has taken and not finished (reserved, running or
    waiting for their ETA), from Celery's worker state. Safe from another thread."""
    from celery.worker import state

    requests: list[Any] = []
    for held in (state.reserved_requests, state.active_requests, state.scheduled_requests):
        for _ in range(10):
            try:
                requests.extend(list(held))  # Request objects: two with one id both count
                break
            except RuntimeError:  # changed while copied: copy again
                continue
    buckets: set[int] = set()
    for request in requests:
        info = getattr(request, "delivery_info", None) or {}
        bucket = queue_bucket(cluster, str(info.get("routing_key") or ""))
        if bucket is not None:
            buckets.add(bucket)
    return buckets

"""Step aside: a node that cannot consume its bucket queues gives its buckets up, and comes back.

A node alive in ZooKeeper keeps its buckets however long it cannot reach the broker (a gray
failure: its route to Redis cut, its consumer wedged), and their work would stop for as long.
:class:`BrokerWatch` probes, once every :data:`PROBE_SECONDS`, that the node can consume: the
broker answers a round trip (a Redis ``PING`` on a connection of its own, giving up after
:data:`PROBE_TIMEOUT`) and the worker's event loop still runs with a broker connection
(:meth:`allot.work.consumer.BucketQueues.heartbeat`). With no successful probe for
``ALLOT_BROKER_STEP_ASIDE`` seconds it calls ``step_aside``; once stepped aside, every probe
succeeding for ``ALLOT_BROKER_STEP_ASIDE`` seconds in a row calls ``come_back`` (the same
time both ways: a flapping link does not make the node join and leave every few seconds).
What stepping aside does, and why it never makes a double owner, is the worker's business
(``tasks.node``); the argument is docs/table-work.md, case 17.

The states (:class:`Standing`), changed only by :meth:`BrokerWatch.observe`::

    SERVING --no probe passed for the limit--> STEPPED_ASIDE
       ^                                           |
       +--every probe passed for the limit---------+

A callback that raises leaves the state as it was: the next probe tries again.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable

from redis import Redis, RedisError
from redis.backoff import NoBackoff
from redis.retry import Retry

from allot.work.redelivery import redis_url

log = logging.getLogger(__name__)

PROBE_SECONDS = 1.0
"""How often the broker and the consumer are probed."""

PROBE_TIMEOUT = 1.0
"""Seconds a probe waits for the broker (to connect, then for its answer)."""


class Standing(enum.Enum):
    """Whether this node serves its buckets or has stepped aside."""

    SERVING = "serving"
    STEPPED_ASIDE = "stepped-aside"


class ProbeFailed(Exception):
    """A probe found the node unable to consume (the message says why)."""


def broker_probe(broker_url: str, timeout: float = PROBE_TIMEOUT) -> Callable[[], None] | None:
    """A probe of the Redis broker of ``broker_url``: one ``PING`` on a connection of its own,
    no retry, at most ``timeout`` s to connect and as long for the answer; it raises
    :class:`ProbeFailed` saying why the broker did not answer. None for any other broker:
    there the consumer probe alone tells (RabbitMQ's heartbeats end a dead connection, and
    the consumer is then not connected).
    """
    url = redis_url(broker_url)
    if url is None:
        return None
    client = Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )

    def probe() -> None:
        try:
            client.ping()
        except (RedisError, OSError) as exc:
            raise ProbeFailed(f"the broker does not answer ({exc})") from None

    return probe


def consumer_probe(heartbeat: Callable[[], bool]) -> Callable[[], None]:
    """A probe of the worker's consumer: ``heartbeat()`` is False when its event loop did not
    run the previous stamp while connected (:meth:`~allot.work.consumer.BucketQueues.heartbeat`)."""

    def probe() -> None:
        if not heartbeat():
            raise ProbeFailed("the worker's consumer has no broker connection or is wedged")

    return probe


class BrokerWatch:
    """Probes the node's ability to consume and steps aside, or comes back, past ``limit`` s.

    Args:
        probes: each raises :class:`ProbeFailed` (or any error) when the node cannot consume.
        limit: ``ALLOT_BROKER_STEP_ASIDE``, seconds; must be > 0.
        step_aside: called with the reason once no probe passed for ``limit`` s.
        come_back: called once every probe passed for ``limit`` s after stepping aside.
        on_change: called with the new :class:`Standing` after each change (metrics, tests).
    """

    def __init__(
        self,
        probes: list[Callable[[], None]],
        limit: float,
        *,
        step_aside: Callable[[str], object],
        come_back: Callable[[], object],
        on_change: Callable[[Standing], object] | None = None,
        interval: float = PROBE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit <= 0:
            raise ValueError("the step-aside limit must be > 0 s")
        self.probes = probes
        self.limit = limit
        self._step_aside = step_aside
        self._come_back = come_back
        self._on_change = on_change
        self.interval = interval
        self._clock = clock
        self.standing = Standing.SERVING
        """Changed only by :meth:`observe`."""
        self.last_passed = clock()
        """When every probe last passed (the watch's start counts as one)."""
        self.passing_since: float | None = None
        """Start of the current run of passing probes (None: the last one failed)."""
        self.reason = ""
        """Why the last probe failed ("" when it passed)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Probe in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="allot-broker-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop probing (a step aside or a return in progress finishes first)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(PROBE_SECONDS + 2 * PROBE_TIMEOUT)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.observe(self.probe())

    def probe(self) -> str:
        """Run every probe; return why one failed ("" when all passed)."""
        for probe in self.probes:
            try:
                probe()
            except Exception as exc:
                return str(exc) or repr(exc)
        return ""

    def observe(self, failure: str) -> Standing:
        """Take one probe's outcome (``failure``: "" when it passed) and step aside or come back
        when the limit is reached; the one place :attr:`standing` changes."""
        now = self._clock()
        self.reason = failure
        if failure:
            self.passing_since = None
        else:
            self.last_passed = now
            if self.passing_since is None:
                self.passing_since = now
        if self.standing is Standing.SERVING and now - self.last_passed >= self.limit:
            self._move(Standing.STEPPED_ASIDE, lambda: self._step_aside(failure))
        elif (
            self.standing is Standing.STEPPED_ASIDE
            and self.passing_since is not None
            and now - self.passing_since >= self.limit
        ):
            self._move(Standing.SERVING, self._come_back)
        return self.standing

    def _move(self, standing: Standing, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception:
            log.exception("could not become %s; trying again at the next probe", standing.value)
            return
        self.standing = standing
        if self._on_change is not None:
            self._on_change(standing)

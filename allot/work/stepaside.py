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

A broker down for everyone is no gray failure: stepping aside would only empty the cluster.
While its probes fail, a node marks itself in ZooKeeper (:class:`CutMarks`, an ephemeral
``{root}/broker-cut/{node}``, created at the first failed probe and deleted at the next one
that passes), and it steps aside only while some other live node is not marked: in an outage
of the broker every node is marked within a probe or two, long before the limit, and they all
stay (logged once).
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

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from redis import Redis, RedisError
from redis.backoff import NoBackoff
from redis.retry import Retry

from allot.work.redelivery import redis_url
from allot.zk.paths import ZkPaths

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


def cut_path(paths: ZkPaths) -> str:
    """``{root}/broker-cut``: the live nodes whose probes fail, one ephemeral child each."""
    return f"{paths.root}/broker-cut"


class CutMarks:
    """This node's mark under ``{root}/broker-cut`` and the question the step aside asks.

    Failure modes:
        SUSPENDED or another ZooKeeper error: a mark that cannot be written is logged and
        tried again at the next change; :meth:`others_consume` answers True when it cannot
        read (a node cut from the broker steps aside rather than stay unserved).
        LOST: the mark, ephemeral, ends with the session (the node is no member then either).
        A stale mark of a dead node: ephemeral, gone with its session.
    """

    def __init__(self, client: KazooClient, paths: ZkPaths, node_key: str) -> None:
        self.client = client
        self.paths = paths
        self.node_key = node_key
        self.path = f"{cut_path(paths)}/{node_key}"

    def mark(self, failing: bool) -> None:
        """Create (``failing``) or delete this node's mark; safe to repeat."""
        try:
            if failing:
                self.client.create(self.path, ephemeral=True, makepath=True)
            else:
                self.client.delete(self.path)
        except (NodeExistsError, NoNodeError):
            pass
        except KazooException as exc:
            log.warning("could not %s %s: %r", "create" if failing else "delete", self.path, exc)

    def others_consume(self) -> bool:
        """Whether some live node other than this one is not marked (so it can take buckets
        and consume them)."""
        try:
            members = set(self.client.get_children(self.paths.nodes))
            try:
                cut = set(self.client.get_children(cut_path(self.paths)))
            except NoNodeError:
                cut = set()
        except KazooException as exc:
            log.warning("could not read which nodes reach the broker (%r): stepping aside", exc)
            return True
        return bool(members - cut - {self.node_key})


class BrokerWatch:
    """Probes the node's ability to consume and steps aside, or comes back, past ``limit`` s.

    Args:
        probes: each raises :class:`ProbeFailed` (or any error) when the node cannot consume.
        limit: ``ALLOT_BROKER_STEP_ASIDE``, seconds; must be > 0.
        step_aside: called with the reason once no probe passed for ``limit`` s.
        come_back: called once every probe passed for ``limit`` s after stepping aside.
        mark: called with True when a probe fails after one passed (or at the first), with
            False when one passes after one failed (:meth:`CutMarks.mark`).
        others_consume: asked before stepping aside; False (no other node can consume
            either: the broker is down for all) keeps the node serving
            (:meth:`CutMarks.others_consume`).
        on_change: called with the new :class:`Standing` after each change (metrics, tests).
    """

    def __init__(
        self,
        probes: list[Callable[[], None]],
        limit: float,
        *,
        step_aside: Callable[[str], object],
        come_back: Callable[[], object],
        mark: Callable[[bool], object] | None = None,
        others_consume: Callable[[], bool] | None = None,
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
        self._mark = mark
        self._others_consume = others_consume
        self._on_change = on_change
        self._failing: bool | None = None
        self._alone_logged = False
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
        if self._mark is not None and self._failing is not bool(failure):
            self._mark(bool(failure))
        self._failing = bool(failure)
        if failure:
            self.passing_since = None
        else:
            self.last_passed = now
            if self.passing_since is None:
                self.passing_since = now
        if self.standing is Standing.SERVING and now - self.last_passed >= self.limit:
            if self._others_consume is not None and not self._others_consume():
                if not self._alone_logged:
                    log.warning(
                        "no probe passed for %g s (%s), but no other live node reaches the "
                        "broker either: not stepping aside",
                        self.limit,
                        failure,
                    )
                    self._alone_logged = True
                return self.standing
            self._alone_logged = False
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

"""The cluster as a scrape sees it: :class:`ClusterCollector`, a prometheus_client custom
collector that reads ZooKeeper, SQL and Redis when it is scraped and exports what it read as
gauges (the families and their help texts are :data:`FAMILIES`).

It reads through allot's own readers: :func:`allot.cycle.observe.observe` (the assignment,
membership, grace periods and the classification the assignment cycle plans from, so a node's
state here is the one the next cycle would see), the planner's spread,
:mod:`allot.cycle.mirror`'s mirrored epoch, :func:`allot.zk.leases.read_leases` (the leases,
as ``allot status`` and ``allot verify`` read them) and :mod:`allot.inspect.backlog`'s queue
lengths. The count of open plans (``generated``, ``applying``) has no reader elsewhere; it is
read here (:func:`read_sql`). A scrape never counts a history table whole (100 M attempts, say):
how attempts end is counted by each node as they end (``allot_table_tasks_total``,
:mod:`allot.metrics.instruments`), cycles and moves likewise.

One node at a time reads and serves them (``reporting``: in a worker, the holder of the trigger
duty, :mod:`allot.zk.triggers`), so a scrape of the whole fleet reads the cluster once and
``sum(allot_node_buckets)`` is the bucket count; every node serves ``allot_cluster_reporter``
(1 on that node, 0 on the others, whose scrapes read nothing). When the duty moves (its holder
died, left, or lost its session), the next holder serves them from its next scrape and the old
one stops at its next scrape after it saw its session LOST. A holder SUSPENDED keeps the duty,
as the trigger duty does: cut off from ZooKeeper past its session while still scraped, it goes
on serving ``allot_up{source="zookeeper"} 0`` and its SQL families beside the new holder's
until it reconnects; the ZooKeeper families (buckets, nodes, backlog) are never served twice.

The load gauges read the measured load with :func:`allot.zk.load.read_load` (one listing and
one ``multiRead``) and spread it over the nodes as ``allot status`` does
(:mod:`allot.inspect.load`); ``allot_bucket_load`` has series for the :data:`LOADED_BUCKETS`
heaviest measured buckets only, so its cardinality stays bounded whatever the bucket count.

Failure modes (nothing ever raises out of :meth:`ClusterCollector.collect`):
    ZooKeeper SUSPENDED or LOST (the client is not connected): nothing is read (a read would
    wait for the connection and hold the scrape), ``allot_up{source="zookeeper"}`` is 0 and the
    ZooKeeper families are left out. A connection lost during the read holds that one scrape
    until kazoo reconnects or gives up; later scrapes see the client disconnected.
    A ZooKeeper read error (retries exhausted, an ACL refusal): the same, ``zookeeper`` 0.
    SQL unavailable or not migrated: ``allot_up{source="sql"}`` 0 and the SQL families left
    out; the ZooKeeper families are still exported (``observe`` reads from SQL only what the
    cycle's mirror needs and carries on without it).
    Redis unreachable: ``allot_up{source="redis"}`` 0 and no backlog. Give the collector a
    Redis client with socket timeouts, so an unreachable Redis cannot hold a scrape.
    Corrupt data in ZooKeeper: what ``observe`` reports or repairs, never an error (an
    unreadable assignment entry holds nothing; its node is listed with 0 buckets).
    Each source's outage is logged once when it starts, and once when the source answers again.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from prometheus_client.core import GaugeMetricFamily, Metric
from redis import Redis, RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from allot.cycle.classify import planner_snapshot
from allot.cycle.mirror import mirrored_epoch
from allot.cycle.observe import observe
from allot.errors import AllotError, ZooKeeperUnavailable
from allot.inspect.backlog import bucket_backlog
from allot.inspect.load import load_spread
from allot.planner.balance import spread
from allot.planner.problem import Problem
from allot.settings import Settings
from allot.zk.leases import read_leases
from allot.zk.load import read_load
from allot.zk.paths import ZkPaths
from models.base import utcnow
from models.schema import Plan as PlanRow
from models.states import NodeState, PlanStatus

log = logging.getLogger(__name__)

T = TypeVar("T")
ZOOKEEPER, SQL, REDIS = "zookeeper", "sql", "redis"
EXPECTED_ERRORS = (KazooException, AllotError, SQLAlchemyError, RedisError, OSError)
"""What an unreachable or refusing server raises: logged in one line, without a traceback."""
OPEN_PLANS = (PlanStatus.GENERATED, PlanStatus.APPLYING)
"""The plan statuses ``allot_plans`` counts: the ones a plan leaves (the others only grow)."""
LOADED_BUCKETS = 20
"""``allot_bucket_load`` has a series for this many buckets at most: the measured ones with the
most load, so 16,384 buckets never mean 16,384 series."""

FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "allot_cluster_reporter": (
        "1 when this node serves the cluster-wide gauges (one node at a time: the holder of "
        "the trigger duty), else 0 and this node serves only its own counters.",
        (),
    ),
    "allot_up": (
        "1 when this scrape could read the source (zookeeper, sql, redis), else 0 and the "
        "source's metrics are left out.",
        ("source",),
    ),
    "allot_node_buckets": ("Buckets each node holds in ZooKeeper.", ("node",)),
    "allot_node_state": (
        "1 for the node's state (live, suspect, offline) as the next assignment cycle would "
        "classify it, 0 for the other states.",
        ("node", "state"),
    ),
    "allot_node_weight": ("The capacity weight a live node registered with.", ("node",)),
    "allot_unowned_buckets": ("Buckets no node holds in ZooKeeper.", ()),
    "allot_buckets_without_lease": (
        "Buckets a node holds with no lease {root}/leases/{id}: nobody runs their table tasks.",
        (),
    ),
    "allot_spread": (
        "How far the live nodes are from their weighted shares: max - min of (buckets held - "
        "exact share); 0 or 1 when balanced with equal weights, below 2 with weights.",
        (),
    ),
    "allot_epoch": ("The assignment epoch in ZooKeeper ({root}/assignment-version).", ()),
    "allot_membership_size": ("Live allot nodes (membership znodes under {root}/nodes).", ()),
    "allot_sql_epoch": (
        "The highest assignment epoch SQL has mirrored; below allot_epoch while SQL is behind.",
        (),
    ),
    "allot_plans": (
        "Open plans in SQL, by status: generated (waiting to be applied by hand) and applying.",
        ("status",),
    ),
    "allot_bucket_queue_backlog": (
        "Messages waiting in the queues of the buckets each node holds (Redis).",
        ("node",),
    ),
    "allot_node_load": (
        "Seconds of table work in the buckets each live node holds, over ALLOT_LOAD_WINDOW "
        "(a bucket nobody measured counts as the mean of the measured ones).",
        ("node",),
    ),
    "allot_bucket_load": (
        f"Seconds of table work of a bucket over ALLOT_LOAD_WINDOW, for the {LOADED_BUCKETS} "
        "measured buckets with the most load only.",
        ("bucket",),
    ),
}


def family(name: str) -> GaugeMetricFamily:
    """An empty gauge family ``name`` of :data:`FAMILIES`, with its help text and labels."""
    documentation, labels = FAMILIES[name]
    return GaugeMetricFamily(name, documentation, labels=labels)


def gauge(name: str, value: float) -> GaugeMetricFamily:
    """The unlabelled family ``name`` of :data:`FAMILIES` with one sample, ``value``."""
    result = family(name)
    result.add_metric([], value)
    return result


@dataclass(frozen=True)
class NodeView:
    """One node as a scrape sees it: ``weight`` is None unless the node is live."""

    key: str
    state: NodeState
    weight: float | None
    buckets: tuple[int, ...]


@dataclass(frozen=True)
class ZooKeeperView:
    """What a scrape read from ZooKeeper (see :data:`FAMILIES` for each value's meaning)."""

    nodes: tuple[NodeView, ...]
    unowned: int
    without_lease: int
    spread: float
    epoch: int
    membership: int
    node_load: Mapping[str, float] = field(default_factory=dict)
    bucket_load: tuple[tuple[int, float], ...] = ()

    def families(self) -> Iterator[Metric]:
        """The ZooKeeper families of :data:`FAMILIES`."""
        buckets, state, weight = (
            family(name) for name in ("allot_node_buckets", "allot_node_state", "allot_node_weight")
        )
        for node in self.nodes:
            buckets.add_metric([node.key], len(node.buckets))
            for each in NodeState:
                state.add_metric([node.key, each.value], 1 if node.state is each else 0)
            if node.weight is not None:
                weight.add_metric([node.key], node.weight)
        yield from (buckets, state, weight)
        yield gauge("allot_unowned_buckets", self.unowned)
        yield gauge("allot_buckets_without_lease", self.without_lease)
        yield gauge("allot_spread", self.spread)
        yield gauge("allot_epoch", self.epoch)
        yield gauge("allot_membership_size", self.membership)
        node_load, bucket_load = family("allot_node_load"), family("allot_bucket_load")
        for key, seconds in self.node_load.items():
            node_load.add_metric([key], seconds)
        for bucket, seconds in self.bucket_load:
            bucket_load.add_metric([str(bucket)], seconds)
        yield from (node_load, bucket_load)

    def backlog(self, per_bucket: Mapping[int, int]) -> GaugeMetricFamily:
        """``allot_bucket_queue_backlog``: ``per_bucket`` summed over each node's buckets."""
        result = family("allot_bucket_queue_backlog")
        for node in self.nodes:
            result.add_metric([node.key], sum(per_bucket.get(bucket, 0) for bucket in node.buckets))
        return result


@dataclass(frozen=True)
class SqlView:
    """What a scrape read from SQL: the mirrored epoch and the open plans per status."""

    epoch: int
    plans: Mapping[str, int]

    def families(self) -> Iterator[Metric]:
        """The SQL families of :data:`FAMILIES`; every open status appears, 0 when it has no
        row."""
        yield gauge("allot_sql_epoch", self.epoch)
        plans = family("allot_plans")
        for status in OPEN_PLANS:
            plans.add_metric([status.value], self.plans.get(status.value, 0))
        yield plans


def read_zookeeper(
    client: KazooClient, sessions: sessionmaker[Session], settings: Settings, now: dt.datetime
) -> ZooKeeperView:
    """Read the cluster from ZooKeeper (:func:`allot.cycle.observe.observe`) and the leases.

    Raises:
        ZooKeeperUnavailable: the client is not connected (nothing was read).
        kazoo.exceptions.KazooException, AccessDenied: ZooKeeper could not be read.
    """
    if not client.connected:
        raise ZooKeeperUnavailable("the ZooKeeper client is not connected")
    paths = ZkPaths(settings.zk_root)
    seen = observe(
        client,
        paths,
        sessions,
        now=now,
        offline_timeout=settings.node_offline_timeout,
        bucket_count=settings.bucket_count,
    )
    held, classes, live = seen.held, seen.classes, seen.members.live
    nodes = tuple(
        NodeView(
            key,
            classes.state_of(key),
            live[key].weight if key in live else None,
            tuple(held.get(key, ())),
        )
        for key in sorted(set(classes.live) | set(held) | set(seen.snapshot.corrupt))
    )
    owned = {bucket for node in nodes for bucket in node.buckets}
    leases = client.retry(read_leases, client, paths)
    problem = Problem.from_snapshot(planner_snapshot(classes, held, settings.bucket_count))
    measured = client.retry(read_load, client, paths, settings.bucket_count)
    load = load_spread(
        settings.bucket_count, measured.by_bucket, held, classes.live, classes.suspect
    )
    return ZooKeeperView(
        nodes=nodes,
        unowned=max(settings.bucket_count - len(owned), 0),
        without_lease=len(owned - (leases.buckets if leases is not None else frozenset())),
        spread=0.0 if problem.share is None else spread(problem.share, problem.counts()),
        epoch=seen.snapshot.version.epoch,
        membership=len(live),
        node_load={key: load.nodes[key].load for key in classes.live},
        bucket_load=tuple(load.heaviest(LOADED_BUCKETS)),
    )


def read_sql(sessions: sessionmaker[Session]) -> SqlView:
    """Read the mirrored epoch and count the open plans, in one session: two bounded reads
    (the one ``mirror_state`` row; the plans of :data:`OPEN_PLANS` through ``plan``'s status
    index, never the whole history).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: SQL could not be read.
    """
    by_status = (
        select(PlanRow.status, func.count())
        .where(PlanRow.status.in_(OPEN_PLANS))
        .group_by(PlanRow.status)
    )
    with sessions() as session:
        epoch = mirrored_epoch(session)
        plans = dict(session.execute(by_status).all())
    return SqlView(epoch, plans)


@dataclass(eq=False)  # compared and hashed by identity: a registry keys its collectors
class ClusterCollector:
    """A prometheus_client collector of the cluster-wide gauges, read at every scrape.

    Takes the process's started ZooKeeper client, its session factory and settings, and
    optionally the broker's Redis (None: no backlog and no ``redis`` source); opens no
    connection itself. ``clock`` gives the time grace periods are measured at (tests move
    it). ``reporting()`` says, at each scrape, whether this node serves the cluster-wide
    gauges (in a worker ``TriggerDuty.holding.is_set``; None: always, for one process alone);
    when it is False the scrape reads nothing and yields ``allot_cluster_reporter 0`` only.
    Safe to call from concurrent scrapes. Failure modes: see the module docstring.
    """

    client: KazooClient
    sessions: sessionmaker[Session]
    settings: Settings
    redis: Redis | None = None
    _: KW_ONLY
    clock: Callable[[], dt.datetime] = utcnow
    reporting: Callable[[], bool] | None = None
    _down: set[str] = field(default_factory=set, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def describe(self) -> Iterator[Metric]:
        """The families this collector exports, without samples (for name clash checks;
        nothing is read)."""
        return (family(name) for name in FAMILIES)

    def collect(self) -> Iterator[Metric]:
        """Yield ``allot_cluster_reporter``; on the reporting node, read every source and
        yield ``allot_up`` and the families of the sources read."""
        reporter = self.reporting is None or self.reporting()
        yield gauge("allot_cluster_reporter", 1 if reporter else 0)
        if not reporter:
            return
        settings = self.settings
        zookeeper = self._read(
            ZOOKEEPER, lambda: read_zookeeper(self.client, self.sessions, settings, self.clock())
        )
        sql = self._read(SQL, lambda: read_sql(self.sessions))
        up = {ZOOKEEPER: zookeeper is not None, SQL: sql is not None}
        backlog = None
        if self.redis is not None:
            redis, buckets = self.redis, range(1, settings.bucket_count + 1)
            backlog = self._read(REDIS, lambda: bucket_backlog(redis, settings.cluster, buckets))
            up[REDIS] = backlog is not None
        sources = family("allot_up")
        for source, readable in up.items():
            sources.add_metric([source], 1 if readable else 0)
        yield sources
        if zookeeper is not None:
            yield from zookeeper.families()
            if backlog is not None:
                yield zookeeper.backlog(backlog)
        if sql is not None:
            yield from sql.families()

    def _read(self, source: str, read: Callable[[], T]) -> T | None:
        """``read()``, or None when it raised: logged once per outage of ``source``."""
        try:
            value = read()
        except Exception as exc:
            with self._lock:
                first = source not in self._down
                self._down.add(source)
            if first:
                reason = (str(exc) or type(exc).__name__).splitlines()[0]
                log.warning(
                    "metrics: cannot read %s (%s); its metrics are left out until it answers",
                    source,
                    reason,
                    exc_info=not isinstance(exc, EXPECTED_ERRORS),
                )
            return None
        with self._lock:
            back = source in self._down
            self._down.discard(source)
        if back:
            log.info("metrics: %s answers again", source)
        return value

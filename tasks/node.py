"""A Celery worker is an allot node: it registers at start-up and leaves on a clean stop.

In the worker's main process:

- ``worker_init``, before the worker connects to anything and before its pool starts: create
  the node's shared lease tokens (:mod:`allot.work.tokens`), which every pool process inherits
  and runs table work under; and refuse to start a worker that can
  never be a node of this cluster: an invalid node key, a database with another bucket count
  or without allot's schema. Logging is not set up yet and nothing needs undoing, so the
  refusal is one line on standard error, as the ``allot`` CLI prints it
  (``error: worker bad@host refuses to join the cluster: ...``), and the exit status is the
  error's ``exit_code``. A database that cannot be reached is no reason to refuse (ZooKeeper
  alone decides; cycles run without SQL): it is logged once and the node registers.
- ``worker_ready``: register ``{root}/nodes/{key}`` (key: ``ALLOT_NODE_KEY`` or the Celery
  hostname, e.g. ``node1@host``; weight ``ALLOT_NODE_WEIGHT``), taking over the znode of a
  crashed predecessor with the same key (:mod:`allot.zk.registration`), and queue for the
  trigger duty: the one worker holding it watches membership and sends one ``allot.assign``
  per change (:mod:`allot.zk.triggers`), so a join or a death is handled within a second
  instead of at the next beat tick, and 1,000 workers cost one watch, not 1,000;
- then serve table work: :class:`~allot.work.leases.BucketWork` watches the node's own
  assignment, takes the buckets' leases, writes their tokens into the shared table and
  switches the worker's bucket queues (:mod:`allot.work`), publishes the seconds its work
  takes per bucket for strategy ``load`` (:mod:`allot.work.load`), and, with
  ``ALLOT_METRICS_PORT``, serve Prometheus metrics (:mod:`allot.metrics`): the node's own
  counters, and the cluster-wide gauges while it holds the trigger duty;
- displaced (another live process took the node key after this one registered,
  :mod:`allot.zk.registration`): stop serving table work at once (no bucket queue, every token
  cleared, the leases released for the other process) and log an error; the worker goes on,
  not a node, until it is restarted with a key of its own;
- cut from the broker (no broker round trip, or a wedged consumer, for
  ``ALLOT_BROKER_STEP_ASIDE`` s; :mod:`allot.work.stepaside`): step aside. Leave the trigger
  duty, remove the membership znode, then the node's assignment entry: the lease loop drains
  and releases every bucket as in a planned move, and the next cycle gives them to the live
  nodes at once (no grace: the node is gone *and* holds no entry, like a clean stop). Once the
  broker has answered for as long again, register again and queue for the duty: the normal
  cycle gives it buckets (docs/table-work.md, case 17);
- ``worker_shutdown``: on a clean stop, release the leases (the pool has finished its
  tasks), remove the membership znode and the node's assignment
  entry, so its buckets move at once (a crash is detected through the session instead, and
  gets the grace period).

Hooks fail alone: any other error at start-up is logged (an allot error in one line, anything
else with its traceback) and the worker goes on without being a node (``allot nodes`` shows
it missing); whatever was registered before the error is removed again, so it never stays
half-registered, and it never dies silently.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from celery.exceptions import WorkerShutdown
from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown
from kazoo.client import KazooClient
from sqlalchemy.engine import make_url

from allot.database import check_schema, database_errors, open_engine, safe_url
from allot.errors import (
    AllotError,
    BucketCountMismatch,
    ConfigurationError,
    DatabaseNotReady,
    DatabaseUnavailable,
    InvalidNodeKey,
)
from allot.metrics.exposition import MetricsServer
from allot.metrics.instruments import HANDOFF_DURATION
from allot.metrics.node import start_node_metrics
from allot.names import validate_node_key
from allot.settings import Settings, get_settings
from allot.work.consumer import BucketQueues, busy_buckets
from allot.work.leases import BucketWork
from allot.work.load import LoadReporter, share_node_load
from allot.work.periodic import Ticker
from allot.work.redelivery import bucket_restorer
from allot.work.stepaside import BrokerWatch, CutMarks, broker_probe, consumer_probe
from allot.work.tokens import require_node_tokens, share_node_tokens
from allot.zk.client import connect
from allot.zk.load import LoadPublisher
from allot.zk.paths import ZkPaths
from allot.zk.registration import NodeRegistration, this_process
from allot.zk.store import AssignmentStore
from allot.zk.triggers import TriggerDuty
from models.engine import session_factory
from tasks.app import app

log = logging.getLogger(__name__)

REFUSALS = (ConfigurationError, InvalidNodeKey, BucketCountMismatch, DatabaseNotReady)
"""Errors that mean this worker can never be a node of this cluster: it refuses to start."""

DATABASE_CHECK_TIMEOUT = 5
"""Seconds the start-up check waits for PostgreSQL to accept a connection (libpq waits for
the kernel, about two minutes, for a host that drops packets)."""


class WorkerNode:
    """This worker's membership, its place in the trigger duty and its clean departure."""

    def __init__(self, settings: Settings, hostname: str) -> None:
        self.settings = settings
        self.key = settings.node_key or hostname
        self.paths = ZkPaths(settings.zk_root)
        self.client: KazooClient | None = None
        self.registration: NodeRegistration | None = None
        self.duty: TriggerDuty | None = None
        self.work: BucketWork | None = None
        self.load: LoadReporter | None = None
        self.metrics: MetricsServer | None = None
        self.broker_watch: BrokerWatch | None = None
        self.checked = False
        self.database_warning: str | None = None
        """Why the database could not be checked (it was unreachable), or None."""

    def check(self) -> None:
        """Refuse to become a node this cluster cannot use: an invalid node key, a database with
        another bucket count or without allot's schema. Touches neither ZooKeeper nor the
        broker. An unreachable database is no reason to refuse (ZooKeeper alone decides; cycles
        run without SQL): :attr:`database_warning` says why, and the node may register.

        Raises:
            InvalidNodeKey: the worker's name is not a valid node key (and ``ALLOT_NODE_KEY``,
                checked with the settings, is unset).
            ConfigurationError: ``ALLOT_DATABASE_URL`` is invalid or names an unsupported
                database.
            BucketCountMismatch: ``ALLOT_BUCKET_COUNT`` differs from the database's (the message
                names the database).
            DatabaseNotReady: the database has no allot schema, or an older one (the message
                names the database).
        """
        if self.settings.node_key is None:
            try:
                validate_node_key(self.key)
            except InvalidNodeKey as exc:
                raise InvalidNodeKey(
                    f"{exc}; the node key is the worker's name (-n) unless ALLOT_NODE_KEY is set"
                ) from None
        url = self.settings.database_url
        engine = open_engine(url, **_connect_timeout(url))
        try:
            with database_errors(url), engine.connect() as connection:
                check_schema(connection, self.settings.bucket_count)
        except DatabaseUnavailable as exc:
            self.database_warning = f"{exc}; registering anyway (the SQL mirror catches up later)"
        except (BucketCountMismatch, DatabaseNotReady) as exc:
            raise type(exc)(f"database {safe_url(url)}: {exc}") from None
        finally:
            engine.dispose()
        self.checked = True

    def start(self) -> None:
        """Check (unless :meth:`check` already passed), connect, register (waiting up to one
        session timeout for a stale znode of another host to expire) and queue for the trigger
        duty. On any error, whatever this call registered is removed again and the session is
        closed: never a half-registered node.

        Raises:
            InvalidNodeKey, ConfigurationError, BucketCountMismatch, DatabaseNotReady: see
                :meth:`check`; nothing was registered.
            NodeKeyTaken: another live process holds this node key.
            ZooKeeperUnavailable: ZooKeeper cannot be reached.
        """
        if not self.checked:
            self.check()
        if self.database_warning is not None:
            log.warning("%s", self.database_warning)
        client = connect(self.settings)
        registration: NodeRegistration | None = None
        try:
            registration = NodeRegistration(
                client,
                self.paths,
                this_process(self.key, self.settings.node_weight),
                on_displaced=self._displaced,
            )
            registration.register(wait=self.settings.zk_session_timeout + 1)
            log.info("registered as node %s (weight %g)", self.key, self.settings.node_weight)
            self.duty = TriggerDuty(client, self.paths, self.key, self._request_cycle)
            self.work = self._start_work(client)
            self.load = self._start_load(client) if self.work is not None else None
            if registration.displaced is not None:  # displaced before its work started
                self._displaced(registration.displaced)
            self.metrics = start_node_metrics(client, self.settings, self.duty.holding.is_set)
        except BaseException:
            if self.load is not None:
                self.load.stop()
                self.load = None
            if self.work is not None:
                self.work.stop()
                self.work = None
            if registration is not None and registration.registered:
                registration.unregister()
                log.info("node %s unregistered again: its start-up failed", self.key)
            client.stop()  # no half-registered node: drop the session too
            client.close()
            raise
        self.client, self.registration = client, registration
        self.broker_watch = self._watch_broker()

    def _watch_broker(self) -> BrokerWatch | None:
        """Step aside when the bucket queues cannot be consumed (:mod:`allot.work.stepaside`);
        None outside a worker's consumer, or with ``ALLOT_BROKER_STEP_ASIDE=0``."""
        queues = BucketQueues.current
        limit = self.settings.broker_step_aside
        if queues is None or self.work is None or self.client is None or limit <= 0:
            return None
        marks = CutMarks(self.client, self.paths, self.key)
        probes = [consumer_probe(queues.heartbeat)]
        broker = broker_probe(self.settings.broker_url)
        if broker is not None:
            probes.insert(0, broker)
        watch = BrokerWatch(
            probes,
            limit,
            step_aside=self._step_aside,
            come_back=self._come_back,
            mark=marks.mark,
            others_consume=marks.others_consume,
        )
        watch.start()
        return watch

    def _step_aside(self, why: str) -> None:
        """Give every bucket up while the broker cannot be consumed from: leave the trigger
        duty (its sends go through the broker), remove the membership znode, then the
        assignment entry (in that order: a live node without an entry would be given buckets
        again). The lease loop drains and releases each bucket as in a planned move, but
        without waiting for the cut consumer to confirm its queue was dropped
        (:meth:`~allot.work.leases.BucketWork.cut_from_broker`); no other node can serve one
        before its lease is released or this session ends.

        Raises:
            KazooException, StaleAssignment: ZooKeeper refused; the watch tries again.
        """
        log.warning(
            "node %s steps aside: it could not consume its bucket queues for %g s (%s); "
            "its buckets move to the other nodes",
            self.key,
            self.settings.broker_step_aside,
            why,
        )
        duty, self.duty = self.duty, None
        if duty is not None:
            duty.stop()
        if self.registration is not None:
            self.registration.unregister()
        if self.work is not None:  # drained buckets go without the consumer's confirmation
            self.work.cut_from_broker(True)
        try:
            if self.client is not None:
                AssignmentStore(self.client, self.paths).delete(self.key)
        except BaseException:
            if self.work is not None:  # still assigned here: the next try sets it again
                self.work.cut_from_broker(False)
            raise

    def _come_back(self) -> None:
        """The broker answered for ``ALLOT_BROKER_STEP_ASIDE`` s: register again and queue for
        the trigger duty; the next cycle gives this node buckets.

        Raises:
            NodeKeyTaken: another process took the key meanwhile (the watch tries again).
        """
        if self.registration is None or self.client is None:
            return
        if self.work is not None:
            self.work.cut_from_broker(False)
        self.registration.register()
        if self.duty is None:
            self.duty = TriggerDuty(self.client, self.paths, self.key, self._request_cycle)
        log.warning(
            "node %s is back: the broker answered for %g s; it gets buckets at the next cycle",
            self.key,
            self.settings.broker_step_aside,
        )

    def _start_work(self, client: KazooClient) -> BucketWork | None:
        """Serve the bucket queues of this node's buckets, through leases
        (:mod:`allot.work.leases`); None outside a worker's consumer (no queues to switch)."""
        queues = BucketQueues.current
        if queues is None:
            return None
        settings = self.settings
        ticker = Ticker(app, settings.cluster)
        work = BucketWork(
            client,
            self.paths,
            self.key,
            session_factory(
                open_engine(settings.database_url, **_connect_timeout(settings.database_url))
            ),
            serve=queues.serve,
            applied=lambda: queues.applied,
            busy=lambda: busy_buckets(settings.cluster),
            handoff_timeout=settings.handoff_timeout,
            after_pass=ticker.tick,
            on_handoff=HANDOFF_DURATION.observe,
            tokens=share_node_tokens(settings.bucket_count),  # made at worker_init, shared
            restore=bucket_restorer(settings.broker_url, settings.cluster),
        )
        work.start()
        return work

    def _start_load(self, client: KazooClient) -> LoadReporter | None:
        """Publish the seconds this node's table work takes per bucket (:mod:`allot.work.load`)
        every ``ALLOT_LOAD_PUBLISH_INTERVAL``, for strategy ``load``. A failure here is logged
        and the node serves on, unmeasured (its buckets count as the mean)."""
        settings = self.settings
        try:
            reporter = LoadReporter(
                share_node_load(settings.bucket_count),  # made at worker_init, shared
                LoadPublisher(client, self.paths, self.key),
                window=settings.load_window,
                interval=settings.load_publish_interval,
            )
            reporter.start()
        except Exception:
            log.exception("node %s does not publish its load", self.key)
            return None
        return reporter

    def _displaced(self, why: str) -> None:
        """Another live process holds this node's key (:mod:`allot.zk.registration`): stop the
        table work of this one at once. Its bucket queues are dropped and its tokens cleared
        (a run that starts from now on is sent back untouched), the lease loop stops and its
        leases are released, so the process that holds the key can take them; a run still
        going finishes under its own token, and its commit is refused once that process has
        fenced the bucket. The worker goes on, not a node, until it is restarted."""
        log.error(
            "node %s displaced by another process with its key (%s): "
            "this worker stops serving table work",
            self.key,
            why,
        )
        watch, self.broker_watch = self.broker_watch, None
        if watch is not None:
            watch.stop()
        load, self.load = self.load, None
        if load is not None:
            load.stop()
        work, self.work = self.work, None
        if work is not None:
            work.stop()
            work.release_all()

    def _request_cycle(self, membership: int) -> None:
        """Send one ``allot.assign`` for membership version ``membership`` (the trigger duty
        claimed it: no other worker sends one for it)."""
        kwargs = {"trigger": "membership", "membership": membership}
        app.send_task("allot.assign", kwargs=kwargs)
        log.info("membership changed (version %d): cycle requested", membership)

    def stop(self, timeout: float = 3.0) -> None:
        """Leave at once: quit the trigger duty, drop the membership znode and the assignment.

        Gives ZooKeeper ``timeout`` seconds; if it does not answer (it may be down while the
        worker shuts down), the node leaves when its session expires instead, and the stop
        still finishes.
        """
        watch, self.broker_watch = self.broker_watch, None
        if watch is not None:
            watch.stop()
        if self.duty is not None:
            self.duty.stop()
        metrics, self.metrics = self.metrics, None
        if metrics is not None:
            metrics.stop()
        load, self.load = self.load, None
        if load is not None:
            load.stop()
        work, self.work = self.work, None
        if work is not None:
            work.stop()
        client, registration = self.client, self.registration
        self.client = None
        if client is None:
            return

        def leave() -> None:
            if work is not None:
                work.release_all()  # the pool has finished its tasks: hand every bucket over
            if registration is not None:
                registration.unregister()
            AssignmentStore(client, self.paths).delete(self.key)
            log.info("node %s left; its buckets move at the next cycle", self.key)

        if client.connected:
            departure = threading.Thread(target=leave, name="allot-leave", daemon=True)
            departure.start()
            departure.join(timeout)
            if departure.is_alive():
                log.warning(
                    "ZooKeeper did not answer within %g s: node %s leaves when its session expires",
                    timeout,
                    self.key,
                )
        else:
            log.warning("ZooKeeper unreachable: node %s leaves when its session expires", self.key)
        client.stop()
        client.close()


def _connect_timeout(url: str) -> dict[str, Any]:
    """``make_engine`` arguments bounding how long a connection attempt may take."""
    if make_url(url).get_backend_name() == "postgresql":
        return {"connect_args": {"connect_timeout": DATABASE_CHECK_TIMEOUT}}
    return {}


def refusal(hostname: str, exc: AllotError) -> str:
    """The one line saying why worker ``hostname`` refuses to start: a bad setting exactly as
    the ``allot`` CLI words it, anything else prefixed with the worker's name."""
    if isinstance(exc, ConfigurationError):
        return str(exc)
    return f"worker {hostname} refuses to join the cluster: {exc}"


def _hostname(sender: Any) -> str:
    return str(getattr(sender, "hostname", "") or "celery@localhost")


_checked: WorkerNode | None = None
"""The node :func:`_check` approved, waiting for ``worker_ready`` to register it."""
_node: WorkerNode | None = None
"""The registered node, for ``worker_shutdown``."""


@worker_init.connect
def _share_tokens(**_: Any) -> None:
    """Before the pool starts: create the node's lease tokens in memory every pool process
    inherits (:mod:`allot.work.tokens`). Should this fail, the pool processes run no table
    task (:func:`_inherit_tokens`) and say why."""
    try:
        share_node_tokens(get_settings().bucket_count)
    except Exception:
        require_node_tokens()  # none: this process and its pool run no table task


@worker_init.connect
def _share_load(**_: Any) -> None:
    """Before the pool starts: create the node's load meter in memory every pool process
    inherits (:mod:`allot.work.load`). Should this fail, runs are not measured (logged)."""
    try:
        share_node_load(get_settings().bucket_count)
    except Exception:
        log.exception("no load meter: this node's table work is not measured")


@worker_process_init.connect
def _inherit_tokens(**_: Any) -> None:
    """In each pool process: its table work runs under the tokens inherited from the main
    process, never under SQL's (none if none was inherited)."""
    require_node_tokens()


@worker_init.connect
def _check(sender: Any = None, **_: Any) -> None:
    """Before the worker connects to the broker or prints its banner: refuse a worker that can
    never be a node (:data:`REFUSALS`) with one line on standard error and the error's exit
    status. Logging is not set up yet: any other error is left for :func:`_register`, which
    checks again and logs it."""
    global _checked
    hostname = _hostname(sender)
    try:
        node = WorkerNode(get_settings(), hostname)
        node.check()
    except REFUSALS as exc:
        print(f"error: {refusal(hostname, exc)}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    except Exception:
        return
    _checked = node


@worker_ready.connect
def _register(sender: Any = None, **_: Any) -> None:
    """Register this worker as a node. A refusal found only now (the early check could not
    finish) stops the worker; any other error is logged and the worker goes on, not a node."""
    global _checked, _node
    hostname = _hostname(sender)
    node, _checked = _checked, None
    try:
        if node is None:
            node = WorkerNode(get_settings(), hostname)
        node.start()
        _node = node
    except REFUSALS as exc:
        # a worker that does not fit the cluster must not run cycles either: stop it
        log.error("%s", refusal(hostname, exc))
        raise WorkerShutdown(exc.exit_code) from None
    except AllotError as exc:
        log.error("worker %s could not register as an allot node: %s", hostname, exc)
    except Exception:
        log.exception("worker %s could not register as an allot node", hostname)


@worker_shutdown.connect
def _leave(**_: Any) -> None:
    global _node
    node, _node = _node, None
    if node is None:
        return
    try:
        node.stop()
    except Exception:
        log.exception("node %s could not leave cleanly; its session expiry will tell", node.key)

"""A Celery worker is an allot node: it registers at start-up and leaves on a clean stop.

In the worker's main process (``worker_ready`` / ``worker_shutdown``):

- register ``{root}/nodes/{key}`` (key: ``ALLOT_NODE_KEY`` or the Celery hostname, e.g.
  ``node1@host``; weight ``ALLOT_NODE_WEIGHT``), taking over the znode of a crashed predecessor
  with the same key (:mod:`allot.zk.registration`);
- queue for the trigger duty: the one worker holding it watches membership and sends one
  ``allot.assign`` per change (:mod:`allot.zk.triggers`), so a join or a death is handled
  within a second instead of at the next beat tick, and 1,000 workers cost one watch, not
  1,000;
- on a clean stop, remove the membership znode and the node's assignment entry, so its buckets
  move at once (a crash is detected through the session instead, and gets the grace period).

Hooks fail alone: an error here is logged and the worker goes on (it is then not a node, which
``allot nodes`` shows); it never dies silently or stays half-registered.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.exceptions import WorkerShutdown
from celery.signals import worker_ready, worker_shutdown
from kazoo.client import KazooClient

from allot.database import check_schema, database_errors
from allot.errors import BucketCountMismatch, DatabaseNotReady, DatabaseUnavailable
from allot.settings import Settings, get_settings
from allot.zk.client import connect
from allot.zk.paths import ZkPaths
from allot.zk.registration import NodeRegistration, this_process
from allot.zk.store import AssignmentStore
from allot.zk.triggers import TriggerDuty
from models.engine import make_engine
from tasks.app import app

log = logging.getLogger(__name__)


class WorkerNode:
    """This worker's membership, its place in the trigger duty and its clean departure."""

    def __init__(self, settings: Settings, hostname: str) -> None:
        self.settings = settings
        self.key = settings.node_key or hostname
        self.paths = ZkPaths(settings.zk_root)
        self.client: KazooClient | None = None
        self.registration: NodeRegistration | None = None
        self.duty: TriggerDuty | None = None

    def start(self) -> None:
        """Connect, register (waiting up to one session timeout for a stale znode of another
        host to expire) and queue for the trigger duty.

        Raises:
            NodeKeyTaken: another live process holds this node key.
            ZooKeeperUnavailable: ZooKeeper cannot be reached.
        """
        self.check_database()
        self.client = connect(self.settings)
        self.registration = NodeRegistration(
            self.client,
            self.paths,
            this_process(self.key, self.settings.node_weight),
            on_displaced=lambda why: log.error("node %s displaced: %s", self.key, why),
        )
        try:
            self.registration.register(wait=self.settings.zk_session_timeout + 1)
        except Exception:
            self.client.stop()  # no half-registered node: drop the session too
            self.client.close()
            self.client = None
            raise
        log.info("registered as node %s (weight %g)", self.key, self.settings.node_weight)
        self.duty = TriggerDuty(self.client, self.paths, self.key, self._request_cycle)

    def check_database(self) -> None:
        """Refuse to become a node of a database this worker does not fit: another bucket count
        or no schema. An unreachable database is no reason to refuse (ZooKeeper alone decides;
        cycles run without SQL): it is logged and the node registers.

        Raises:
            BucketCountMismatch: ``ALLOT_BUCKET_COUNT`` differs from the database's.
            DatabaseNotReady: the database has no allot schema (or an older one).
        """
        url = self.settings.database_url
        engine = make_engine(url)
        try:
            with database_errors(url), engine.connect() as connection:
                check_schema(connection, self.settings.bucket_count)
        except DatabaseUnavailable as exc:
            log.warning("%s; registering anyway (the SQL mirror catches up later)", exc)
        finally:
            engine.dispose()

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
        if self.duty is not None:
            self.duty.stop()
        client, registration = self.client, self.registration
        self.client = None
        if client is None:
            return

        def leave() -> None:
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
                    "ZooKeeper did not answer within %g s: node %s leaves when its session "
                    "expires", timeout, self.key,
                )  # fmt: skip
        else:
            log.warning("ZooKeeper unreachable: node %s leaves when its session expires", self.key)
        client.stop()
        client.close()


_node: WorkerNode | None = None


@worker_ready.connect
def _register(sender: Any = None, **_: Any) -> None:
    global _node
    hostname = str(getattr(sender, "hostname", "") or "celery@localhost")
    try:
        node = WorkerNode(get_settings(), hostname)
        node.start()
        _node = node
    except (BucketCountMismatch, DatabaseNotReady) as exc:
        # a worker that does not fit the database must not run cycles either: stop it
        log.error("worker %s stops: %s", hostname, exc)
        raise WorkerShutdown(exc.exit_code) from None
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

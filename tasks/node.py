"""A Celery worker is an allot node: it registers at start-up and leaves on a clean stop.

In the worker's main process (``worker_ready`` / ``worker_shutdown``):

- register ``{root}/nodes/{key}`` (key: ``ALLOT_NODE_KEY`` or the Celery hostname, e.g.
  ``node1@host``; weight ``ALLOT_NODE_WEIGHT``), taking over the znode of a crashed predecessor
  with the same key (:mod:`allot.zk.membership`);
- watch membership and, for each change, send one ``allot.assign`` task per change across all
  workers (:mod:`allot.zk.triggers` deduplicates), so a join or a death is handled within a
  second instead of at the next beat tick;
- on a clean stop, remove the membership znode and the node's assignment entry, so its buckets
  move at once (a crash is detected through the session instead, and gets the grace period).

Hooks fail alone: an error here is logged and the worker goes on (it is then not a node, which
``allot nodes`` shows); it never dies silently or stays half-registered.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from kazoo.client import KazooClient

from allot.settings import Settings, get_settings
from allot.zk.client import connect
from allot.zk.members import MembershipWatch
from allot.zk.membership import NodeRegistration, this_process
from allot.zk.paths import ZkPaths
from allot.zk.store import AssignmentStore
from allot.zk.triggers import claim
from tasks.app import app

log = logging.getLogger(__name__)


class WorkerNode:
    """This worker's membership, its membership watch and its clean departure."""

    def __init__(self, settings: Settings, hostname: str) -> None:
        self.settings = settings
        self.key = settings.node_key or hostname
        self.paths = ZkPaths(settings.zk_root)
        self.client: KazooClient | None = None
        self.registration: NodeRegistration | None = None
        self.watch: MembershipWatch | None = None

    def start(self) -> None:
        """Connect, register (waiting up to one session timeout for a stale znode of another
        host to expire) and start watching membership.

        Raises:
            NodeKeyTaken: another live process holds this node key.
            ZooKeeperUnavailable: ZooKeeper cannot be reached.
        """
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
        self.watch = MembershipWatch(self.client, self.paths, self._on_members)

    def _on_members(self, _members: frozenset[str]) -> None:
        # Runs on kazoo's event thread: hand the ZooKeeper calls and the send to a thread.
        threading.Thread(target=self._trigger, name="allot-trigger", daemon=True).start()

    def _trigger(self) -> None:
        client = self.client
        if client is None:
            return
        try:
            stat = client.exists(self.paths.nodes)
            if stat is not None and claim(client, self.paths.membership_trigger, stat.cversion):
                kwargs = {"trigger": "membership", "membership": stat.cversion}
                app.send_task("allot.assign", kwargs=kwargs)
                log.info("membership changed (version %d): cycle requested", stat.cversion)
        except Exception:
            log.exception("could not request a cycle after a membership change")

    def stop(self, timeout: float = 3.0) -> None:
        """Leave at once: stop watching, drop the membership znode and the assignment entry.

        Gives ZooKeeper ``timeout`` seconds; if it does not answer (it may be down while the
        worker shuts down), the node leaves when its session expires instead, and the stop
        still finishes.
        """
        if self.watch is not None:
            self.watch.stop()
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

"""Registration: this node announces itself with an ephemeral ``{root}/nodes/{nodeKey}`` znode.

Reading and watching the member list is :mod:`allot.zk.members`; this module only writes
this process's own znode.

Taking over a crashed predecessor's znode
    A process killed with ``kill -9`` leaves its znode until its session expires
    (``zk_session_timeout``). Its restarted successor (same node key) does not wait: it reads
    the znode with its stat and takes it over (deletes it with the stat's version, creates its
    own) when the znode provably belongs to a dead predecessor: its info names **this host**
    and either this very pid (an earlier session of this process, or a restarted container
    whose pid repeats) or a pid that no longer runs here (or that a newer process reuses).

Two live processes with the same key
    A znode held by another session whose info names **another host**, or a pid of this host
    that is alive, is never taken: :meth:`NodeRegistration.register` raises
    :class:`~allot.errors.NodeKeyTaken` (after waiting up to ``wait`` seconds for it to go).
    So the first process keeps the key and the second fails loudly at start-up; they never
    steal from each other. Should the host/pid test still be fooled (two containers with the
    same hostname and pid on different machines), the steal happens at most once: a registered
    node only ever re-creates its znode when it is *absent*; if it finds it held by another
    session it marks itself displaced (:attr:`NodeRegistration.displaced`, logged as an
    error, ``on_displaced`` called) and stops competing.

Failure modes
    SUSPENDED: the znode lives as long as the session; on reconnection (CONNECTED) the
    registration checks it still exists and re-creates it if needed.
    LOST (session expired): the server deleted the znode; kazoo opens a new session and the
    registration re-creates the znode on the next CONNECTED (work is handed to
    ``client.handler.spawn``: the state listener never blocks).
    Stale znode of a dead predecessor: taken over as above. Malformed info in the existing
    znode: it cannot be proven ours, so it is treated as another process's (NodeKeyTaken,
    or wait for it to vanish).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import BadVersionError, NoAuthError, NodeExistsError, NoNodeError
from kazoo.protocol.states import EventType, WatchedEvent

from allot.errors import AccessDenied, NodeKeyTaken
from allot.zk.client import ensure_layout
from allot.zk.codec import MemberInfo, MsClock, decode_member_info, encode_member_info, now_ms
from allot.zk.paths import ZkPaths
from allot.zk.process import pid_running, process_started_ms

log = logging.getLogger(__name__)

PID_REUSE_SLACK_MS = 2_000
"""A process that started this long after a registration cannot be the one that registered."""


def this_process(node_key: str, weight: float = 1.0, clock: MsClock = now_ms) -> MemberInfo:
    """The membership info of the calling process (host name, pid, ``started_at`` = now)."""
    return MemberInfo(node_key, socket.gethostname(), os.getpid(), weight, clock())


def dead_predecessor(
    holder: MemberInfo,
    me: MemberInfo,
    running: Callable[[int], bool] = pid_running,
    started_ms: Callable[[int], int | None] = process_started_ms,
) -> str | None:
    """Why ``holder``'s znode belongs to a dead predecessor of ``me`` (so it may be taken
    over), or None when it may belong to a live process."""
    if holder.node_key != me.node_key or holder.host != me.host:
        return None
    if holder.pid == me.pid:
        return f"it names this host and this pid ({me.pid}): an earlier session of ours"
    if not running(holder.pid):
        return f"its process {holder.pid} no longer runs on {holder.host}"
    started = started_ms(holder.pid)
    if started is not None and started > holder.started_at + PID_REUSE_SLACK_MS:
        return f"pid {holder.pid} now belongs to a process started after it registered"
    return None


class NodeRegistration:
    """Keeps this process registered as a live node under its node key.

    Failure modes (the module docstring has the reasoning):
        SUSPENDED: nothing is lost; on CONNECTED the znode is checked and re-created if absent.
        LOST: the znode died with the session; re-created on the next CONNECTED, in a spawned
        task (kazoo listeners must not block).
        Stale znode of this key at :meth:`register`: taken over at once if it provably belongs
        to a dead predecessor on this host, otherwise :class:`~allot.errors.NodeKeyTaken`
        (after ``wait``). The delete is conditional on the version read; ephemeral data is
        written once, so a twin re-creating the znode within that instant could still be
        deleted: a race only between two misconfigured processes, settled by the next rule.
        Znode taken by another session after registering: never taken back;
        :attr:`displaced` says why and ``on_displaced`` is called.
        Malformed info in the existing znode: treated as another live process's.
    """

    def __init__(
        self,
        client: KazooClient,
        paths: ZkPaths,
        info: MemberInfo,
        *,
        on_displaced: Callable[[str], None] | None = None,
        judge: Callable[[MemberInfo, MemberInfo], str | None] = dead_predecessor,
    ) -> None:
        self.client = client
        self.paths = paths
        self.info = info
        self.path = paths.node(info.node_key)
        self.on_displaced = on_displaced
        self.judge = judge
        self.displaced: str | None = None
        """Why another session holds our key after we had registered (None: not displaced)."""
        self._data = encode_member_info(info)
        self._mutex = threading.RLock()
        self._active = False

    @property
    def registered(self) -> bool:
        """True while the registration is active and not displaced (the znode may be briefly
        missing while a new session re-creates it)."""
        return self._active and self.displaced is None

    def register(self, wait: float = 0.0) -> None:
        """Create the membership znode, taking over a dead predecessor's. Safe to repeat.

        Args:
            wait: seconds to wait for a znode held by a live process (or unprovable) to
                vanish before giving up; 0 gives up at once.

        Raises:
            NodeKeyTaken: another live process holds the key (the message names it).
            AccessDenied: ZooKeeper refused the create (``ALLOT_ZK_AUTH``).
        """
        ensure_layout(self.client, self.paths)
        with self._mutex:
            deadline = time.monotonic() + wait
            self.client.retry(self._claim, True, deadline)
            self.displaced = None
            if not self._active:
                self._active = True
                self.client.add_listener(self._on_state)
        self._watch()

    def unregister(self) -> None:
        """Stop re-registering and delete the znode if this session holds it. Never raises for
        connection problems (the znode then ends with the session)."""
        with self._mutex:
            if self._active:
                self.client.remove_listener(self._on_state)
            self._active = False
            try:
                _, stat = self.client.get(self.path)
                if stat.ephemeralOwner == self._session_id():
                    self.client.delete(self.path, version=stat.version)
            except NoNodeError:
                pass
            except Exception as exc:  # connection trouble: the znode ends with the session
                log.warning("could not delete %s on unregister: %s", self.path, exc)

    # -- internals -----------------------------------------------------------------------------

    def _session_id(self) -> int | None:
        client_id = self.client.client_id
        return None if client_id is None else int(client_id[0])

    def _claim(self, takeover: bool, deadline: float) -> None:
        """Create our znode, adopt it if this session already holds it, take over a dead
        predecessor's (when ``takeover``), or wait/raise for anyone else's."""
        for _ in range(100):
            try:
                self.client.create(self.path, self._data, ephemeral=True)
                return
            except NodeExistsError:
                pass
            except NoAuthError:
                raise AccessDenied(
                    f"ZooKeeper refused to create {self.path}: check ALLOT_ZK_AUTH"
                ) from None
            try:
                data, stat = self.client.get(self.path)
            except NoNodeError:
                continue
            if stat.ephemeralOwner == self._session_id():
                if data != self._data:
                    self.client.set(self.path, self._data, version=stat.version)
                return  # a retried create that had succeeded, or a repeated register()
            reason, holder = self._judge(data, takeover)
            if reason is not None:
                log.warning(
                    "taking over %s from session 0x%x: %s", self.path, stat.ephemeralOwner, reason
                )
                with contextlib.suppress(NoNodeError, BadVersionError):
                    self.client.delete(self.path, version=stat.version)
                continue
            if not self._wait_gone(deadline):
                raise NodeKeyTaken(
                    f"node key {self.info.node_key} is held by another live process ({holder}, "
                    f"session 0x{stat.ephemeralOwner:x}); give each process its own "
                    "ALLOT_NODE_KEY or stop the other one"
                )
        raise NodeKeyTaken(f"node key {self.info.node_key} keeps changing hands; giving up")

    def _judge(self, data: bytes, takeover: bool) -> tuple[str | None, str]:
        try:
            holder = decode_member_info(data)
        except ValueError as exc:
            return None, f"unreadable info: {exc}"
        description = f"host {holder.host}, pid {holder.pid}"
        if holder == self.info:
            return "it is our own earlier session", description
        if not takeover:
            return None, description
        return self.judge(holder, self.info), description

    def _wait_gone(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        gone = threading.Event()
        if self.client.exists(self.path, watch=lambda _event: gone.set()) is None:
            return True
        return gone.wait(remaining)

    def _watch(self) -> None:
        try:
            self.client.exists(self.path, watch=self._on_event)
        except Exception as exc:  # re-armed on the next reconnection
            log.debug("could not watch %s: %s", self.path, exc)

    def _on_event(self, event: WatchedEvent) -> None:
        if event.type in (EventType.DELETED, EventType.CHANGED, EventType.CREATED):
            self.client.handler.spawn(self._reconcile)

    def _on_state(self, state: str) -> bool:
        if state == KazooState.CONNECTED:
            self.client.handler.spawn(self._reconcile)
        return False

    def _reconcile(self) -> None:
        """After a reconnection or a change of our znode: re-create it if absent; never take
        it from another session once registered."""
        with self._mutex:
            if not self.registered:
                return
            try:
                self.client.retry(self._claim, False, 0.0)
            except NodeKeyTaken as exc:
                self._displace(str(exc))
                return
            except Exception as exc:  # the next CONNECTED retries
                log.warning("could not re-register %s: %s", self.path, exc)
                return
        self._watch()

    def _displace(self, reason: str) -> None:
        self.displaced = reason
        log.error("node %s displaced: %s", self.info.node_key, reason)
        if self.on_displaced is not None:
            try:
                self.on_displaced(reason)
            except Exception:
                log.exception("on_displaced callback failed")

"""Triggers: one membership change, one cycle, whatever the number of workers.

One worker at a time holds the *trigger duty* (:class:`TriggerDuty`, kazoo's ``Lock`` at
``{root}/locks/trigger``): only it watches ``{root}/nodes``, so a burst of joins costs one
children read per watch event, not one per worker (1,000 workers each re-reading 1,000
children on every join would cost a million reads). The others wait in the lock's queue, each
watching only its predecessor's znode. On every change the holder reads the parent's
``cversion`` (the number of child changes so far) and *claims* it: the claim raises the number
stored in ``{root}/triggers/membership`` with a version-checked write, so a change is acted on
once even while two holders overlap (a holder whose session was lost, and its successor).

Failure modes:
    SUSPENDED: the duty is kept (the lock and the watch survive if the session does); a claim
    that cannot be made returns False (the beat cycle is the safety net).
    LOST: the lock znode is gone and another worker may take the duty; this one stops watching
    and queues for the lock again in its new session. The new holder claims the current
    ``cversion`` at once, so a change made during the handover is not missed.
    Holder frozen or dead: its lock znode lasts until its session expires; membership cycles
    wait that long (``ALLOT_ZK_SESSION_TIMEOUT``), beat cycles do not.
    Malformed data in the trigger znode: treated as 0, and the next claim rewrites it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    CancelledError,
    KazooException,
    NodeExistsError,
    NoNodeError,
)
from kazoo.recipe.lock import Lock

from allot.zk.client import ensure_layout
from allot.zk.members import MembershipWatch
from allot.zk.paths import ZkPaths

log = logging.getLogger(__name__)


def claim(client: KazooClient, path: str, token: int) -> bool:
    """Claim ``token`` at ``path``: True for exactly one caller per token greater than the last.

    Never raises for ZooKeeper trouble: a failed claim returns False (and is logged).
    """
    try:
        try:
            data, stat = client.get(path)
        except NoNodeError:
            try:
                client.create(path, str(token).encode(), makepath=True)
                return True
            except NodeExistsError:
                data, stat = client.get(path)
        try:
            last = int(data.decode() or 0)
        except (UnicodeDecodeError, ValueError):
            last = 0
        if token <= last:
            return False
        client.set(path, str(token).encode(), version=stat.version)
        return True
    except BadVersionError:
        return False
    except KazooException as exc:
        log.warning("could not claim trigger %s at %s: %s", token, path, exc)
        return False


class TriggerDuty:
    """Hold the trigger duty when it is this worker's turn: while held, call
    ``on_change(cversion)`` for every membership version this worker claims (module docstring).

    Runs a daemon thread that queues for the lock; :meth:`stop` leaves the queue (or the duty).
    ``on_change`` runs on a thread of its own per change (it may call ZooKeeper and send tasks).
    """

    def __init__(
        self,
        client: KazooClient,
        paths: ZkPaths,
        identifier: str,
        on_change: Callable[[int], None],
    ) -> None:
        self.client = client
        self.paths = paths
        self.identifier = identifier
        self.on_change = on_change
        self.holding = threading.Event()
        """Set while this worker holds the duty (for tests and ``allot nodes``)."""
        self._stopped = threading.Event()
        self._lost = threading.Event()
        self._lock: Lock | None = None
        client.add_listener(self._listen)
        self._thread = threading.Thread(target=self._run, name="allot-trigger-duty", daemon=True)
        self._thread.start()

    def _listen(self, state: str) -> bool:
        if state == KazooState.LOST:
            self._lost.set()
        return False

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._lost.clear()
            lock = self._lock = Lock(self.client, self.paths.trigger_lock, self.identifier)
            try:
                ensure_layout(self.client, self.paths)  # in the try: a lost session retries
                if not lock.acquire():
                    continue
            except CancelledError:
                return
            except KazooException as exc:
                log.warning("could not queue for the trigger duty (%s); retrying in 1 s", exc)
                self._stopped.wait(1.0)
                continue
            self.holding.set()
            log.info("%s holds the trigger duty: watching membership", self.identifier)
            watch = MembershipWatch(self.client, self.paths, self._changed)
            while not (self._stopped.is_set() or self._lost.is_set()):
                self._stopped.wait(0.5)
            watch.stop()
            self.holding.clear()
            with contextlib.suppress(KazooException):
                lock.release()

    def _changed(self, _members: frozenset[str]) -> None:
        # on kazoo's event thread: the ZooKeeper calls and the send go to a thread of their own
        threading.Thread(target=self._claim, name="allot-trigger", daemon=True).start()

    def _claim(self) -> None:
        try:
            stat = self.client.exists(self.paths.nodes)
            if stat is not None and claim(
                self.client, self.paths.membership_trigger, stat.cversion
            ):
                self.on_change(stat.cversion)
        except Exception:
            log.exception("could not act on a membership change")

    def stop(self, timeout: float = 3.0) -> None:
        """Leave the duty (or the queue) and stop watching."""
        self._stopped.set()
        lock = self._lock
        if lock is not None:
            with contextlib.suppress(Exception):
                lock.cancel()
        self._thread.join(timeout)
        self.client.remove_listener(self._listen)

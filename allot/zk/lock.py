"""The assignment cycle's lock: kazoo's ``Lock`` at ``{root}/locks/assign`` plus a guard.

Taking the lock returns a :class:`LockGuard`. The cycle calls :meth:`LockGuard.check` before
each write; it raises :class:`~allot.errors.LockLost` as soon as the connection has been
SUSPENDED or the session LOST since the lock was requested, even if the connection came back:
after a suspension nobody can tell whether the session (and so the lock) survived, so the cycle
aborts without writing and the next run starts afresh. The guard also names the holder's lock
znode (:attr:`LockGuard.lock_node`); :mod:`allot.zk.apply` ``check``s it inside every
transaction, which closes the race between a passing local check and a session expiring just
before the commit: a holder whose session ended cannot commit anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException, LockTimeout, NoAuthError, NoNodeError
from kazoo.interfaces import IAsyncResult
from kazoo.protocol.states import ZnodeStat
from kazoo.recipe.lock import Lock

from allot.errors import AccessDenied, LockLost, ZooKeeperUnavailable
from allot.zk.client import ensure_layout
from allot.zk.paths import ZkPaths

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT = 0.5
"""Seconds :meth:`LockGuard.confirm` waits for ZooKeeper's answer before it gives up: the
caller holds SQL's fence row meanwhile, so this bounds how long a holder frozen past its
session and resumed can keep the next holder's SQL waiting (a healthy round trip is a few ms).
A ZooKeeper that takes longer to answer one ``exists`` makes that write roll back as if the
lock were lost: the cycle aborts, and the next one writes SQL again (catch-up).
"""


class _Interruptions:
    """Counts SUSPENDED and LOST transitions of a client while installed (a kazoo listener:
    it only bumps a counter, never blocks)."""

    def __init__(self, client: KazooClient) -> None:
        self.client = client
        self.count = 0
        self.last = ""
        self._mutex = threading.Lock()
        client.add_listener(self._listen)

    def _listen(self, state: str) -> bool:
        if state in (KazooState.SUSPENDED, KazooState.LOST):
            with self._mutex:
                self.count += 1
                self.last = str(state)
        return False

    def close(self) -> None:
        """Stop counting (remove the listener)."""
        self.client.remove_listener(self._listen)


class LockGuard:
    """Proof that the assignment lock is held, to be checked before every write.

    Failure modes:
        SUSPENDED, then CONNECTED again (same session): the guard stays tripped; the cycle
        must abort and let the next run retake the lock.
        LOST (session expired): the lock znode is gone and another process may hold the lock;
        the guard is tripped and a transaction fenced on :attr:`lock_node` fails.
        Released: a released guard always raises.
    """

    def __init__(
        self,
        client: KazooClient,
        lock_node: str,
        interruptions: _Interruptions,
        baseline: int,
        token: int | IAsyncResult = 0,
    ) -> None:
        self.client = client
        self.lock_node = lock_node
        """Full path of this holder's ephemeral lock znode (fence it inside transactions)."""
        self._token = token
        self.session_id: int = client.client_id[0]
        self._interruptions = interruptions
        self._baseline = baseline
        self._released = False

    @property
    def token(self) -> int:
        """This holder's fencing token: the ``czxid`` of its lock znode. ZooKeeper's
        transaction ids only grow, and a holder's znode is created before it can hold the
        lock, which it gets only after every earlier holder's znode is gone: a later holder
        of one ZooKeeper always has a larger token. A ZooKeeper rebuilt from scratch counts
        again from zero, so SQL's fence (:func:`allot.cycle.fence.claim`) pairs the token with
        the ZooKeeper's generation (:mod:`allot.generation`).

        The lock znode's ``exists`` is sent when the lock is taken and answered while the cycle
        reads; only a fenced SQL write (never a quiet cycle) waits for it here, at most
        :data:`CONFIRM_TIMEOUT` s.

        Raises:
            LockLost: the lock znode is gone or not this session's, or ZooKeeper did not
                answer in time.
        """
        if isinstance(self._token, int):
            return self._token
        stat = self._own_stat(self._token, CONFIRM_TIMEOUT, "give the assignment lock's token")
        self._token = int(stat.czxid)
        return self._token

    def problem(self) -> str | None:
        """Why the lock can no longer be trusted, or None while it can."""
        if self._released:
            return "the assignment lock was released"
        if self._interruptions.count != self._baseline:
            return (
                f"the ZooKeeper connection was {self._interruptions.last} after the assignment "
                "lock was taken"
            )
        if self.client.state != KazooState.CONNECTED:
            return f"the ZooKeeper connection is {self.client.state}"
        client_id = self.client.client_id
        if client_id is None or client_id[0] != self.session_id:
            return "the ZooKeeper session that took the assignment lock has ended"
        return None

    @property
    def valid(self) -> bool:
        """True while :meth:`check` would pass."""
        return self.problem() is None

    def check(self) -> None:
        """Raise unless the lock is still held by an uninterrupted session.

        Raises:
            LockLost: the connection was suspended or lost since the lock was requested, the
                session changed, or the lock was released.
        """
        problem = self.problem()
        if problem is not None:
            raise LockLost(f"{problem}: stopping without writing")

    def confirm(self, timeout: float = CONFIRM_TIMEOUT) -> None:
        """:meth:`check`, then ask ZooKeeper (one round trip) that the lock znode still exists
        and belongs to this session: what a write outside ZooKeeper (SQL) is committed on.
        An answer that takes longer than ``timeout`` s counts as no: a resumed holder whose
        session ended may wait that long for a connection its client does not know is dead.

        Raises:
            LockLost: the guard tripped, the lock znode is gone or not this session's, or
                ZooKeeper did not answer within ``timeout``.
        """
        self.check()
        pending = self.client.exists_async(self.lock_node)
        self._own_stat(pending, timeout, "confirm the assignment lock")

    def _own_stat(self, pending: IAsyncResult, timeout: float, what: str) -> ZnodeStat:
        """The lock znode's stat from ``pending`` (its ``exists``), waiting at most ``timeout``
        s, if the znode is this session's.

        Raises:
            LockLost: no answer in time (ZooKeeper did not ``what``), a ZooKeeper error, or the
                znode gone or not this session's.
        """
        try:
            stat = pending.get(timeout=timeout)
        except self.client.handler.timeout_exception:
            raise LockLost(
                f"ZooKeeper did not {what} within {timeout:g} s: stopping without writing"
            ) from None
        except KazooException as exc:
            raise LockLost(f"ZooKeeper could not {what} ({exc!r})") from None
        if stat is None or stat.ephemeralOwner != self.session_id:
            raise LockLost("the assignment lock znode is gone: stopping without writing")
        return stat

    def _release(self) -> None:
        self._released = True


class AssignmentLock:
    """The lock serializing assignment cycles across processes (kazoo ``Lock`` recipe).

    One instance holds the lock at most once at a time (not re-entrant). A fresh kazoo
    ``Lock`` is used for every acquisition, so a lock lost with an expired session never
    leaves a stale "acquired" flag behind.

    Failure modes:
        SUSPENDED while waiting: kazoo's recipe retries until the connection returns; a
        suspension during acquisition trips the returned guard at once (conservative).
        SUSPENDED / LOST while held: the guard trips (see :class:`LockGuard`); on LOST the
        server deleted the ephemeral lock znode, so another process may take the lock.
        :meth:`release` after a LOST is harmless (the znode is already gone).
        Stale lock znode of a crashed holder: it is ephemeral and vanishes when the crashed
        process's session expires (``zk_session_timeout``); until then the lock is held and
        non-blocking acquisitions return None ("skipped"), as they should: the old holder's
        session could still write.
        Not connected when asked: :class:`~allot.errors.ZooKeeperUnavailable`.
    """

    def __init__(self, client: KazooClient, paths: ZkPaths, identifier: str = "") -> None:
        self.client = client
        self.paths = paths
        self.identifier = identifier
        self._lock: Lock | None = None
        self._guard: LockGuard | None = None
        self._interruptions: _Interruptions | None = None
        self._layout_ready = False

    def acquire(self, timeout: float | None = 0.0) -> LockGuard | None:
        """Take the lock.

        Args:
            timeout: 0 (default) does not wait: returns None when another process holds the
                lock. A positive number waits up to that many seconds; None waits forever.

        Returns:
            The guard of the held lock, or None when it could not be taken in time.

        Raises:
            ZooKeeperUnavailable: the client is not connected.
            AccessDenied: ZooKeeper refused creating the lock znode.
            RuntimeError: this instance already holds the lock.
        """
        if self._guard is not None:
            raise RuntimeError("this AssignmentLock is already held; release it first")
        if self.client.state != KazooState.CONNECTED:
            raise ZooKeeperUnavailable(
                f"cannot take the assignment lock: ZooKeeper connection is {self.client.state}"
            )
        deadline = None if not timeout else time.monotonic() + timeout
        for attempt in (1, 2):
            if not self._layout_ready:
                self._make_layout()
            left = timeout if deadline is None else max(0.001, deadline - time.monotonic())
            try:
                return self._acquire(left)
            except NoNodeError:
                # the lock's parent was deleted since the layout was made (a root wiped by
                # hand): make the layout again, once
                self._layout_ready = False
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _make_layout(self) -> None:
        """The root's layout and the lock's directory, once per process (the recipe is then
        told the directory exists)."""
        ensure_layout(self.client, self.paths)
        try:
            self.client.ensure_path(self.paths.assign_lock)
        except NoAuthError:
            raise AccessDenied(
                "ZooKeeper refused the assignment lock: check ALLOT_ZK_AUTH"
            ) from None
        self._layout_ready = True

    def _acquire(self, timeout: float | None) -> LockGuard | None:
        interruptions = _Interruptions(self.client)
        baseline = interruptions.count
        lock = Lock(self.client, self.paths.assign_lock, self.identifier)
        lock.assured_path = True  # made above, once: skip the recipe's `exists` round trip
        try:
            if timeout == 0:
                got = lock.acquire(blocking=False)
            else:
                got = lock.acquire(blocking=True, timeout=timeout)
        except LockTimeout:
            got = False
        except NoAuthError:
            interruptions.close()
            raise AccessDenied(
                "ZooKeeper refused the assignment lock: check ALLOT_ZK_AUTH"
            ) from None
        except BaseException:
            interruptions.close()
            raise
        if not got:
            interruptions.close()
            return None
        node = f"{lock.path}/{lock.node}"
        # the token (the znode's czxid) is asked now and read when a fenced write needs it: a
        # session that ended right after taking the lock is caught there, by the guard's
        # checks, and by the lock-znode check inside every ZooKeeper transaction
        pending = self.client.exists_async(node)
        self._lock, self._interruptions = lock, interruptions
        self._guard = LockGuard(self.client, node, interruptions, baseline, pending)
        return self._guard

    def release(self, *, deleted: bool = False) -> None:
        """Release the lock if held. Never raises for connection problems: a lock znode that
        cannot be deleted now disappears with the session. ``deleted``: the holder's last
        transaction deleted the lock znode already (:func:`allot.zk.apply.commit_as_holder`
        with ``release``); only the local state is dropped."""
        lock, guard, interruptions = self._lock, self._guard, self._interruptions
        self._lock = self._guard = self._interruptions = None
        if guard is not None:
            guard._release()
        if interruptions is not None:
            interruptions.close()
        if lock is not None and not deleted:
            try:
                lock.release()
            except KazooException as exc:
                log.warning(
                    "could not release the assignment lock (%s); it ends with the session", exc
                )

    @contextmanager
    def holding(self, timeout: float | None = 0.0) -> Iterator[LockGuard | None]:
        """``with lock.holding() as guard:`` takes the lock (see :meth:`acquire`), yields the
        guard or None when not taken, and releases it on exit."""
        guard = self.acquire(timeout)
        try:
            yield guard
        finally:
            if guard is not None:
                self.release()

    def contenders(self) -> list[str]:
        """Identifiers of the processes holding or waiting for the lock, holder first."""
        return [str(c) for c in Lock(self.client, self.paths.assign_lock).contenders()]

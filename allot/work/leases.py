"""Bucket leases and handoff, in a worker's main process.

:class:`BucketWork` turns this node's assignment (watched) into the bucket queues the worker
consumes: (1) **take** the lease ``{root}/leases/{id}`` (ephemeral, in one transaction that
checks the assignment znode's version; its ``czxid`` is the node's *token*), (2) **fence**:
write key and token into ``bucket_lease`` (:func:`allot.work.runs.take_fence`), (3) **serve**
the queue (:class:`~allot.work.consumer.BucketQueues`), (4) **give away**: drop the queue at
once, delete the lease once no message of the bucket runs here (at most
``ALLOT_HANDOFF_TIMEOUT``); the receiver's watch on ``{root}/leases`` wakes it to take it.
SUSPENDED stops every queue at once and keeps the leases; LOST forgets them; a lease znode no
session owns is foreign and deleted. The argument, case by case, is in :mod:`allot.work`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.protocol.states import ZnodeStat
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from allot.work.fence import FenceRow, read_fences, take_fence
from allot.zk.codec import decode_buckets, decode_version
from allot.zk.paths import ZkPaths

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
"""How often the loop runs when nothing wakes it (drains, retries after an SQL error)."""

REREAD_SECONDS = 5.0
"""How often the loop reads the node's assignment and checks its leases even when no watch
fired: a watch lost with a session, or never set again, delays a change by this at most."""


class BucketWork:
    """This node's leases and the bucket queues it serves.

    ``serve(buckets) -> generation`` switches the consumed queues; ``applied()`` says which
    generation the worker has applied; ``busy()`` gives the buckets with messages taken and
    not finished. They are Celery's in a worker (:mod:`allot.work.consumer`) and plain
    callables in tests. ``after_pass(serving)`` runs after every pass (the periodic ticker);
    ``on_handoff(seconds)`` after each bucket given away, with the time from dropping its
    queue to releasing its lease (the node's metrics).
    """

    def __init__(
        self,
        client: KazooClient,
        paths: ZkPaths,
        node_key: str,
        sessions: sessionmaker[Session],
        *,
        serve: Callable[[frozenset[int]], int],
        applied: Callable[[], int],
        busy: Callable[[], set[int]],
        handoff_timeout: float,
        after_pass: Callable[[frozenset[int]], object] | None = None,
        on_handoff: Callable[[float], object] | None = None,
        reread_seconds: float = REREAD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.paths = paths
        self.node_key = node_key
        self.sessions = sessions
        self._serve = serve
        self._applied = applied
        self._busy = busy
        self.handoff_timeout = handoff_timeout
        self._after_pass = after_pass
        self._on_handoff = on_handoff
        self.reread_seconds = reread_seconds
        self._clock = clock
        self.assigned: frozenset[int] = frozenset()
        self._assignment_version = -1
        self.held: dict[int, int] = {}
        """Bucket -> token (the czxid of this node's lease znode)."""
        self.fenced: set[int] = set()
        """Held buckets whose SQL fence names this node and token."""
        self.serving: frozenset[int] = frozenset()
        self.draining: dict[int, tuple[float, int]] = {}
        """Bucket -> (deadline, generation at which its queue is dropped)."""
        self._suspended = False
        self._lost = False
        self._check_leases = True
        self._scan_leases = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sql_warned = False
        self._refused: set[tuple[int, int]] = set()
        """(bucket, token) whose fence a larger token refused: logged once."""
        self._next_reread = 0.0
        self._assignment_lock = threading.Lock()
        self._assignment_stat: ZnodeStat | None = None

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Watch the assignment and the leases, and run the loop in a daemon thread."""
        self.client.ensure_path(self.paths.leases)
        self.client.add_listener(self._on_state)
        DataWatch(self.client, self.paths.assignments(self.node_key), self._on_assignment)
        ChildrenWatch(self.client, self.paths.leases, self._on_leases)
        self._thread = threading.Thread(target=self._loop, name="allot-leases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and stop the loop. The leases end with the session (or the next
        :meth:`release_all`)."""
        self._stop.set()
        self._wake.set()
        self._publish(frozenset())
        if self._thread is not None:
            self._thread.join(5)

    def release_all(self) -> None:
        """Delete every lease this node holds (a clean stop, after running tasks finished);
        one ZooKeeper cannot delete ends with the session."""
        for bucket in list(self.held):
            try:
                self._release(bucket)
            except KazooException as exc:
                log.warning("lease of bucket %d kept (%r)", bucket, exc)

    # -- events (kazoo's threads: never block, never take a ZooKeeper call) -------------------

    def _on_state(self, state: str) -> None:
        if state in (KazooState.SUSPENDED, KazooState.LOST):
            self._suspended = True
            self._lost = self._lost or state == KazooState.LOST
            self._serve(frozenset())  # take no new task, now
            log.warning("ZooKeeper session %s: bucket queues stopped", state.lower())
        else:
            self._suspended = False
            self._scan_leases = True
        self._wake.set()

    def _on_assignment(self, data: bytes | None, stat: ZnodeStat | None, *_: Any) -> None:
        with self._assignment_lock:
            seen = self._assignment_stat
            older = stat is not None and seen is not None and stat.czxid == seen.czxid
            if older and stat.version < seen.version:  # type: ignore[union-attr]
                return  # an older read (the re-read raced the watch): keep the newer
            self._assignment_stat = stat
            self._store_assignment(data, stat)
        self._wake.set()

    def _store_assignment(self, data: bytes | None, stat: ZnodeStat | None) -> None:
        try:
            buckets = frozenset(decode_buckets(data)) if data is not None else frozenset()
        except ValueError as exc:
            log.error("own assignment unreadable (%s): serving no bucket until it is fixed", exc)
            buckets = frozenset()
        self.assigned, self._assignment_version = buckets, (stat.version if stat else -1)

    def _on_leases(self, _children: list[str]) -> None:
        self._check_leases = True
        self._wake.set()

    # -- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.reconcile()
            except KazooException as exc:
                self._scan_leases = True  # a take or a release may have half happened
                log.warning("lease reconcile interrupted by ZooKeeper: %r", exc)
            except Exception:
                log.exception("lease reconcile failed; trying again")

    def reconcile(self) -> None:
        """One pass of steps 1-4 (see the module docstring)."""
        if self._lost:
            self._lost = False
            if self.held:
                log.warning("session lost: leases of buckets %s are gone", sorted(self.held))
            self.held.clear()
            self.fenced.clear()
            self.draining.clear()
            self.serving = frozenset()
        if self._suspended or not self.client.connected:
            # take nothing new; ``serving`` is kept, so a bucket that moves away meanwhile is
            # drained (not released under a running task) once the session is back
            self._serve(frozenset())
            return
        if self._scan_leases:
            self._scan_leases = False
            self._adopt_strays()
        now = self._clock()
        if now >= self._next_reread:
            self._next_reread = now + self.reread_seconds
            self._reread_assignment()
            self._check_leases = True
            self._verify_fences()
        if self._check_leases:
            self._check_leases = False
            self._verify_held()
        assigned, version = self.assigned, self._assignment_version
        # 4. give away: drop the queue first, release once drained (or the handoff timed out)
        leaving = self.serving - assigned
        if leaving:
            generation = self._publish(self.serving & assigned)
            for bucket in leaving:
                self.draining[bucket] = (now + self.handoff_timeout, generation)
                log.info("bucket %d moved away: draining before its lease is released", bucket)
        busy = self._busy() if self.draining else set()
        for bucket, (deadline, generation) in list(self.draining.items()):
            if bucket in assigned:  # it came back before it was released: keep the lease
                del self.draining[bucket]
                continue
            dropped = self._applied() >= generation
            if dropped and bucket not in busy:
                self._release(bucket)
            elif now >= deadline:
                log.warning(
                    "bucket %d: handoff timeout (%g s) with work still running: releasing; "
                    "its commits are refused from now on", bucket, self.handoff_timeout,
                )  # fmt: skip
                self._release(bucket)
            else:
                continue
            if self._on_handoff is not None:
                self._on_handoff(max(now - (deadline - self.handoff_timeout), 0.0))
            del self.draining[bucket]
        for bucket in set(self.held) - assigned - set(self.draining):
            # held, never served or no longer served (a suspension): released once no message
            # of it runs here, at most the handoff timeout from now
            self.draining[bucket] = (now + self.handoff_timeout, self._applied())
        # 1. take, 2. fence
        epoch: int | None = None
        for bucket in sorted(assigned - set(self.held)):
            if epoch is None:
                epoch = self._epoch()
            self._take(bucket, version, epoch)
        for bucket in sorted((assigned & set(self.held)) - self.fenced):
            self._fence(bucket)
        # 3. serve (unless the session was suspended during this pass)
        if self._suspended:
            self._serve(frozenset())
            return
        self._publish(frozenset(assigned & self.fenced))
        if self._after_pass is not None:
            self._after_pass(self.serving)

    def _publish(self, buckets: frozenset[int]) -> int:
        generation = self._serve(buckets)
        self.serving = buckets
        return generation

    # -- ZooKeeper and SQL steps --------------------------------------------------------------

    def _reread_assignment(self) -> None:
        try:
            data, stat = self.client.get(self.paths.assignments(self.node_key))
        except NoNodeError:
            data, stat = None, None
        self._on_assignment(data, stat)

    def _epoch(self) -> int:
        try:
            data, _ = self.client.get(self.paths.assignment_version)
            return decode_version(data).epoch
        except (NoNodeError, ValueError):
            return 0

    def _take(self, bucket: int, version: int, epoch: int) -> None:
        if version < 0:
            return  # no assignment znode: nothing is assigned (and -1 would match any version)
        path = self.paths.lease(bucket)
        body = json.dumps({"node_key": self.node_key, "epoch": epoch}).encode()
        transaction = self.client.transaction()
        transaction.check(self.paths.assignments(self.node_key), version)
        transaction.create(path, body, ephemeral=True)
        results = transaction.commit()
        if any(isinstance(result, NodeExistsError) for result in results):
            self._adopt_or_clear(bucket)
            return
        if any(isinstance(result, Exception) for result in results):
            return  # the assignment changed under us: its watch brings the new one
        stat = self.client.exists(path)
        if stat is None or stat.ephemeralOwner != self.client.client_id[0]:
            return
        self.held[bucket] = stat.czxid
        log.info("took the lease of bucket %d (token %d)", bucket, stat.czxid)

    def _adopt_or_clear(self, bucket: int) -> None:
        """The lease exists: ours from before (adopt it), another session's (wait for its
        deletion), or a persistent znode no session owns (foreign: delete it)."""
        path = self.paths.lease(bucket)
        stat = self.client.exists(path)
        if stat is None:
            self._wake.set()
        elif stat.ephemeralOwner == self.client.client_id[0]:
            self.held[bucket] = stat.czxid
        elif stat.ephemeralOwner == 0:
            log.warning("leases/%d is not a lease (a persistent znode): deleting it", bucket)
            with contextlib.suppress(NoNodeError, KazooException):
                self.client.delete(path, version=stat.version)
            self._wake.set()

    def _fence(self, bucket: int) -> None:
        token = self.held[bucket]
        try:
            with self.sessions.begin() as session:
                taken = take_fence(session, bucket, self.node_key, token)
        except DBAPIError as exc:
            if not self._sql_warned:
                log.warning("cannot fence bucket %d in SQL (%s): not serving it yet", bucket, exc)
                self._sql_warned = True
            return
        self._sql_warned = False
        if taken:
            self.fenced.add(bucket)
            self._refused.discard((bucket, token))
        elif (bucket, token) not in self._refused:
            self._refused.add((bucket, token))
            log.error(
                "bucket %d: SQL's fence has a larger token than this node's lease (%d): "
                "not serving it; a newer holder exists", bucket, token,
            )  # fmt: skip

    def _release(self, bucket: int) -> None:
        """Delete this node's lease of ``bucket``, then forget it. A ZooKeeper error leaves
        the bucket held (and draining), so the next pass tries again."""
        self.fenced.discard(bucket)
        path = self.paths.lease(bucket)
        stat = self.client.exists(path)
        if stat is not None and stat.ephemeralOwner == self.client.client_id[0]:
            with contextlib.suppress(NoNodeError):
                self.client.delete(path, version=stat.version)
            log.info("released the lease of bucket %d", bucket)
        self.held.pop(bucket, None)

    def _adopt_strays(self) -> None:
        """Leases of this session that ``held`` does not list (a take whose reply was lost to
        a ZooKeeper error, a pass that raced a reconnect): adopted when the bucket is assigned
        here, deleted otherwise. Runs after every interrupted pass and reconnect."""
        session = self.client.client_id[0]
        for name in self.client.get_children(self.paths.leases):
            if not name.isdigit() or int(name) in self.held:
                continue
            bucket = int(name)
            stat = self.client.exists(self.paths.lease(bucket))
            if stat is None or stat.ephemeralOwner != session:
                continue
            if bucket in self.assigned:
                self.held[bucket] = stat.czxid
                log.warning("adopted this session's lease of bucket %d", bucket)
            else:
                with contextlib.suppress(NoNodeError):
                    self.client.delete(self.paths.lease(bucket), version=stat.version)
                log.warning("deleted this session's stray lease of bucket %d", bucket)

    def _verify_fences(self) -> None:
        """Re-read the SQL fences: one not naming this node and token was changed by a foreign
        writer; the bucket is fenced again (left unserved past a larger token)."""
        if not self.fenced:
            return
        try:
            with self.sessions() as session:
                found = read_fences(session, self.fenced)
        except DBAPIError:
            return  # SQL down: commits are refused or fail anyway; checked at the next re-read
        for bucket in sorted(self.fenced):
            mine = FenceRow(bucket, self.node_key, self.held.get(bucket, -1))
            if found.get(bucket) != mine:
                log.warning("bucket %d: SQL fence changed by another writer", bucket)
                self.fenced.discard(bucket)

    def _verify_held(self) -> None:
        """Forget leases that are no longer this session's (deleted or replaced by a foreign
        writer): stop their queues at once."""
        if not self.held:
            return
        session = self.client.client_id[0]
        for bucket in list(self.held):
            stat = self.client.exists(self.paths.lease(bucket))
            if stat is None or stat.ephemeralOwner != session or stat.czxid != self.held[bucket]:
                log.warning("the lease of bucket %d is no longer this node's: stopping it", bucket)
                self.held.pop(bucket, None)
                self.fenced.discard(bucket)
                self.draining.pop(bucket, None)
                self._publish(self.serving - {bucket})

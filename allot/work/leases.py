"""Bucket leases and handoff, in a worker's main process.

:class:`BucketWork` turns this node's assignment (``{root}/bucket-assignments/{key}/assignments``,
watched) into the set of bucket queues the worker consumes, through leases:

1. **Take.** For a bucket assigned here whose lease ``{root}/leases/{id}`` does not exist, one
   ZooKeeper transaction checks that the assignment znode still has the version this node
   read and creates the lease, ephemeral, JSON ``{"node_key","epoch"}``. Its ``czxid`` is the
   node's *token* for the bucket.
2. **Fence.** The node writes its key and token into the bucket's ``bucket_lease`` row
   (:func:`allot.work.runs.take_fence`); that waits for a commit of the previous holder in
   flight and refuses every later one.
3. **Serve.** Only then is the bucket's queue consumed (:class:`~allot.work.consumer.BucketQueues`).
4. **Give away.** When the bucket leaves the assignment, its queue is dropped at once; once the
   worker confirms the drop and holds none of the bucket's messages any more, or
   ``ALLOT_HANDOFF_TIMEOUT`` after the drop, the lease is deleted. The receiver, whose take
   failed while the lease existed, is woken by a watch on ``{root}/leases`` and takes it.

A session that is SUSPENDED stops every queue at once (the listener does not wait for the
loop) and keeps the leases (ZooKeeper decides whether they survive); a LOST session forgets
every lease (its ephemeral znodes are gone) and the loop starts again from step 1. A lease
znode that is not ephemeral belongs to no session: it is foreign data and is deleted. Whether
each step can race a move, a freeze or a crash is argued in :mod:`allot.work`.
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

from allot.work.runs import FenceRow, read_fences, take_fence
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
        """Delete every lease this node holds (a clean stop, after running tasks finished)."""
        for bucket in list(self.held):
            self._release(bucket)

    # -- events (kazoo's threads: never block, never take a ZooKeeper call) -------------------

    def _on_state(self, state: str) -> None:
        if state in (KazooState.SUSPENDED, KazooState.LOST):
            self._suspended = True
            self._lost = self._lost or state == KazooState.LOST
            self._serve(frozenset())  # take no new task, now
            log.warning("ZooKeeper session %s: bucket queues stopped", state.lower())
        else:
            self._suspended = False
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
            self._publish(frozenset())
            return
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
            if bucket not in self.serving:
                self._release(bucket)
        # 1. take, 2. fence
        epoch: int | None = None
        for bucket in sorted(assigned - set(self.held)):
            if epoch is None:
                epoch = self._epoch()
            self._take(bucket, version, epoch)
        for bucket in sorted((assigned & set(self.held)) - self.fenced):
            self._fence(bucket)
        # 3. serve
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
        self.held.pop(bucket, None)
        self.fenced.discard(bucket)
        path = self.paths.lease(bucket)
        try:
            stat = self.client.exists(path)
            if stat is not None and stat.ephemeralOwner == self.client.client_id[0]:
                self.client.delete(path, version=stat.version)
                log.info("released the lease of bucket %d", bucket)
        except NoNodeError:
            pass

    def _verify_fences(self) -> None:
        """Re-read the SQL fence of every fenced bucket. Only a holder of the bucket's lease
        writes it, so a fence that no longer names this node and token was changed by a
        foreign writer: the bucket is fenced again before it is served (refused, and left
        unserved, when the writer put a larger token there). Until this re-read, such a
        bucket's tasks are sent back (they cannot commit), at most ``REREAD_SECONDS``."""
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
                log.warning(
                    "bucket %d: the SQL fence was changed by someone else (%s): fencing it "
                    "again", bucket, found.get(bucket),
                )  # fmt: skip
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

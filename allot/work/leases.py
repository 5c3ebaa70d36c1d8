"""Bucket leases and handoff, in a worker's main process.

:class:`BucketWork` turns this node's assignment (watched) into the bucket queues the worker
consumes: (1) **take** the lease ``{root}/leases/{id}`` (ephemeral, in one transaction that
checks the assignment znode's version; its ``czxid`` is the node's *token*), (2) **fence**:
write key, ZooKeeper generation (:mod:`allot.generation`, read after the take) and token
into ``bucket_lease`` (:func:`allot.work.fence.take_fence`), then give the previous holder's
unacknowledged messages back to the queue (:mod:`allot.work.redelivery`), (3) **serve** the
queue (:class:`~allot.work.consumer.BucketQueues`), (4) **give away**: drop the queue at once,
delete the lease once no message of the bucket runs here (at most
``ALLOT_HANDOFF_TIMEOUT``); the receiver's watch on that lease wakes it to take it.
A node watches only the leases of its own buckets, those it holds and those it waits to take
(one ``exists`` watch each), so another node's lease changing costs it nothing, and a
reconnect reads those leases again, never the whole ``{root}/leases``.
Takes go out :data:`TAKE_BATCH` in flight at a time and fences :data:`FENCE_BATCH` per SQL
transaction, so a node given thousands of buckets serves them after a few round trips.
Each bucket is in one :class:`Phase`, the session in one :class:`Session` (the transitions are
drawn in :class:`BucketWork`). SUSPENDED stops every queue at once and keeps the leases; LOST
forgets them; a lease znode no session owns is foreign and deleted. The (ZooKeeper
generation, token) pair of each bucket served, its fence's, is written into the worker's shared
:class:`~allot.work.tokens.TokenTable`, from which its pool processes run and commit, and
cleared when the bucket stops being served. The argument, case by case, is in
:mod:`allot.work`.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.protocol.states import WatchedEvent, ZnodeStat
from kazoo.recipe.watchers import DataWatch
from redis import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from allot.generation import allocate_generation, zk_generation
from allot.work.fence import FenceRow, read_fences, take_fence
from allot.work.tokens import TokenTable
from allot.zk.codec import LeaseRecord, decode_buckets, decode_version, encode_lease
from allot.zk.leases import lease_bucket
from allot.zk.paths import ZkPaths

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
"""How often the loop runs when nothing wakes it (drains, retries after an SQL error)."""

REREAD_SECONDS = 5.0
"""How often the loop reads the node's assignment and its fences, checks a slice of its held
leases (:data:`SWEEP_LEASES`) and tries again to take the leases it waits for, even when no
watch fired."""

TAKE_BATCH = 500
"""Lease takes in flight at once (each a small transaction): a node given thousands of buckets
takes them in a few round trips."""

FENCE_BATCH = 200
"""SQL fences written per transaction after the leases were taken."""

SWEEP_LEASES = 200
"""Held leases read again per re-read when their watch did not fire: a safety net against a
watch lost without a reconnect, which every held lease passes through within
``ceil(held / SWEEP_LEASES)`` re-reads (5 s with up to 200 leases, 205 s with 8,192). Reading
them all every time cost a node holding 8,000 leases 1,600 requests per second at rest; a lease
lost without its watch firing is still refused at the SQL fence on the next commit."""


class Phase(enum.Enum):
    """Where one bucket of this node is, from taking its lease to releasing it (a bucket
    whose lease this node does not hold has no phase)."""

    TAKEN = "taken"
    """The lease is this session's; the SQL fence is not written (yet: SQL down, or refused
    by a larger token). Not served."""
    FENCED = "fenced"
    """The fence names this node and token; served at the end of the pass."""
    SERVING = "serving"
    """Its queue is consumed (while the session is connected)."""
    DRAINING = "draining"
    """Assigned elsewhere: its queue is dropped; the lease is deleted once no message of it
    runs here, or at the handoff deadline."""


class ZkSession(enum.Enum):
    """The ZooKeeper session as the loop last followed it (kazoo's states, in order)."""

    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"


class Recheck(enum.Enum):
    """A check the next pass owes (besides the leases whose watch fired, checked each pass)."""

    HELD = "held"
    """Are all the held leases still this session's? (a re-read is due, or a reconnect: kazoo
    drops every watch when the connection drops, so each is set again by this read)"""
    STRAYS = "strays"
    """Does this session own a lease the node does not know, among the buckets whose take may
    have half happened? (a reconnect, an interrupted pass)"""


_MOVES: dict[Phase | None, frozenset[Phase | None]] = {
    None: frozenset({Phase.TAKEN}),
    Phase.TAKEN: frozenset({Phase.FENCED, Phase.DRAINING, None}),
    Phase.FENCED: frozenset({Phase.SERVING, Phase.TAKEN, Phase.DRAINING, None}),
    Phase.SERVING: frozenset({Phase.FENCED, Phase.TAKEN, Phase.DRAINING, None}),
    Phase.DRAINING: frozenset({Phase.TAKEN, None}),
}
"""The phase changes :class:`BucketWork` draws (None: no lease held)."""


@dataclass(frozen=True)
class _Bucket:
    """A bucket whose lease this node holds: its ``phase``, its lease's ``token``, the
    ZooKeeper generation its fence was written with (``zk_generation``, -1 before) and, while
    DRAINING, ``since`` (when its queue was dropped) and the queue ``generation`` that drops
    it."""

    phase: Phase
    token: int
    since: float = 0.0
    generation: int = 0
    zk_generation: int = -1


class BucketWork:
    """This node's leases and the bucket queues it serves.

    ``serve(buckets) -> generation`` switches the consumed queues; ``applied()`` says which
    generation the worker has applied; ``busy()`` gives the buckets with messages taken and
    not finished. They are Celery's in a worker (:mod:`allot.work.consumer`) and plain
    callables in tests. ``after_pass(serving)`` runs after every pass (the periodic ticker);
    ``on_handoff(seconds)`` after each bucket given away, with the time from dropping its
    queue to releasing its lease (the node's metrics). :attr:`passes` counts completed passes.

    ``tokens`` (:mod:`allot.work.tokens`) is where the pool processes find the (generation,
    token) pair they run a bucket's work under, the pair its fence was written with: a
    bucket's pair is written before its queue is consumed, kept while it is SERVING or
    DRAINING (the work it has taken finishes under it), and cleared (token 0) in any other
    phase, when the session is SUSPENDED or LOST, and on :meth:`stop`; a run that starts on a
    cleared bucket is sent back untouched.

    ``restore(buckets) -> count`` gives the unacknowledged messages of ``buckets`` back to
    their queues (:func:`allot.work.redelivery.bucket_restorer`). It runs once per pass for
    every bucket fenced in that pass under a new lease, after the fence and before the queue
    is consumed: it cannot tell a dead holder's delivery from a live one, so it must run while
    nobody consumes the queue, and a killed holder's messages come back at once instead of
    after ``ALLOT_REDELIVERY_TIMEOUT``. It is safe after a clean handoff (the donor drained:
    nothing to restore) and after a drain that timed out (a message the old holder still runs
    is delivered a second time: that costs at most a wasted run, since the fence refuses the
    old holder's commit and the committed-run index a second commit). A bucket fenced again
    under the lease it already held (it came back while DRAINING, its fence was rewritten
    after a foreign write) is not restored: its messages may be this node's own. A Redis
    error is logged and the bucket served anyway (kombu's sweeper restores them later).

    Each bucket whose lease this node holds is in one :class:`Phase` (:meth:`phase`), changed
    only by :meth:`_enter`::

        (none) --take--> TAKEN --fence--> FENCED --serve--> SERVING
                          ^ |                |                  |
              came back   | | not assigned   | not assigned     | assigned elsewhere:
              (fenced     | |                |                  | queue dropped
              again)      | v                v                  v
                          DRAINING <---------+------------------+
                            |
                            +-- no message of it runs here, or the handoff timeout:
                                lease deleted --> (none)

    Besides: FENCED or SERVING -> TAKEN when a re-read finds the fence changed by another
    writer (queue stopped at once, fenced again if still assigned: refused past a larger
    token); SERVING -> FENCED when the work stops; any phase -> (none) when the lease is no
    longer this session's, when the session is LOST, or on :meth:`release_all`. A bucket that
    comes back while DRAINING keeps its lease and token; its fence is written again.

    The session (:class:`ZkSession`), followed by the loop in the order kazoo reported it::

        CONNECTED --SUSPENDED--> SUSPENDED --CONNECTED--> CONNECTED (+ read the held leases
            |                       |                                and those in doubt)
            +--------LOST-----------+--> LOST (every bucket forgotten)
                                           |
                                           +--CONNECTED (a new session)--> CONNECTED

    Error handling:
        SUSPENDED: the state listener stops every queue at once (kazoo's thread, no ZooKeeper
        call); leases and phases are kept and the loop takes and releases nothing until the
        session is back; then a bucket that moved away meanwhile is drained like any other
        (its lease kept until no message of it runs here).
        LOST: the leases ended with the session: every bucket is forgotten, and taken again
        (new token, fence written again) only if still assigned here and free.
        A stale ephemeral node: a lease of this session the node does not know (a take
        whose reply was lost to a ZooKeeper error: the bucket stays *in doubt* until its lease
        is read) is adopted when its bucket is assigned here and deleted otherwise, after
        every interrupted pass and reconnect; a lease of another session (this node's
        previous process before its session expired, a donor draining) is waited for, its
        watch waking the loop when ZooKeeper deletes it; a persistent znode in a lease's place
        is foreign and deleted. A ZooKeeper error mid-pass ends the pass; the next one checks
        the buckets in doubt and every held lease.
        Watches: one ``exists`` watch per lease of a bucket held, or waited for (another
        session holds it), set by the read that found it so; it fires on any change of that
        znode, and the next pass checks that bucket alone. Kazoo drops every watch when the
        connection drops (SUSPENDED), so a reconnect reads each held lease again (setting its
        watch) and tries again to take each bucket waited for: what the node holds or takes,
        never the other nodes' leases. A watch lost otherwise delays a change by
        ``ceil(held / SWEEP_LEASES)`` re-reads at most (the re-reads sweep the held leases).
        SQL down: no fence can be written, so a TAKEN bucket is not served (logged once).
        ZooKeeper rebuilt from scratch (a new ensemble, its tokens small again): the first
        node to fence finds no ``{root}/generation`` and allocates a larger generation in
        SQL, so the fences are taken over; a node still on the old ZooKeeper is refused (its
        generation is smaller) and its buckets stop there. ``{root}/generation`` unreadable:
        nothing is fenced (logged) until it is fixed or deleted.
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
        restore: Callable[[frozenset[int]], int] | None = None,
        reread_seconds: float = REREAD_SECONDS,
        sweep_leases: int = SWEEP_LEASES,
        clock: Callable[[], float] = time.monotonic,
        tokens: TokenTable | None = None,
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
        self._restore = restore
        self.reread_seconds = reread_seconds
        self.sweep_leases = sweep_leases
        self._swept_to = 0
        """The last bucket the re-reads' sweep of the held leases read (it goes on after it)."""
        self._clock = clock
        self.tokens = tokens
        self.assigned: frozenset[int] = frozenset()
        self._assignment_version = -1
        self.session = ZkSession.CONNECTED
        """The session as the loop last followed it (changed only by :meth:`_follow_session`)."""
        self.passes = 0
        """Completed passes: each ended by handing the served buckets to ``serve``."""
        self._buckets: dict[int, _Bucket] = {}
        self._events: deque[str] = deque()
        """Session states reported by kazoo, not yet followed by the loop."""
        self._due: set[Recheck] = {Recheck.HELD}
        self._touched: set[int] = set()
        """Buckets whose lease watch fired (kazoo's thread adds, the loop takes them)."""
        self._touched_lock = threading.Lock()
        self._waiting: set[int] = set()
        """Assigned buckets whose lease another session holds: not taken again until their
        watch fires (or the next re-read or reconnect)."""
        self._in_doubt: set[int] = set()
        """Buckets whose take may have half happened (its reply lost): checked for a lease of
        this session after an interrupted pass or a reconnect."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sql_warned = False
        self._refused: set[tuple[int, int]] = set()
        """(bucket, token) whose fence a larger token refused: logged once."""
        self._next_reread = 0.0
        self._restored: dict[int, tuple[int, int]] = {}
        """Bucket -> the token of the lease under which its messages were last given back."""
        self._assignment_lock = threading.Lock()
        self._assignment_stat: ZnodeStat | None = None
        self.consumer_cut = False
        """Set while the worker's consumer cannot reach the broker (:meth:`cut_from_broker`)."""

    def cut_from_broker(self, cut: bool) -> None:
        """Say whether the worker's consumer is cut from the broker (the node stepped aside,
        :mod:`allot.work.stepaside`). While it is, a draining bucket is released as soon as no
        message of it is taken here (running, reserved or waiting for its ETA), without waiting
        for the consumer to confirm its queue was dropped: a consumer cut from the broker
        cannot take a new message, and cannot confirm anything until it reconnects, so the
        drain would otherwise wait out ``ALLOT_HANDOFF_TIMEOUT``. Should it take one after it
        reconnects, before its queues are switched, the message finds no lease of this node
        and goes back to its queue untouched, and a commit under an old pair is refused by the
        fence (docs/table-work.md, case 17). Safe from any thread."""
        self.consumer_cut = cut
        self._wake.set()

    # -- what it holds ------------------------------------------------------------------------

    def phase(self, bucket: int) -> Phase | None:
        """The phase of ``bucket``, or None when this node holds no lease of it."""
        entry = self._buckets.get(bucket)
        return None if entry is None else entry.phase

    def in_phase(self, *phases: Phase) -> frozenset[int]:
        """The buckets in any of ``phases``."""
        return frozenset(b for b, entry in self._buckets.copy().items() if entry.phase in phases)

    @property
    def held(self) -> dict[int, int]:
        """Bucket -> token (the czxid of this node's lease znode), for every lease held."""
        return {bucket: entry.token for bucket, entry in self._buckets.copy().items()}

    @property
    def serving(self) -> frozenset[int]:
        """The buckets whose queues this node consumes (while the session is connected)."""
        return self.in_phase(Phase.SERVING)

    def _enter(
        self,
        bucket: int,
        phase: Phase | None,
        *,
        token: int | None = None,
        since: float = 0.0,
        generation: int = 0,
        zk_generation: int | None = None,
    ) -> None:
        """Move ``bucket`` to ``phase`` (None: forget it), the one place phases change; the
        token is kept unless ``token`` is given (taking or adopting a lease), the fence's
        ZooKeeper generation unless ``zk_generation`` is given (fencing) or the token changes.

        Raises:
            RuntimeError: a move the class docstring does not draw (a bug).
        """
        entry = self._buckets.get(bucket)
        before = None if entry is None else entry.phase
        if phase not in _MOVES[before]:
            raise RuntimeError(f"bucket {bucket}: no move from {before} to {phase}")
        if self.tokens is not None and phase not in (Phase.SERVING, Phase.DRAINING):
            self.tokens.forget(bucket)  # written again by _serve_fenced if served again
        if phase is None:
            self._buckets.pop(bucket, None)
            return
        kept = token if token is not None else entry.token if entry is not None else -1
        if zk_generation is None:
            same_lease = entry is not None and token in (None, entry.token)
            zk_generation = entry.zk_generation if same_lease else -1  # type: ignore[union-attr]
        self._buckets[bucket] = _Bucket(phase, kept, since, generation, zk_generation)

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Watch the assignment, and run the loop in a daemon thread (it watches the leases of
        the node's own buckets as it takes them)."""
        self.client.ensure_path(self.paths.leases)
        self.client.add_listener(self._on_state)
        DataWatch(self.client, self.paths.assignments(self.node_key), self._on_assignment)
        self._thread = threading.Thread(target=self._loop, name="allot-leases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and stop the loop: no queue consumed, every token cleared (a run that
        starts from now on is sent back). The leases end with the session (or the next
        :meth:`release_all`)."""
        self._stop.set()
        self._wake.set()
        self._serve(frozenset())
        self._forget_tokens()
        if self._thread is not None:
            self._thread.join(5)
            if self._thread.is_alive():
                return  # the loop still owns the phases; it ends after its pass
        self._forget_tokens()  # a pass that was ending may have written some again
        for bucket in self.serving:
            self._enter(bucket, Phase.FENCED)

    def release_all(self) -> None:
        """Delete every lease this node holds (a clean stop, after running tasks finished);
        one ZooKeeper cannot delete ends with the session."""
        for bucket in sorted(self._buckets.copy()):
            try:
                self._release(bucket)
            except KazooException as exc:
                log.warning("lease of bucket %d kept (%r)", bucket, exc)

    # -- events (kazoo's threads: never block, never take a ZooKeeper call) -------------------

    def _on_state(self, state: str) -> None:
        if state in (KazooState.SUSPENDED, KazooState.LOST):
            self._serve(frozenset())  # take no new task, now
            self._forget_tokens()  # and start none of those taken
            log.warning("ZooKeeper session %s: bucket queues stopped", state.lower())
        self._events.append(state)  # followed by the loop, in order
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

    def _on_lease(self, event: WatchedEvent) -> None:
        """The watch on one lease fired: the next pass checks that bucket. (An event without
        a path is kazoo dropping every watch with the connection: the reconnect reads again.)"""
        bucket = None if event.path is None else lease_bucket(event.path.rsplit("/", 1)[-1])
        if bucket is not None:
            with self._touched_lock:
                self._touched.add(bucket)
        self._wake.set()

    def _take_touched(self) -> set[int]:
        """The buckets whose lease watch fired since the last call."""
        with self._touched_lock:
            touched, self._touched = self._touched, set()
        return touched

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
                # a take may have half happened, a check may have been cut short
                self._due |= {Recheck.STRAYS, Recheck.HELD}
                log.warning("lease reconcile interrupted by ZooKeeper: %r", exc)
            except Exception:
                log.exception("lease reconcile failed; trying again")

    def reconcile(self) -> None:
        """One pass: follow the session, run the checks owed, give away (4), take (1), fence
        (2) and serve (3) (see the module docstring)."""
        self._follow_session()
        if self.session is not ZkSession.CONNECTED or not self.client.connected:
            # take nothing new; the phases are kept, so a bucket that moves away meanwhile is
            # drained (not released under a running task) once the session is back
            self._serve(frozenset())
            self._forget_tokens()
            return
        now = self._clock()
        self._recheck(now)
        assigned, version = self.assigned, self._assignment_version
        self._give_away(assigned, now)
        self._take_assigned(assigned, version)
        unfenced = self.in_phase(Phase.TAKEN) & assigned
        self._fence_taken(unfenced)
        self._give_back(self.in_phase(Phase.FENCED) & unfenced)
        if self._events or not self.client.connected:
            self._serve(frozenset())  # the session changed during this pass: the next follows it
            self._forget_tokens()
            return
        self._serve_fenced()
        if self._after_pass is not None:
            self._after_pass(self.serving)
        self.passes += 1

    def _follow_session(self) -> None:
        """Apply the session states kazoo reported, in order: the one place the session
        changes. LOST forgets every bucket; CONNECTED owes a check for strays and
        of every held lease (which sets its watch again), and a new try at every bucket
        waited for."""
        while self._events:
            self.session = ZkSession(self._events.popleft().lower())
            if self.session is ZkSession.LOST:
                if self._buckets:
                    log.warning(
                        "session lost: leases of buckets %s are gone", sorted(self._buckets)
                    )
                for bucket in list(self._buckets):
                    self._enter(bucket, None)
                self._in_doubt.clear()  # the session's leases went with it
            elif self.session is ZkSession.CONNECTED:
                self._due |= {Recheck.STRAYS, Recheck.HELD}
            self._waiting.clear()

    def _recheck(self, now: float) -> None:
        """The checks owed: strays, then (every ``reread_seconds``) the assignment, the fences
        and the next slice of the held leases, then the held leases: all of them when owed
        (a reconnect), else those whose watch fired (and the slice). A bucket waited for whose
        watch fired (or all, at a re-read) is tried again."""
        if self._owed(Recheck.STRAYS):
            self._check_in_doubt()
        touched = self._take_touched()
        self._waiting -= touched
        if now >= self._next_reread:
            self._next_reread = now + self.reread_seconds
            self._reread_assignment()
            self._waiting.clear()
            self._verify_fences()
            touched |= self._sweep()
        if self._owed(Recheck.HELD):
            self._verify_held(self._buckets.keys())
        else:
            self._verify_held(touched)

    def _sweep(self) -> set[int]:
        """The next :attr:`sweep_leases` held buckets after the last one swept, in bucket
        order and wrapping around: every held lease is read within ``ceil(held / sweep)``
        re-reads."""
        held = sorted(self._buckets)
        start = bisect.bisect_right(held, self._swept_to)
        chosen = (held[start:] + held[:start])[: self.sweep_leases]
        if chosen:
            self._swept_to = chosen[-1]
        return set(chosen)

    def _owed(self, check: Recheck) -> bool:
        """Whether ``check`` was owed (it no longer is)."""
        try:
            self._due.remove(check)
        except KeyError:
            return False
        return True

    def _give_away(self, assigned: frozenset[int], now: float) -> None:
        """Step 4: drop the queues of the buckets assigned elsewhere at once, release the
        drained ones (or those past the handoff timeout); a held bucket never served or no
        longer served (a suspension) starts draining too."""
        leaving = self.serving - assigned
        if leaving:
            generation = self._serve(self.serving & assigned)
            for bucket in sorted(leaving):
                self._enter(bucket, Phase.DRAINING, since=now, generation=generation)
                log.info("bucket %d moved away: draining before its lease is released", bucket)
        draining = self.in_phase(Phase.DRAINING)
        # first the queue switches the worker applied, then its busy buckets: a message taken
        # before a drop was applied is running (or reserved) by the time the drop is seen
        applied = self._applied() if draining else 0
        busy = self._busy() if draining else set()
        for bucket in sorted(draining):
            self._drain(bucket, assigned, applied, busy, now)
        for bucket in sorted(self.in_phase(Phase.TAKEN, Phase.FENCED) - assigned):
            # released once no message of it runs here, at most the handoff timeout from now
            self._enter(bucket, Phase.DRAINING, since=now, generation=self._applied())

    def _drain(
        self, bucket: int, assigned: frozenset[int], applied: int, busy: set[int], now: float
    ) -> None:
        """Release a DRAINING ``bucket`` if its queue's drop was ``applied`` (or the consumer is
        cut from the broker: :meth:`cut_from_broker`) and it is not ``busy`` (read after
        ``applied``), or if the handoff timed out; one assigned here again keeps its lease."""
        entry = self._buckets[bucket]
        if bucket in assigned:  # it came back before it was released: keep the lease
            self._enter(bucket, Phase.TAKEN)
            return
        dropped = self.consumer_cut or applied >= entry.generation
        if dropped and bucket not in busy:
            self._release(bucket)
        elif now >= entry.since + self.handoff_timeout:
            log.warning(
                "bucket %d: handoff timeout (%g s) with work still running: releasing; "
                "its commits are refused from now on",
                bucket,
                self.handoff_timeout,
            )
            self._release(bucket)
        else:
            return
        if self._on_handoff is not None:
            self._on_handoff(max(now - entry.since, 0.0))

    def _take_assigned(self, assigned: frozenset[int], version: int) -> None:
        """Step 1: take the lease of every assigned bucket not held, but those waited for;
        :data:`TAKE_BATCH` takes in flight at a time (a node given thousands of buckets
        takes them in a few round trips, not two round trips each)."""
        self._waiting &= assigned
        wanted = sorted(assigned - self._buckets.keys() - self._waiting)
        if not wanted or version < 0:
            return  # version -1: no assignment znode, nothing assigned (and -1 matches any)
        epoch = self._epoch()
        for start in range(0, len(wanted), TAKE_BATCH):
            self._take(wanted[start : start + TAKE_BATCH], version, epoch)

    def _give_back(self, fenced: frozenset[int]) -> None:
        """After step 2: the unacknowledged messages of the buckets just ``fenced`` under a new
        lease go back to their queues, before any is consumed (see the class docstring)."""
        new = frozenset(b for b in fenced if self._restored.get(b) != self._own_pair(b))
        if not new or self._restore is None:
            return
        for bucket in new:
            self._restored[bucket] = self._own_pair(bucket)
        try:
            count = self._restore(new)
        except (RedisError, OSError, ValueError) as exc:
            log.warning(
                "cannot give back the unacknowledged messages of buckets %s (%r): serving them "
                "anyway; kombu restores them after ALLOT_REDELIVERY_TIMEOUT",
                sorted(new),
                exc,
            )
            return
        if count:
            log.info("gave %d unacknowledged messages of buckets %s back", count, sorted(new))

    def _serve_fenced(self) -> None:
        """Step 3: consume the queues of the fenced buckets (every one still assigned)."""
        ready = self.in_phase(Phase.FENCED, Phase.SERVING)
        if self.tokens is not None:
            for bucket in sorted(ready):  # before its queue: a message taken finds its pair
                entry = self._buckets[bucket]
                self.tokens.hold(bucket, entry.token, generation=entry.zk_generation)
        self._serve(ready)
        for bucket in sorted(self.in_phase(Phase.FENCED)):
            self._enter(bucket, Phase.SERVING)

    def _forget_tokens(self) -> None:
        """Clear every token in the shared table: this node serves no bucket at the moment."""
        if self.tokens is not None:
            self.tokens.forget_all()

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

    def _take(self, buckets: Sequence[int], version: int, epoch: int) -> None:
        """Take the leases of ``buckets``: one transaction each (the node's assignment
        version checked, the ephemeral lease created), all in flight together, then one
        ``exists`` each (the token, and the lease's watch), all in flight together. Every
        bucket is *in doubt* from its send until its reply is read: a ZooKeeper error here
        leaves the unread ones in doubt, for the next pass's check."""
        sent = []
        for bucket in buckets:
            transaction = self.client.transaction()
            transaction.check(self.paths.assignments(self.node_key), version)
            lease = encode_lease(LeaseRecord(self.node_key, epoch))
            transaction.create(self.paths.lease(bucket), lease, ephemeral=True)
            self._in_doubt.add(bucket)  # until the reply says what happened
            sent.append((bucket, transaction.commit_async()))
        created = []
        for bucket, pending in sent:
            results = pending.get()
            if any(isinstance(result, NodeExistsError) for result in results):
                self._in_doubt.discard(bucket)
                self._adopt_or_clear(bucket)
            elif any(isinstance(result, Exception) for result in results):
                self._in_doubt.discard(bucket)  # the assignment changed: its watch brings it
            else:
                created.append(bucket)
        looks = [
            (bucket, self.client.exists_async(self.paths.lease(bucket), watch=self._on_lease))
            for bucket in created
        ]
        session = self.client.client_id[0]
        for bucket, pending in looks:
            stat = pending.get()
            self._in_doubt.discard(bucket)
            if stat is None or stat.ephemeralOwner != session:
                continue
            self._enter(bucket, Phase.TAKEN, token=stat.czxid)
            log.info("took the lease of bucket %d (token %d)", bucket, stat.czxid)

    def _adopt_or_clear(self, bucket: int) -> None:
        """The lease exists: ours from before (adopt it), another session's (wait for its
        deletion: its watch wakes the loop), or a persistent znode no session owns (foreign:
        delete it)."""
        path = self.paths.lease(bucket)
        stat = self.client.exists(path, watch=self._on_lease)
        if stat is None:
            self._wake.set()
        elif stat.ephemeralOwner == self.client.client_id[0]:
            self._enter(bucket, Phase.TAKEN, token=stat.czxid)
        elif stat.ephemeralOwner == 0:
            log.warning("leases/%d is not a lease (a persistent znode): deleting it", bucket)
            with contextlib.suppress(NoNodeError, KazooException):
                self.client.delete(path, version=stat.version)
            self._wake.set()
        else:
            self._waiting.add(bucket)

    def _fence_taken(self, assigned: frozenset[int]) -> None:
        """Step 2 for every TAKEN bucket still assigned, with this ZooKeeper's generation read
        after the leases were taken (:mod:`allot.generation`; allocated in SQL if the
        ZooKeeper has none: a new or rebuilt one)."""
        taken = sorted(self.in_phase(Phase.TAKEN) & assigned)
        if not taken:
            return
        try:
            generation = zk_generation(self.client, self.paths, self._allocate_generation)
        except DBAPIError as exc:
            if not self._sql_warned:
                log.warning("cannot allocate a ZooKeeper generation in SQL (%s): not serving", exc)
                self._sql_warned = True
            return
        except ValueError as exc:
            log.error("%s: %s; fencing no bucket until it is fixed", self.paths.generation, exc)
            return
        for start in range(0, len(taken), FENCE_BATCH):
            self._fence_many(taken[start : start + FENCE_BATCH], generation)

    def _fence_many(self, buckets: Sequence[int], generation: int) -> None:
        """Step 2 for ``buckets`` in one SQL transaction; if it fails (a row held by a stuck
        commit, SQL down, a racing insert), bucket by bucket, so one bucket never holds back
        the others."""
        try:
            with self.sessions.begin() as session:
                taken = {
                    bucket: take_fence(
                        session,
                        bucket,
                        self.node_key,
                        self._buckets[bucket].token,
                        generation=generation,
                    )
                    for bucket in buckets
                }
        except DBAPIError:
            for bucket in buckets:
                self._fence(bucket, generation)
            return
        self._sql_warned = False
        for bucket, won in taken.items():
            self._fenced(bucket, generation, won)

    def _allocate_generation(self) -> int:
        with self.sessions.begin() as session:
            return allocate_generation(session)

    def _fence(self, bucket: int, generation: int) -> None:
        """Step 2: write this node's key, ZooKeeper generation and token into the bucket's SQL
        fence."""
        token = self._buckets[bucket].token
        try:
            with self.sessions.begin() as session:
                taken = take_fence(session, bucket, self.node_key, token, generation=generation)
        except DBAPIError as exc:
            if not self._sql_warned:
                log.warning("cannot fence bucket %d in SQL (%s): not serving it yet", bucket, exc)
                self._sql_warned = True
            return
        self._sql_warned = False
        self._fenced(bucket, generation, taken)

    def _fenced(self, bucket: int, generation: int, taken: bool) -> None:
        """After ``bucket``'s fence write: FENCED if ``taken``, else refused (logged once)."""
        token = self._buckets[bucket].token
        if taken:
            self._enter(bucket, Phase.FENCED, zk_generation=generation)
            self._refused.discard((bucket, token))
        elif (bucket, token) not in self._refused:
            self._refused.add((bucket, token))
            log.error(
                "bucket %d: SQL's fence has a larger (generation, token) than this node's "
                "lease (%d, %d): not serving it; a newer holder exists",
                bucket,
                generation,
                token,
            )

    def _release(self, bucket: int) -> None:
        """Delete this node's lease of ``bucket``, then forget it. A ZooKeeper error leaves
        the bucket in its phase (DRAINING), so the next pass tries again."""
        path = self.paths.lease(bucket)
        stat = self.client.exists(path)
        if stat is not None and stat.ephemeralOwner == self.client.client_id[0]:
            with contextlib.suppress(NoNodeError):
                self.client.delete(path, version=stat.version)
            log.info("released the lease of bucket %d", bucket)
        self._enter(bucket, None)

    def _check_in_doubt(self) -> None:
        """The buckets whose take may have half happened (its reply lost to a ZooKeeper
        error, a pass that raced a reconnect): a lease of this session the node does not hold
        is adopted when the bucket is assigned here, deleted otherwise. Runs after every
        interrupted pass and reconnect; reads one lease per bucket in doubt, no other."""
        session = self.client.client_id[0]
        for bucket in sorted(self._in_doubt):
            if bucket not in self._buckets:
                stat = self.client.exists(self.paths.lease(bucket), watch=self._on_lease)
                if stat is not None and stat.ephemeralOwner == session:
                    self._settle_stray(bucket, stat)
            self._in_doubt.discard(bucket)

    def _settle_stray(self, bucket: int, stat: ZnodeStat) -> None:
        """Adopt this session's lease of ``bucket`` (read as ``stat``) if it is assigned here,
        else delete it."""
        if bucket in self.assigned:
            self._enter(bucket, Phase.TAKEN, token=stat.czxid)
            log.warning("adopted this session's lease of bucket %d", bucket)
        else:
            with contextlib.suppress(NoNodeError):
                self.client.delete(self.paths.lease(bucket), version=stat.version)
            log.warning("deleted this session's stray lease of bucket %d", bucket)

    def _verify_fences(self) -> None:
        """Re-read the SQL fences: one not naming this node and token was changed by a foreign
        writer; its queue stops at once and the bucket is fenced again (left unserved past a
        larger token)."""
        fenced = self.in_phase(Phase.FENCED, Phase.SERVING)
        if not fenced:
            return
        try:
            with self.sessions() as session:
                found = read_fences(session, fenced)
        except DBAPIError:
            return  # SQL down: commits are refused or fail anyway; checked at the next re-read
        changed = [
            bucket for bucket in sorted(fenced) if found.get(bucket) != self._own_fence(bucket)
        ]
        for bucket in changed:
            log.warning("bucket %d: SQL fence changed by another writer", bucket)
            self._enter(bucket, Phase.TAKEN)
        if changed:
            self._serve(self.serving)

    def _own_pair(self, bucket: int) -> tuple[int, int]:
        """The (ZooKeeper generation, token) of this node's lease of ``bucket``."""
        entry = self._buckets[bucket]
        return entry.zk_generation, entry.token

    def _own_fence(self, bucket: int) -> FenceRow:
        entry = self._buckets[bucket]
        return FenceRow(bucket, self.node_key, entry.token, entry.zk_generation)

    def _verify_held(self, buckets: Iterable[int]) -> None:
        """Read the leases of ``buckets`` that this node holds, setting their watches again;
        forget those no longer this session's (deleted or replaced by a foreign writer): stop
        their queues at once."""
        session = self.client.client_id[0]
        for bucket in sorted(buckets):
            entry = self._buckets.get(bucket)
            if entry is None:
                continue
            stat = self.client.exists(self.paths.lease(bucket), watch=self._on_lease)
            if stat is None or stat.ephemeralOwner != session or stat.czxid != entry.token:
                log.warning("the lease of bucket %d is no longer this node's: stopping it", bucket)
                self._enter(bucket, None)
                self._serve(self.serving)
                if stat is not None and stat.ephemeralOwner == session:
                    self._in_doubt.add(bucket)  # a lease of this session it does not know
                    self._due.add(Recheck.STRAYS)

"""The assignment cycle (DESIGN.md, "The assignment cycle"), free of Celery.

One cycle, under the ZooKeeper lock ``{root}/locks/assign``:

1. take the lock (``lock_timeout`` 0: a held lock means "skipped");
2. finish or fail any plan a crashed cycle left ``applying`` (``assignment-version`` names the
   last applied plan; a plain SQL read when there is none);
3. read membership and the stored assignment, classify live / suspect / offline
   (:func:`allot.cycle.observe.observe`, shared with ``allot status``); a membership cycle
   that finds membership still changing first waits for it to settle (:meth:`_settle`);
4. plan (:mod:`allot.planner`); if nothing moves, refresh ``last-update-time`` of the live
   nodes when it is half an ``assign_interval`` old, make SQL match ZooKeeper unless it does
   already (:attr:`~allot.cycle.observe.Observation.sql_in_step`) and stop: a quiet cycle
   reads, compares and writes nothing but its report;
5. apply the plan to ZooKeeper in one fenced transaction, then record and mirror it to
   ``plan`` / ``bucket`` / ``node`` in one SQL transaction (nothing in SQL before ZooKeeper:
   the failover's path is the ZooKeeper transaction; a stored plan applied by hand is set
   ``applying`` first, and recovery settles it if its cycle stops);
6. publish the report to ``{root}/last-cycle`` fenced on the lock znode (the cycle's last
   write: a holder that lost its session ends ``aborted``) and return it, with where the time
   went (``steps``).

Steps 1 and 2 and the ``aborted`` outcome are one context manager. The holder's SQL fence is
the pair (ZooKeeper generation, lock token), the generation read from ``{root}/generation``
under the lock (allocated in SQL when a new or rebuilt ZooKeeper has none), so SQL that
mirrored an older ZooKeeper never stops a rebuilt one's cycles (:mod:`allot.cycle.fence`).
A cycle plans again before releasing the lock when membership changed under it, a grace
period ended or its write lost a race (at most :data:`MAX_ROUNDS` rounds); event cycles that
fail retry (``tasks.assign``).

Failure modes (each has a test in tests/integration/test_cycle.py or test_faults.py):
    Session SUSPENDED or LOST mid-cycle: the guard trips, every ZooKeeper write checks the lock
    znode and every SQL write confirms it (:mod:`allot.cycle.fence`): the cycle ends
    ``aborted`` having written nothing more; a plan it left ``applying`` is settled by the next
    holder. A frozen holder waking after a newer one wrote SQL is ``Superseded``.
    Someone else wrote first (``assignment-version`` moved): the cycle reads and plans again
    (a stored plan is ``failed``). Commit cut (outcome unknown), or a crash after ZooKeeper:
    the next cycle mirrors what ZooKeeper holds and records the plan it names (``catch-up``;
    a stored plan left ``applying`` is settled by recovery, asking ``assignment-version``).
    Crash before ZooKeeper: nothing was written (a stored plan left ``applying`` is failed).
    SQL unavailable: the cycle decides and applies from ZooKeeper alone and says so in the
    report (``sql``); a later cycle brings SQL to ZooKeeper and records the plan it missed.
    ZooKeeper rebuilt from scratch (SQL mirrors a larger lock token and epoch): the first
    cycle allocates a larger generation, recovery fails the plans left ``applying`` (they are
    not in this ZooKeeper), the epoch is re-published above SQL's and the cycle applies and
    mirrors; with SQL down as well it applies from ZooKeeper alone until SQL is back.
    Unplannable data in ZooKeeper (an id out of range, a bucket under two nodes, corrupt JSON,
    a foreign member znode, ``assignment-version`` deleted or behind): repaired by this cycle's
    write, reported (``repaired``, ``corrupt``, ``foreign``), never an error.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.interfaces import IAsyncResult
from sqlalchemy.orm import Session, sessionmaker

from allot.cycle import plans
from allot.cycle.classify import planner_snapshot
from allot.cycle.fence import FencedSql
from allot.cycle.measured import read_measured
from allot.cycle.observe import Observation, observe
from allot.cycle.report import CycleOutcome, CycleReport
from allot.errors import (
    ApplyOutcomeUnknown,
    CoordinationError,
    DatabaseUnavailable,
    StaleAssignment,
    ZooKeeperUnavailable,
)
from allot.generation import allocate_generation, decode_generation, zk_generation
from allot.planner import Plan, plan
from allot.settings import Settings
from allot.zk.departures import write_departures
from allot.zk.epoch import republish_epoch
from allot.zk.last_cycle import publish_as_holder, publish_last_cycle
from allot.zk.lock import AssignmentLock, LockGuard
from allot.zk.paths import ZkPaths
from allot.zk.store import AssignmentStore
from models.base import utcnow
from models.states import PlanStatus

log = logging.getLogger(__name__)

MAX_ROUNDS = 3
SETTLE_LIMIT = 10
"""A membership cycle waits for ``nodes/`` to be quiet for ``membership_settle`` seconds, and
never longer than this many times that in all (:meth:`AssignmentCycle._settle`)."""
Clock = Callable[[], dt.datetime]
T = TypeVar("T")


@dataclass
class CycleHooks:
    """Fault injection points for tests: called inside the cycle, may raise."""

    after_lock: Callable[[LockGuard], None] | None = None
    before_zookeeper: Callable[[str], None] | None = None
    after_zookeeper: Callable[[str], None] | None = None
    before_catch_up: Callable[[], None] | None = None


@dataclass
class LockedSection:
    """The body's side of :meth:`AssignmentCycle._locked`: ``guard`` (None: the body must not
    run, ``report`` says why), the plans recovery settled, when the lock was taken
    (``perf_counter`` and ISO time), the holder's fenced SQL side (``sql``), the
    ``report`` the body sets, and whether the body released the lock with its last write
    (``released``)."""

    trigger: str
    worker: str = ""
    guard: LockGuard | None = None
    sql: FencedSql | None = None
    recovered: list[str] = field(default_factory=list)
    report: CycleReport | None = None
    started: float = 0.0
    started_at: str | None = None
    steps: dict[str, float] = field(default_factory=dict)
    released: bool = False
    _lap: float = 0.0

    def lap(self, step: str) -> None:
        """Add the time since the previous lap (or the lock request) to ``steps[step]``, in
        ms: the breakdown every report carries (``CycleReport.steps``)."""
        now = time.perf_counter()
        self.steps[step] = round(self.steps.get(step, 0.0) + (now - self._lap) * 1000, 2)
        self._lap = now

    def abort(self, exc: Exception) -> None:
        """Replace the report with an ``aborted`` one naming ``exc``."""
        reason = str(exc) or type(exc).__name__
        log.warning("cycle aborted: %s", reason)
        self.report = CycleReport(CycleOutcome.ABORTED, self.trigger, reason=reason)

    @property
    def result(self) -> CycleReport:
        """The report the section ended with."""
        if self.report is None:
            raise RuntimeError("the locked section's body set no report")
        if self.sql is not None:
            self.report.sql = self.sql.problem
        self.report.worker = self.worker
        self.report.steps = dict(self.steps)
        return self.report


class AssignmentCycle:
    """Runs assignment cycles for one ZooKeeper root and one SQL database.

    Takes a started :class:`~kazoo.client.KazooClient` and a session factory; opens no
    connection itself. One instance serves one process (it is not thread-safe: the lock is
    held by the instance).
    """

    def __init__(
        self,
        client: KazooClient,
        sessions: sessionmaker[Session],
        settings: Settings,
        *,
        clock: Clock | None = None,
        hooks: CycleHooks | None = None,
    ) -> None:
        self.client = client
        self.sessions = sessions
        self.settings = settings
        self.paths = ZkPaths(settings.zk_root)
        self.store = AssignmentStore(client, self.paths)
        self.lock = AssignmentLock(client, self.paths, f"{socket.gethostname()}:{os.getpid()}")
        self.clock = clock or utcnow
        self.hooks = hooks or CycleHooks()
        self._pending_generation: IAsyncResult | None = None

    # -- public ------------------------------------------------------------------------------

    def run(
        self,
        trigger: str = "beat",
        *,
        dry_run: bool = False,
        max_moves: int | None = None,
        lock_timeout: float = 0.0,
        membership: int | None = None,
    ) -> CycleReport:
        """Run one cycle (see the module docstring) and return its report.

        Args:
            trigger: why the cycle runs (``beat``, ``membership``, ``grace``, ``manual``...).
            dry_run: plan and record the plan as ``generated``; write nothing else.
            max_moves: move at most this many buckets (orphans first).
            lock_timeout: seconds to wait for the lock; 0 skips at once when it is held.
            membership: the ``nodes/`` version a membership cycle was sent for: when it has
                moved on since, membership is still changing and the cycle first waits for it
                to settle (:meth:`_settle`), so a burst of joins is planned once.

        Raises:
            AccessDenied: the ACL refused the lock (a lost connection is an ``aborted`` report).
        """
        with self._locked(trigger, lock_timeout) as section:
            if section.guard is not None:
                self._settle(membership)
                section.lap("settle")
                section.report = self._rounds(section, dry_run, max_moves)
        return section.result

    def apply_stored(self, plan_id: str, *, lock_timeout: float = 30.0) -> CycleReport:
        """Apply a ``generated`` (dry-run) plan, unless it is stale.

        The plan is stale, and refused (status ``rejected``), when the assignment epoch moved
        since it was made or when planning now gives different moves (membership changed).

        Raises:
            NotFound, InvalidInput: no plan, or several, match ``plan_id``.
            AccessDenied: the ACL refused the lock (a lost connection is an ``aborted`` report).
        """
        with self._locked("apply", lock_timeout) as section:
            if section.guard is not None:
                section.report = self._apply_stored(section, plan_id)
        return section.result

    # -- steps 1 and 2: the locked section ---------------------------------------------------

    @contextmanager
    def _locked(self, trigger: str, lock_timeout: float) -> Iterator[LockedSection]:
        """Take the lock, recover stuck plans, run the ``with`` body, always release the lock.

        The body runs only ``if section.guard is not None``; otherwise the section's report is
        already ``skipped`` (the lock was held for ``lock_timeout`` seconds) or ``aborted``
        (recovery lost the session or was superseded). A
        :class:`~allot.errors.CoordinationError` or a ZooKeeper error (a session lost
        mid-cycle) escaping the body becomes an ``aborted`` report; any other error
        propagates (after the release).
        """
        section = LockedSection(trigger, self.lock.identifier, _lap=time.perf_counter())
        try:
            guard = self.lock.acquire(lock_timeout)
        except (ZooKeeperUnavailable, KazooException) as exc:  # the session is gone right now
            section.abort(exc)
            yield section
            return
        if guard is None:
            reason = "another cycle holds the lock"
            section.report = CycleReport(CycleOutcome.SKIPPED, trigger, reason=reason)
            yield section
            return
        try:
            section.started, section.started_at = time.perf_counter(), self.clock().isoformat()
            section.guard = guard
            # asked now, answered while the cycle reads: the first SQL write (after ZooKeeper's
            # transaction, on the failover's path) then waits for no round trip
            self._pending_generation = self.client.get_async(self.paths.generation)
            section.sql = FencedSql(self.sessions, guard, self.clock, self._generation)
            section.lap("lock")
            try:
                if self.hooks.after_lock is not None:
                    self.hooks.after_lock(guard)
                section.recovered = section.sql.recover(self.store.read_version)
                section.lap("recover")
            except (CoordinationError, KazooException) as exc:
                section.guard = None
                section.abort(exc)
            try:
                yield section
            except (CoordinationError, KazooException) as exc:
                section.abort(exc)
        finally:
            self.lock.release(deleted=section.released)

    # -- steps 3 to 6 ------------------------------------------------------------------------

    def _rounds(self, section: LockedSection, dry_run: bool, max_moves: int | None) -> CycleReport:
        """Plan rounds until nothing changed under the last one (at most :data:`MAX_ROUNDS`);
        return the last round's report, published to ``{root}/last-cycle``."""
        trigger = section.trigger
        departed: list[str] = []
        for round_number in range(1, MAX_ROUNDS + 1):
            began = time.monotonic()
            try:
                report = self._round(section, dry_run, max_moves)
            except StaleAssignment as exc:
                # someone wrote the assignment after this round read it (a worker leaving
                # cleanly deletes its entry): read again and plan again
                log.info("round %d: %s; planning again", round_number, exc)
                report = CycleReport(CycleOutcome.ABORTED, trigger, reason=str(exc))
                continue
            departed += [key for key in report.departed if key not in departed]
            if dry_run or not self._due_again(report.membership, began, report):
                break
        report.recovered, report.rounds, report.departed = section.recovered, round_number, departed
        report.started_at, report.finished_at = section.started_at, self.clock().isoformat()
        report.duration_ms = round((time.perf_counter() - section.started) * 1000, 1)
        section.report = report
        section.lap("finish")
        # fenced: the cycle's last write proves it held the lock to the end (LockLost: aborted);
        # the same transaction releases the lock
        guard = section.guard
        assert guard is not None
        publish_as_holder(self.client, self.paths, section.result.to_json(), guard, release=True)
        section.released = True
        steps = " ".join(f"{name}={ms:g}" for name, ms in report.steps.items())
        log.info("%s [%.0f ms: %s]", report.headline(), report.duration_ms, steps)
        return report

    def _round(self, section: LockedSection, dry_run: bool, max_moves: int | None) -> CycleReport:
        """One round of steps 3 to 5; its report lacks the cycle-wide fields ``_rounds`` adds."""
        trigger, guard, sql = section.trigger, section.guard, section.sql
        assert guard is not None
        assert sql is not None
        seen, planned = self._view(max_moves, section=section)  # steps 3 and 4
        if dry_run:
            plan_id = plans.new_plan_id()
            status = PlanStatus.GENERATED
            if not sql.record(
                seen, planned, plan_id, trigger=trigger, status=status, max_moves=max_moves
            ):
                raise DatabaseUnavailable(f"a dry run keeps its plan in SQL: {sql.problem}")
            return CycleReport.from_round(CycleOutcome.GENERATED, trigger, seen, planned, plan_id)
        self._keep_records(seen, guard)
        section.lap("records")
        needs_write = (
            planned.moves
            or seen.classes.offline
            or seen.repairs
            or set(seen.snapshot.corrupt) & set(seen.classes.live)
        )
        if not needs_write:  # step 4: nothing moves
            guard.check()
            stale = self._stale_times(seen)
            if stale:
                self.store.touch(seen.snapshot, stale, guard=guard)
            section.lap("zookeeper")
            if self.hooks.before_catch_up is not None:
                self.hooks.before_catch_up()
            sql.catch_up(seen)
            section.lap("sql")
            return CycleReport.from_round(CycleOutcome.UNCHANGED, trigger, seen, planned)
        # step 5: ZooKeeper first; SQL records the plan with its mirror, off the failover's path
        return self._apply(section, seen, planned, plans.new_plan_id(), max_moves, recorded=False)

    def _view(
        self,
        max_moves: int | None,
        strategy: str | None = None,
        *,
        section: LockedSection | None = None,
    ) -> tuple[Observation, Plan]:
        """Steps 3 and 4: read and classify the cluster at the cycle's clock, read the pins
        (and the load for strategy ``load``), then plan (with ``strategy``, default the
        configured one); ``section`` gets the two steps' times."""
        settings, strategy = self.settings, strategy or self.settings.strategy
        pending_pins = self.client.get_async(self.paths.pins)  # answered while observe reads
        seen = observe(
            self.client,
            self.paths,
            self.sessions,
            now=self.clock(),
            offline_timeout=settings.node_offline_timeout,
            bucket_count=settings.bucket_count,
        )
        measured = read_measured(
            self.client,
            self.paths,
            bucket_count=settings.bucket_count,
            strategy=strategy,
            pending_pins=pending_pins,
        )
        seen = replace(seen, measured=measured)
        if section is not None:
            section.lap("read")
        snapshot = planner_snapshot(
            seen.classes,
            seen.held,
            settings.bucket_count,
            max_moves,
            load=measured.load,
            pins=measured.pins,
            tolerance=settings.load_tolerance,
            max_load_moves=settings.max_load_moves,
        )
        planned = plan(snapshot, strategy)
        if section is not None:
            section.lap("plan")
        return seen, planned

    def _keep_records(self, seen: Observation, guard: LockGuard) -> None:
        """Store in ZooKeeper what later cycles decide from: when gone nodes were first seen
        gone, and an epoch no lower than any known (``assignment-version`` deleted or behind)."""
        times = seen.departure_times()
        if times != seen.departures.times or seen.departures.problem:
            write_departures(self.client, self.paths, seen.departures, times, guard)
        version = seen.snapshot.version
        if version.epoch < seen.epoch_floor:
            republish_epoch(self.client, self.paths, version, seen.epoch_floor, guard)
            raise StaleAssignment("assignment-version re-published; reading again")

    def _apply(
        self,
        section: LockedSection,
        seen: Observation,
        planned: Plan,
        plan_id: str,
        max_moves: int | None,
        *,
        recorded: bool,
    ) -> CycleReport:
        """Step 5: apply the plan to ZooKeeper, then record and mirror it in one SQL
        transaction. ``recorded``: SQL holds the plan already, ``applying`` (a stored plan
        applied by hand; the next cycle's recovery settles it if this one stops before SQL),
        so a failed apply marks it ``failed``. A fresh plan is recorded only once it is in
        ZooKeeper: a cycle that stops before then leaves nothing to settle, and one that stops
        after it is caught up by the next (``catch-up``)."""
        guard, sql = section.guard, section.sql
        assert guard is not None
        assert sql is not None
        if self.hooks.before_zookeeper is not None:
            self.hooks.before_zookeeper(plan_id)
        try:
            guard.check()
            result = self.store.apply(
                seen.snapshot,
                planned.assignments,
                plan_id=plan_id,
                remove=seen.classes.offline,
                guard=guard,
            )
        except ApplyOutcomeUnknown:
            raise  # the plan stays `applying`: the next cycle's recovery asks ZooKeeper
        except Exception as exc:
            if recorded:
                sql.fail(plan_id, str(exc))
            raise
        section.lap("zookeeper")
        if self.hooks.after_zookeeper is not None:
            self.hooks.after_zookeeper(plan_id)
        sql.finish(
            seen,
            planned,
            plan_id,
            trigger=section.trigger,
            epochs=(result.base_epoch, result.epoch),
            max_moves=max_moves,
        )
        section.lap("sql")
        return CycleReport.from_round(
            CycleOutcome.APPLIED, section.trigger, seen, planned, plan_id, epoch=result.epoch
        )

    def _apply_stored(self, section: LockedSection, plan_id: str) -> CycleReport:
        """Steps 3 to 6 for a stored plan: refuse it if stale, else apply it as it is."""
        trigger, sql = section.trigger, section.sql
        assert sql is not None
        with self.sessions() as session:
            stored = plans.find_plan(session, plan_id)
        row = stored.plan
        if row.status != PlanStatus.GENERATED:
            reason = f"plan {row.plan_id} is {row.status}; only generated plans apply"
            return CycleReport(CycleOutcome.REJECTED, trigger, plan_id=row.plan_id, reason=reason)
        seen, planned = self._view(row.max_moves, row.strategy)
        stale = plans.stale_reason(stored, seen.snapshot.version.epoch, planned)
        if stale is None and seen.repairs:
            stale = "ZooKeeper holds data to repair first: let a cycle run"
        if stale is not None:
            error = f"stale: {stale}"
            sql.write(lambda s: plans.set_status(s, row.plan_id, PlanStatus.REJECTED, error=error))
            reason = f"plan {row.plan_id} is stale: {stale}; make a new one"
            return CycleReport.from_round(
                CycleOutcome.REJECTED, trigger, seen, planned, row.plan_id, reason=reason
            )
        moved_on = not sql.write(
            lambda s: plans.set_status(
                s, row.plan_id, PlanStatus.APPLYING, expected=[PlanStatus.GENERATED]
            )
        )
        if moved_on:
            reason = "the plan was applied meanwhile (or SQL is unavailable)"
            return CycleReport(CycleOutcome.REJECTED, trigger, reason=reason)
        report = self._apply(section, seen, planned, row.plan_id, row.max_moves, recorded=True)
        report.finished_at = self.clock().isoformat()
        section.report = report
        publish_last_cycle(self.client, self.paths, section.result.to_json())
        return report

    # -- helpers -----------------------------------------------------------------------------

    def _generation(self) -> int:
        """This ZooKeeper's generation, allocated in SQL when it has none (rebuilt): the first
        half of the holder's SQL fence (:mod:`allot.cycle.fence`). Called under the lock."""
        pending, self._pending_generation = self._pending_generation, None
        if pending is not None:
            with contextlib.suppress(NoNodeError, ValueError):  # none yet, or unreadable:
                return decode_generation(pending.get()[0])  # the full path says which
        return zk_generation(self.client, self.paths, self._allocate_generation)

    def _allocate_generation(self) -> int:
        with self.sessions.begin() as session:
            return allocate_generation(session)

    def _stale_times(self, seen: Observation) -> list[str]:
        """The live nodes whose ``last-update-time`` a cycle that moves nothing refreshes:
        those last written half an ``assign_interval`` ago or more (or never), so under beat
        every tick refreshes them, as Amoro's assigner does every interval, and the cycles
        that membership events add between ticks write nothing."""
        oldest = self.store.clock() - int(self.settings.assign_interval * 500)
        nodes = seen.snapshot.nodes
        return [
            key
            for key in seen.classes.live
            if key in nodes and (nodes[key].last_update_ms or 0) <= oldest
        ]

    def _settle(self, sent_for: int | None) -> None:
        """Wait, under the lock, while membership is still changing: when ``nodes/`` has moved
        past ``sent_for`` (the version a membership cycle was sent for), poll its version
        until it has stayed the same for ``membership_settle`` seconds, at most
        :data:`SETTLE_LIMIT` times that in all. A burst of joins is then planned in one round;
        a single change (a node's death) is not delayed at all."""
        settle = self.settings.membership_settle
        if sent_for is None or settle <= 0:
            return
        version = self._membership_version()
        if version <= sent_for:
            return
        began = quiet_since = time.monotonic()
        while time.monotonic() - began < SETTLE_LIMIT * settle:
            time.sleep(settle / 5)
            current = self._membership_version()
            if current != version:
                version, quiet_since = current, time.monotonic()
            elif time.monotonic() - quiet_since >= settle:
                return
        log.info("membership still changing after %.1f s: planning anyway", SETTLE_LIMIT * settle)

    def _membership_version(self) -> int:
        stat = self.client.exists(self.paths.nodes)
        return -1 if stat is None else int(stat.cversion)

    def _due_again(self, membership: int, began: float, report: CycleReport) -> bool:
        """True when this cycle should plan again before releasing the lock."""
        if report.outcome not in (CycleOutcome.APPLIED, CycleOutcome.UNCHANGED):
            return False
        if self._membership_version() != membership:
            return True
        deadline = report.next_deadline
        return deadline is not None and time.monotonic() - began >= deadline

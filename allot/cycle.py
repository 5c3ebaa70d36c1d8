"""The assignment cycle (DESIGN.md, "The assignment cycle"), free of Celery.

One cycle, under the ZooKeeper lock ``{root}/locks/assign``:

1. take the lock (``lock_timeout`` 0: a held lock means "skipped");
2. finish or fail any plan a crashed cycle left ``applying`` (``assignment-version`` names the
   last applied plan);
3. read membership and the stored assignment, classify live / suspect / offline
   (:mod:`allot.classify`);
4. plan (:mod:`allot.planner`); if nothing moves, refresh ``last-update-time`` of the live
   nodes, make SQL's bucket owners match ZooKeeper's (a no-op unless a crash left them behind)
   and stop;
5. record the plan ``applying`` in SQL, apply it to ZooKeeper in one fenced transaction, then
   mirror it to ``bucket`` / ``node`` / ``plan`` in one SQL transaction;
6. return a :class:`~allot.report.CycleReport`.

If membership changed while the cycle ran, or a suspect node's grace period ended, the cycle
plans again before releasing the lock (at most :data:`MAX_ROUNDS` rounds); so does a round whose
write lost the race to another writer (a worker leaving cleanly deletes its own entry). Event
cycles that find the lock held retry a second later (``tasks.assign``), so an event never waits
for the next beat tick.

Failure modes:
    SUSPENDED or LOST session during the cycle: the lock guard trips and every ZooKeeper write
    is fenced on the lock znode, so the cycle aborts without writing (outcome ``aborted``);
    the plan it recorded is marked ``failed``.
    Someone else wrote first (``assignment-version`` moved): the plan is ``failed`` and the
    cycle plans again from a fresh read.
    Connection cut during the commit (outcome unknown): the plan stays ``applying`` and the
    next cycle's recovery asks ``assignment-version`` whether it landed.
    Stalled holder (its session expired after its ZooKeeper write, and another cycle already
    settled its plan): it does not touch SQL, which newer cycles own.
    Crash between recording the plan and the ZooKeeper transaction: the plan stays
    ``applying``; the next cycle sees ``assignment-version`` does not name it and fails it.
    Crash between the ZooKeeper transaction and the SQL mirror: the next cycle sees
    ``assignment-version`` names the plan, mirrors ZooKeeper into SQL and marks it applied.
    Corrupt assignment data: the node is treated as holding nothing and the next applied plan
    rewrites (live node) or removes (gone node) its entry.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from sqlalchemy.orm import Session, sessionmaker

from allot import mirror, plans
from allot.classify import Classification, classify, planner_snapshot
from allot.errors import ApplyOutcomeUnknown, CoordinationError, StaleAssignment
from allot.mirror import LIVE, OFFLINE, SUSPECT, NodeObservation
from allot.planner import Plan, plan
from allot.report import (
    ABORTED,
    APPLIED,
    GENERATED,
    REJECTED,
    SKIPPED,
    UNCHANGED,
    CycleReport,
    moves_by_node,
)
from allot.settings import Settings
from allot.zk.lock import AssignmentLock, LockGuard
from allot.zk.members import Members, read_members
from allot.zk.model import AllAssignments
from allot.zk.paths import ZkPaths
from allot.zk.store import AssignmentStore
from models.base import utcnow

log = logging.getLogger(__name__)

MAX_ROUNDS = 3
Clock = Callable[[], dt.datetime]


@dataclass
class CycleHooks:
    """Fault injection points for tests: called inside the cycle, may raise."""

    after_plan_recorded: Callable[[str], None] | None = None
    after_zookeeper: Callable[[str], None] | None = None


@dataclass
class _View:
    """What one round read and decided."""

    snapshot: AllAssignments
    members: Members
    classes: Classification
    plan: Plan
    observations: list[NodeObservation] = field(default_factory=list)


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

    # -- public ------------------------------------------------------------------------------

    def run(
        self,
        trigger: str = "beat",
        *,
        dry_run: bool = False,
        max_moves: int | None = None,
        lock_timeout: float = 0.0,
    ) -> CycleReport:
        """Run one cycle (see the module docstring) and return its report.

        Args:
            trigger: why the cycle runs (``beat``, ``membership``, ``grace``, ``manual``...).
            dry_run: plan and record the plan as ``generated``; write nothing else.
            max_moves: move at most this many buckets (orphans first).
            lock_timeout: seconds to wait for the lock; 0 skips at once when it is held.
        """
        guard = self.lock.acquire(lock_timeout)
        if guard is None:
            return CycleReport(SKIPPED, trigger, reason="another cycle holds the lock")
        started, started_at = time.perf_counter(), self.clock().isoformat()
        try:
            recovered = self._recover()
            departed: list[str] = []
            for round_number in range(1, MAX_ROUNDS + 1):
                membership = self._membership_version()
                began = time.monotonic()
                try:
                    report = self._round(guard, trigger, dry_run, max_moves)
                except StaleAssignment as exc:
                    # someone wrote the assignment after this round read it (a worker leaving
                    # cleanly deletes its entry): read again and plan again
                    log.info("round %d: %s; planning again", round_number, exc)
                    report = CycleReport(ABORTED, trigger, reason=str(exc))
                    continue
                departed += [key for key in report.departed if key not in departed]
                if dry_run or not self._due_again(membership, began, report):
                    break
            report.recovered, report.rounds, report.departed = recovered, round_number, departed
            report.started_at, report.finished_at = started_at, self.clock().isoformat()
            report.duration_ms = round((time.perf_counter() - started) * 1000, 1)
            self._publish(report)
            log.info(report.headline())
            return report
        except CoordinationError as exc:
            log.warning("cycle aborted: %s", exc)
            return CycleReport(ABORTED, trigger, reason=str(exc))
        finally:
            self.lock.release()

    def apply_stored(self, plan_id: str, *, lock_timeout: float = 30.0) -> CycleReport:
        """Apply a ``generated`` (dry-run) plan, unless it is stale.

        The plan is stale, and refused (status ``rejected``), when the assignment epoch moved
        since it was made or when planning now gives different moves (membership changed).
        """
        trigger = "apply"
        guard = self.lock.acquire(lock_timeout)
        if guard is None:
            return CycleReport(SKIPPED, trigger, reason="another cycle holds the lock")
        try:
            self._recover()
            with self.sessions() as session:
                stored = plans.find_plan(session, plan_id)
            row = stored.plan
            if row.status != plans.GENERATED:
                return CycleReport(
                    REJECTED,
                    trigger,
                    plan_id=row.plan_id,
                    reason=f"plan {row.plan_id} is {row.status}; only generated plans apply",
                )
            view = self._view(row.max_moves, row.strategy)
            current = [(m.bucket, m.source, m.target) for m in view.plan.moves]
            epoch = view.snapshot.version.epoch
            stale = None
            if epoch != row.base_epoch:
                stale = f"the assignment moved from epoch {row.base_epoch} to {epoch}"
            elif current != list(stored.moves):
                stale = "membership changed: planning now gives other moves"
            if stale is not None:
                with self.sessions.begin() as session:
                    plans.set_status(session, row.plan_id, plans.REJECTED, error=f"stale: {stale}")
                report = self._report(REJECTED, trigger, view, row.plan_id)
                report.reason = f"plan {row.plan_id} is stale: {stale}; make a new one"
                return report
            with self.sessions.begin() as session:
                moved_on = not plans.set_status(
                    session, row.plan_id, plans.APPLYING, expected=[plans.GENERATED]
                )
            if moved_on:
                return CycleReport(REJECTED, trigger, reason="the plan was applied meanwhile")
            report = self._apply(guard, trigger, view, row.plan_id)
            report.finished_at = self.clock().isoformat()
            self._publish(report)
            return report
        except CoordinationError as exc:
            return CycleReport(ABORTED, trigger, reason=str(exc))
        finally:
            self.lock.release()

    # -- the steps ---------------------------------------------------------------------------

    def _recover(self) -> list[str]:
        """Finish or fail plans a crashed cycle left ``applying`` (SQL's bucket owners are
        brought to ZooKeeper's by the round that follows)."""
        with self.sessions() as session:
            stuck = [row.plan_id for row in plans.plans_in_status(session, plans.APPLYING)]
        if not stuck:
            return []
        version = self.store.read_version()
        done: list[str] = []
        for plan_id in stuck:
            with self.sessions.begin() as session:
                if version.plan_id == plan_id and version.pending is None:
                    plans.set_status(
                        session, plan_id, plans.APPLIED, epoch=version.epoch,
                        expected=[plans.APPLYING],
                    )  # fmt: skip
                    log.warning("plan %s had reached ZooKeeper; marked applied", plan_id)
                else:
                    plans.set_status(
                        session, plan_id, plans.FAILED, expected=[plans.APPLYING],
                        error="its cycle stopped before the ZooKeeper transaction committed",
                    )  # fmt: skip
                    log.warning("plan %s never reached ZooKeeper; marked failed", plan_id)
            done.append(plan_id)
        return done

    def _view(self, max_moves: int | None, strategy: str | None = None) -> _View:
        now = self.clock()
        snapshot = self.store.read_all()
        members = read_members(self.client, self.paths)
        with self.sessions() as session:
            departed = mirror.departed_since(session)
            believed = mirror.present_nodes(session)
        held = snapshot.buckets_by_node()
        entries = set(snapshot.nodes) | set(snapshot.corrupt)
        live = {key: node.weight for key, node in members.live.items()}
        classes = classify(live, held, entries, departed, now, self.settings.node_offline_timeout)
        planned = plan(
            planner_snapshot(classes, held, self.settings.bucket_count, max_moves),
            strategy or self.settings.strategy,
        )
        observations = [
            NodeObservation(
                key, LIVE, node.weight, node.info.host if node.info is not None else None
            )
            for key, node in members.live.items()
        ]
        observations += [NodeObservation(key, SUSPECT) for key in classes.suspect]
        observations += [NodeObservation(key, OFFLINE) for key in classes.offline]
        seen = set(members.live) | set(classes.suspect) | set(classes.offline)
        observations += [NodeObservation(key, OFFLINE) for key in sorted(believed - seen)]
        return _View(snapshot, members, classes, planned, observations)

    def _round(
        self, guard: LockGuard, trigger: str, dry_run: bool, max_moves: int | None
    ) -> CycleReport:
        view = self._view(max_moves)
        if dry_run:
            plan_id = self._record(view, trigger, plans.GENERATED, max_moves)
            return self._report(GENERATED, trigger, view, plan_id)
        needs_write = (
            view.plan.moves
            or view.classes.offline
            or set(view.snapshot.corrupt) & set(view.classes.live)
        )
        if not needs_write:
            guard.check()
            self.store.touch(view.snapshot, list(view.classes.live), guard=guard)
            with self.sessions.begin() as session:
                fixed = mirror.mirror_assignment(
                    session, view.snapshot.buckets_by_node(), view.snapshot.version.epoch
                )
                mirror.record_nodes(session, view.observations, self.clock())
            if fixed:
                log.warning("SQL differed from ZooKeeper: %d bucket owner(s) fixed", fixed)
            return self._report(UNCHANGED, trigger, view)
        plan_id = self._record(view, trigger, plans.APPLYING, max_moves, with_nodes=True)
        if self.hooks.after_plan_recorded is not None:
            self.hooks.after_plan_recorded(plan_id)
        return self._apply(guard, trigger, view, plan_id)

    def _record(
        self,
        view: _View,
        trigger: str,
        status: str,
        max_moves: int | None,
        *,
        with_nodes: bool = False,
    ) -> str:
        """Record the view's plan in ``status`` (and the node states) in one SQL transaction;
        return its new id."""
        plan_id = plans.new_plan_id()
        with self.sessions.begin() as session:
            plans.record_plan(
                session, view.plan, plan_id=plan_id, trigger=trigger, status=status,
                base_epoch=view.snapshot.version.epoch, max_moves=max_moves,
            )  # fmt: skip
            if with_nodes:
                mirror.record_nodes(session, view.observations, self.clock())
        return plan_id

    def _apply(self, guard: LockGuard, trigger: str, view: _View, plan_id: str) -> CycleReport:
        try:
            guard.check()
            result = self.store.apply(
                view.snapshot,
                view.plan.assignments,
                plan_id=plan_id,
                remove=view.classes.offline,
                guard=guard,
            )
        except ApplyOutcomeUnknown:
            raise  # the plan stays `applying`: the next cycle's recovery asks ZooKeeper
        except Exception as exc:
            with self.sessions.begin() as session:
                plans.set_status(
                    session, plan_id, plans.FAILED, error=str(exc), expected=[plans.APPLYING]
                )
            raise
        if self.hooks.after_zookeeper is not None:
            self.hooks.after_zookeeper(plan_id)
        with self.sessions.begin() as session:
            settled_here = plans.set_status(
                session, plan_id, plans.APPLIED, epoch=result.epoch, expected=[plans.APPLYING]
            )
            if settled_here:
                mirror.mirror_assignment(session, view.plan.assignments, result.epoch)
                mirror.record_nodes(session, view.observations, self.clock())
            else:
                # another cycle's recovery settled this plan while we were stalled: the
                # assignment may have moved on since, so SQL is left to the newer cycles
                log.warning("plan %s was settled by another cycle; not mirroring it", plan_id)
        report = self._report(APPLIED, trigger, view, plan_id)
        report.epoch = result.epoch
        return report

    # -- helpers -----------------------------------------------------------------------------

    def _report(
        self, outcome: str, trigger: str, view: _View, plan_id: str | None = None
    ) -> CycleReport:
        stats = view.plan.stats
        classes = view.classes
        return CycleReport(
            outcome=outcome,
            trigger=trigger,
            epoch=view.snapshot.version.epoch,
            plan_id=plan_id,
            live=sorted(classes.live),
            suspect=sorted(classes.suspect),
            offline=list(classes.offline),
            joined=list(classes.joined),
            departed=list(classes.newly_departed),
            moves=stats.moves,
            min_moves=stats.min_moves,
            moves_by_node=moves_by_node(view.plan),
            spread_before=stats.spread_before,
            spread_after=stats.spread_after,
            buckets={key: len(buckets) for key, buckets in view.plan.assignments.items()},
            next_deadline=classes.next_deadline,
            corrupt=dict(view.snapshot.corrupt),
            warnings=list(stats.warnings),
        )

    def _membership_version(self) -> int:
        stat = self.client.exists(self.paths.nodes)
        return -1 if stat is None else int(stat.cversion)

    def _due_again(self, membership: int, began: float, report: CycleReport) -> bool:
        """True when this cycle should plan again before releasing the lock."""
        if report.outcome not in (APPLIED, UNCHANGED):
            return False
        if self._membership_version() != membership:
            return True
        deadline = report.next_deadline
        return deadline is not None and time.monotonic() - began >= deadline

    def _publish(self, report: CycleReport) -> None:
        """Write the report to ``{root}/last-cycle`` for ``allot status`` (best effort)."""
        data = json.dumps(report.to_json(), separators=(",", ":")).encode()
        try:
            try:
                self.client.set(self.paths.last_cycle, data)
            except NoNodeError:
                self.client.create(self.paths.last_cycle, data, makepath=True)
        except KazooException as exc:
            log.warning("could not publish the cycle report: %s", exc)

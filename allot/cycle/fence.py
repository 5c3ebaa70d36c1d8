"""The SQL side of one assignment cycle: every write fenced, an SQL outage survived.

ZooKeeper decides; SQL mirrors (DESIGN.md, "The assignment cycle"). :class:`FencedSql` is
what a lock holder uses to write SQL, and it keeps three promises:

- **A stale holder writes nothing.** Every transaction first claims the mirror's fence with
  the holder's pair ``(generation, token)`` (:func:`claim`): ``token`` is the ``czxid`` of its
  lock znode, larger for every later holder of one ZooKeeper; ``generation`` is that
  ZooKeeper's generation (``{root}/generation``, :mod:`allot.generation`), read under the
  lock, larger for a ZooKeeper rebuilt from scratch. Pairs compare generation first. A
  transaction commits only after asking ZooKeeper that the lock znode is still this session's
  (:meth:`allot.zk.lock.LockGuard.confirm`). Once a newer holder has written, an older one
  gets :class:`~allot.errors.Superseded`, and so does a holder still running on an older
  ZooKeeper once the rebuilt one's holder has written, however large its token; an older
  holder that froze between its confirmation and its commit holds the fence row meanwhile, so
  the newer holder's first transaction waits for it and then overwrites what it wrote (the
  only trace a zombie can leave lasts until the next holder's first SQL write, and no mirror
  at a lower epoch is ever accepted: SQL's epoch never goes backwards).
- **A rebuilt ZooKeeper takes over.** Its lock znodes' ``czxid``s start again from zero,
  below the token SQL holds, but it has no ``{root}/generation``: the first cycle allocates one
  in SQL (larger than every generation a fence names) and creates the znode, so its pair is
  the larger and its first fenced write (recovery) passes. The epoch is still compared across
  generations, and that is right: before it plans, a cycle re-publishes ``assignment-version``
  at the highest epoch known, SQL's included (:mod:`allot.zk.epoch`), so the rebuilt
  ZooKeeper's epochs continue above what SQL mirrors. If SQL could not be read then, one
  mirror may be refused; the next cycle reads SQL's epoch and re-publishes it.
- **An outage delays, never decides.** SQL unavailable (or the generation unreadable, or not
  allocatable without SQL): the write is skipped, the reason is kept in
  :attr:`FencedSql.problem` (the cycle report shows it) and the cycle goes on with ZooKeeper
  alone; a later cycle brings SQL to ZooKeeper (:meth:`FencedSql.catch_up`), recording the
  plan it missed.

The argument for the table-work fence, which uses the same generation, is docs/table-work.md
(case 16, the rebuilt ZooKeeper).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import CursorResult, case, insert, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from allot.cycle import mirror, plans
from allot.cycle.mirror import FENCE, SQL_UNAVAILABLE
from allot.cycle.observe import Observation
from allot.errors import Superseded
from allot.planner import Plan
from allot.zk.lock import LockGuard
from allot.zk.version import AssignmentVersion
from models.base import utcnow
from models.schema import MirrorState
from models.states import PlanStatus

log = logging.getLogger(__name__)

T = TypeVar("T")


def claim(session: Session, fence: tuple[int, int], epoch: int | None = None) -> int:
    """Fence this transaction: record ``fence`` (and ``epoch``) as the newest writer, or refuse.

    Call it first in every SQL transaction of a cycle. It raises the stored pair
    ``(generation, holder_token)`` to ``fence`` only if no larger pair has written (generation
    first: a rebuilt ZooKeeper's smaller tokens win with its larger generation), and ``epoch``
    to ``epoch`` only if SQL does not already mirror a larger one, whatever the generation
    (module docstring). The UPDATE locks the row until the transaction ends, so fenced
    transactions of two holders run one after the other, in pair order as far as SQL is
    concerned.

    Args:
        fence: the caller's ``(generation, token)``: its ZooKeeper's generation and its
            fencing token (:attr:`allot.zk.lock.LockGuard.token`).
        epoch: the assignment epoch this transaction mirrors (None: it mirrors no epoch).

    Returns:
        The epoch SQL mirrors after the claim.

    Raises:
        Superseded: a larger pair has written SQL, or ``epoch`` is below SQL's epoch.
    """
    generation, token = fence
    # write first: the UPDATE takes the row lock (PostgreSQL) or the database's write lock
    # (SQLite) before anything is read, so the check below cannot race another claim
    locked: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(MirrorState).where(MirrorState.name == FENCE).values(updated_at=utcnow())
    )
    if locked.rowcount == 0:  # a database created by hand: the migration inserts the row
        session.execute(
            insert(MirrorState).values(name=FENCE, generation=0, holder_token=0, epoch=0)
        )
    row = session.execute(select(MirrorState).where(MirrorState.name == FENCE)).scalar_one()
    if (row.generation, row.holder_token) > fence:
        raise Superseded(
            "a newer assignment-lock holder (generation "
            f"{row.generation}, token {row.holder_token} > generation {generation}, token "
            f"{token}) has written SQL; this cycle writes nothing there"
        )
    if epoch is not None and epoch < row.epoch:
        raise Superseded(f"SQL mirrors epoch {row.epoch}; refusing to take it back to {epoch}")
    new_epoch = row.epoch if epoch is None else epoch
    session.execute(
        update(MirrorState)
        .where(MirrorState.name == FENCE)
        .values(
            generation=generation,
            holder_token=token,
            epoch=case((MirrorState.epoch < new_epoch, new_epoch), else_=MirrorState.epoch),
        )
    )
    return new_epoch


def write_fenced(
    sessions: sessionmaker[Session],
    fence: tuple[int, int],
    confirm: Callable[[], None],
    work: Callable[[Session], T],
    *,
    epoch: int | None = None,
) -> T:
    """Run ``work`` in one SQL transaction fenced by :func:`claim`, committed only if
    ``confirm()`` (the holder still holds the lock, asked of ZooKeeper) passes after it.

    ``confirm`` runs while the transaction holds the fence row, so a newer holder's first
    fenced transaction waits for this one to end and then overwrites what it wrote: SQL never
    keeps a stale holder's write past the newer holder's first transaction.

    Raises:
        Superseded: a holder with a larger ``(generation, token)`` has written SQL (nothing
            written).
        LockLost: ``confirm`` failed (rolled back).
        sqlalchemy.exc.OperationalError, InterfaceError: SQL is unavailable.
    """
    with sessions.begin() as session:
        claim(session, fence, epoch)
        result = work(session)
        session.flush()
        confirm()
    return result


class FencedSql:
    """Fenced, outage-tolerant SQL writes for the holder of ``guard`` (module docstring).

    ``generation`` returns this ZooKeeper's generation (reading ``{root}/generation``, or
    allocating it in SQL and creating it when there is none:
    :func:`allot.generation.zk_generation`); it is called once, at the first write, while the
    lock is held (that write's confirmation proves it was). Methods take what to write and
    leave nothing open; each is one SQL transaction.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        guard: LockGuard,
        clock: Callable[[], dt.datetime],
        generation: Callable[[], int],
    ) -> None:
        self.sessions = sessions
        self.guard = guard
        self.clock = clock
        self._read_generation = generation
        self.generation: int | None = None
        """This ZooKeeper's generation, once read (None before the first write)."""
        self.problem: str | None = None
        """Why SQL could not be written in this cycle (None while it could)."""

    def write(self, work: Callable[[Session], T], *, epoch: int | None = None) -> T | None:
        """Run ``work`` in one fenced transaction mirroring ``epoch`` (None: no epoch).

        Returns:
            What ``work`` returned; None when SQL is unavailable, or the generation unreadable
            (see :attr:`problem`).

        Raises:
            Superseded: a newer holder has written SQL, or ``epoch`` is below SQL's.
            LockLost: the lock could not be confirmed before the commit (rolled back).
            KazooException: ``{root}/generation`` could not be read (the session is gone).
        """
        try:
            if self.generation is None:
                self.generation = self._read_generation()
        except ValueError as exc:  # what ZooKeeper holds never stops a cycle
            self.problem = (
                f"the ZooKeeper generation znode is unreadable ({exc}): SQL is not written "
                "until it is fixed or deleted (deleting it is safe)"
            )
            log.error("cycle goes on without SQL: %s", self.problem)
            return None
        except SQL_UNAVAILABLE as exc:  # no generation yet, and none can be allocated
            self._unavailable(exc)
            return None
        fence = (self.generation, self.guard.token)
        try:
            return write_fenced(self.sessions, fence, self.guard.confirm, work, epoch=epoch)
        except SQL_UNAVAILABLE as exc:
            self._unavailable(exc)
            return None

    def _unavailable(self, exc: OperationalError | InterfaceError) -> None:
        """Record in :attr:`problem` that SQL could not be written."""
        reason = str(exc.orig if exc.orig is not None else exc).splitlines()[0]
        self.problem = f"SQL unavailable ({reason}); it catches up when it is back"
        log.warning("cycle goes on without SQL: %s", reason)

    def recover(self, read_version: Callable[[], AssignmentVersion]) -> list[str]:
        """Finish or fail plans a crashed or frozen cycle left ``applying``; return their ids.

        A plain read first: with no plan ``applying`` (the usual case) nothing is written and no
        fence is taken. Otherwise the cycle's first fenced transaction settles them: from its
        commit on, no older holder writes SQL. A plan is failed only by a holder with a larger
        ``(generation, token)`` than the one that recorded it (else
        :class:`~allot.errors.Superseded`), that is once the recorder's lock znode is gone and
        its ZooKeeper transaction can no longer commit, or once its ZooKeeper was replaced by a
        rebuilt one (where the plan never was: it is failed).
        """
        try:  # a plain read first: a cycle with nothing to settle takes no fence, writes nothing
            with self.sessions() as session:
                if not plans.plans_in_status(session, PlanStatus.APPLYING):
                    return []
        except SQL_UNAVAILABLE as exc:
            self._unavailable(exc)
            return []

        def settle(session: Session) -> list[str]:
            stuck = [row.plan_id for row in plans.plans_in_status(session, PlanStatus.APPLYING)]
            version = read_version() if stuck else None
            for plan_id in stuck:
                assert version is not None
                landed = version.plan_id == plan_id and version.pending is None
                plans.settle_applying(session, plan_id, version.epoch if landed else None)
                log.warning(
                    "plan %s was left applying; it %s",
                    plan_id,
                    "reached ZooKeeper: applied" if landed else "never landed: failed",
                )
            return stuck

        return self.write(settle) or []

    def record(
        self,
        seen: Observation,
        planned: Plan,
        plan_id: str,
        *,
        trigger: str,
        status: PlanStatus,
        max_moves: int | None,
    ) -> bool:
        """Record ``planned`` in ``status`` (a dry run's ``generated`` plan); False when SQL
        is unavailable. A plan a cycle applies is recorded with its mirror (:meth:`finish`),
        after ZooKeeper, off the failover's path."""

        def record(session: Session) -> bool:
            plans.record_plan(
                session,
                planned,
                plan_id=plan_id,
                trigger=trigger,
                status=status,
                base_epoch=seen.snapshot.version.epoch,
                max_moves=max_moves,
            )
            return True

        return bool(self.write(record))

    def finish(
        self,
        seen: Observation,
        planned: Plan,
        plan_id: str,
        *,
        trigger: str,
        epochs: tuple[int, int],
        max_moves: int | None,
    ) -> None:
        """Mirror a plan that reached ZooKeeper (``epochs``: its base and new epoch) in one
        transaction: record it ``applied`` (and, first, the plan it was based on when SQL
        missed that one: ``catch-up``), make ``bucket`` / ``node`` say what ZooKeeper says. A
        stored plan another cycle already settled is left alone (the assignment may have
        moved on since)."""
        base_epoch, epoch = epochs

        def mirror_plan(session: Session) -> None:
            # the plan this one was based on reached ZooKeeper but not SQL (its cycle stopped
            # in between, or SQL was down): recorded first, so the history misses no plan
            version = seen.snapshot.version
            plans.record_missed(session, version.plan_id, version.epoch, seen.held)
            if not plans.finish_applying(
                session,
                planned,
                plan_id,
                trigger=trigger,
                base_epoch=base_epoch,
                epoch=epoch,
                max_moves=max_moves,
            ):
                log.warning("plan %s was settled by another cycle; not mirroring it", plan_id)
                return
            mirror.mirror_assignment(session, planned.assignments, epoch)
            mirror.record_nodes(session, seen.node_observations(), self.clock())

        self.write(mirror_plan, epoch=epoch)

    def fail(self, plan_id: str, error: str) -> None:
        """Mark an ``applying`` plan ``failed`` (its ZooKeeper transaction did not commit)."""
        self.write(lambda session: plans.fail_applying(session, plan_id, error))

    def catch_up(self, seen: Observation) -> None:
        """Bring SQL's bucket owners and node states to what ZooKeeper holds (``seen``),
        recording an applied plan SQL missed while it was unavailable. Writes nothing when
        ``seen`` found SQL in step already (:attr:`~allot.cycle.observe.Observation.sql_in_step`:
        the steady state)."""
        if seen.sql_in_step:
            self.guard.check()  # a holder that lost its session still ends `aborted`
            return
        version = seen.snapshot.version

        def mirror_zookeeper(session: Session) -> int:
            plans.record_missed(session, version.plan_id, version.epoch, seen.held)
            fixed = mirror.mirror_assignment(session, seen.held, version.epoch)
            mirror.record_nodes(session, seen.node_observations(), self.clock())
            return fixed

        fixed = self.write(mirror_zookeeper, epoch=version.epoch)
        if fixed:
            log.warning("SQL differed from ZooKeeper: %d bucket owner(s) fixed", fixed)

"""The SQL side of one assignment cycle: every write fenced, an SQL outage survived.

ZooKeeper decides; SQL mirrors (DESIGN.md, "The assignment cycle"). :class:`FencedSql` is
what a lock holder uses to write SQL, and it keeps two promises:

- **A stale holder writes nothing.** Every transaction first claims the mirror's fence with
  the holder's token (:func:`claim`; the token is the ``czxid`` of its lock
  znode, larger for every later holder) and commits only after asking ZooKeeper that the lock
  znode is still this session's (:meth:`allot.zk.lock.LockGuard.confirm`). Once a newer
  holder has written, an older one gets :class:`~allot.errors.Superseded`; an older holder
  that froze between its confirmation and its commit holds the fence row meanwhile, so the
  newer holder's first transaction waits for it and then overwrites what it wrote (the only
  trace a zombie can leave lasts until the next holder's first SQL write, and no mirror at a
  lower epoch is ever accepted: SQL's epoch never goes backwards).
- **An outage delays, never decides.** SQL unavailable: the write is skipped, the reason is
  kept in :attr:`FencedSql.problem` (the cycle report shows it) and the cycle goes on with
  ZooKeeper alone; a later cycle brings SQL to ZooKeeper (:meth:`FencedSql.catch_up`),
  recording the plan it missed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import CursorResult, case, insert, select, update
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


def claim(session: Session, token: int, epoch: int | None = None) -> int:
    """Fence this transaction: record ``token`` (and ``epoch``) as the newest writer, or refuse.

    Call it first in every SQL transaction of a cycle. It raises ``holder_token`` to
    ``token`` only if no larger token has written, and ``epoch`` to ``epoch`` only if SQL does
    not already mirror a larger one; the UPDATE locks the row until the transaction ends, so
    fenced transactions of two holders run one after the other, in token order as far as SQL
    is concerned.

    Args:
        token: the caller's fencing token (:attr:`allot.zk.lock.LockGuard.token`).
        epoch: the assignment epoch this transaction mirrors (None: it mirrors no epoch).

    Returns:
        The epoch SQL mirrors after the claim.

    Raises:
        Superseded: a larger token has written SQL, or ``epoch`` is below SQL's epoch.
    """
    # write first: the UPDATE takes the row lock (PostgreSQL) or the database's write lock
    # (SQLite) before anything is read, so the check below cannot race another claim
    locked: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(MirrorState).where(MirrorState.name == FENCE).values(updated_at=utcnow())
    )
    if locked.rowcount == 0:  # a database created by hand: the migration inserts the row
        session.execute(insert(MirrorState).values(name=FENCE, holder_token=0, epoch=0))
    row = session.execute(select(MirrorState).where(MirrorState.name == FENCE)).scalar_one()
    if row.holder_token > token:
        raise Superseded(
            f"a newer assignment-lock holder (token {row.holder_token} > {token}) has written "
            "SQL; this cycle writes nothing there"
        )
    if epoch is not None and epoch < row.epoch:
        raise Superseded(f"SQL mirrors epoch {row.epoch}; refusing to take it back to {epoch}")
    new_epoch = row.epoch if epoch is None else epoch
    session.execute(
        update(MirrorState)
        .where(MirrorState.name == FENCE)
        .values(
            holder_token=token,
            epoch=case((MirrorState.epoch < new_epoch, new_epoch), else_=MirrorState.epoch),
        )
    )
    return new_epoch


def write_fenced(
    sessions: sessionmaker[Session],
    token: int,
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
        Superseded: a newer holder has written SQL (nothing written).
        LockLost: ``confirm`` failed (rolled back).
        sqlalchemy.exc.OperationalError, InterfaceError: SQL is unavailable.
    """
    with sessions.begin() as session:
        claim(session, token, epoch)
        result = work(session)
        session.flush()
        confirm()
    return result


class FencedSql:
    """Fenced, outage-tolerant SQL writes for the holder of ``guard`` (module docstring).

    Methods take what to write and leave nothing open; each is one SQL transaction.
    """

    def __init__(
        self, sessions: sessionmaker[Session], guard: LockGuard, clock: Callable[[], dt.datetime]
    ) -> None:
        self.sessions = sessions
        self.guard = guard
        self.clock = clock
        self.problem: str | None = None
        """Why SQL could not be written in this cycle (None while it could)."""

    def write(self, work: Callable[[Session], T], *, epoch: int | None = None) -> T | None:
        """Run ``work`` in one fenced transaction mirroring ``epoch`` (None: no epoch).

        Returns:
            What ``work`` returned; None when SQL is unavailable (see :attr:`problem`).

        Raises:
            Superseded: a newer holder has written SQL, or ``epoch`` is below SQL's.
            LockLost: the lock could not be confirmed before the commit (rolled back).
        """
        try:
            return write_fenced(
                self.sessions, self.guard.token, self.guard.confirm, work, epoch=epoch
            )
        except SQL_UNAVAILABLE as exc:
            reason = str(exc.orig if exc.orig is not None else exc).splitlines()[0]
            self.problem = f"SQL unavailable ({reason}); it catches up when it is back"
            log.warning("cycle goes on without SQL: %s", reason)
            return None

    def recover(self, read_version: Callable[[], AssignmentVersion]) -> list[str]:
        """Finish or fail plans a crashed or frozen cycle left ``applying``; return their ids.

        The cycle's first fenced transaction: from its commit on, no older holder writes SQL.
        A plan is failed only by a holder with a larger token than the one that recorded it
        (else :class:`~allot.errors.Superseded`), that is once the recorder's lock znode is
        gone and its ZooKeeper transaction can no longer commit.
        """

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
        """Record ``planned`` in ``status``; False when SQL is unavailable (an ``applying``
        plan goes on unrecorded and is recorded with its mirror). The node states are recorded
        with the mirror (:meth:`finish`), off the failover's path."""

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
        """Mirror a plan that reached ZooKeeper (``epochs``: its base and new epoch): mark it
        ``applied`` and make ``bucket`` / ``node`` say what ZooKeeper says. A plan another
        cycle already settled is left alone (the assignment may have moved on since)."""
        base_epoch, epoch = epochs

        def mirror_plan(session: Session) -> None:
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
        recording an applied plan SQL missed while it was unavailable."""
        version = seen.snapshot.version

        def mirror_zookeeper(session: Session) -> int:
            plans.record_missed(session, version.plan_id, version.epoch, seen.held)
            fixed = mirror.mirror_assignment(session, seen.held, version.epoch)
            mirror.record_nodes(session, seen.node_observations(), self.clock())
            return fixed

        fixed = self.write(mirror_zookeeper, epoch=version.epoch)
        if fixed:
            log.warning("SQL differed from ZooKeeper: %d bucket owner(s) fixed", fixed)

"""Plans in SQL: every plan allot makes is recorded, with its moves and what became of it.

Statuses are :class:`~models.states.PlanStatus` (DESIGN.md): ``generated`` (a dry run,
waiting to be applied by hand), ``applying`` (a stored plan being applied by hand, set before
its ZooKeeper transaction; a crash leaves it here and the next cycle finishes or fails it),
``applied``, ``rejected`` (refused, e.g. stale), ``failed``. A plan a cycle makes and applies
at once is recorded only after its ZooKeeper transaction committed, straight as ``applied``
(off the failover's path); if its cycle stops before SQL, the next cycle that writes SQL
records it from ZooKeeper (:func:`record_missed`, trigger ``catch-up``).

Functions take a :class:`~sqlalchemy.orm.Session` and leave the commit to the caller.
:func:`prune_plans` deletes old plans in bounded batches (:mod:`allot.history` runs it).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Table, delete, func, select, update
from sqlalchemy.orm import Session

from allot.errors import InvalidInput, NotFound
from allot.planner import Move, Plan
from models.base import utcnow
from models.schema import Bucket, PlanMove
from models.schema import Plan as PlanRow
from models.states import PlanStatus

ERROR_LENGTH = 2000


def new_plan_id() -> str:
    """A fresh plan id: 32 hex digits (commands accept any unique prefix of 6 or more)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class PlanDetail:
    """A recorded plan and its moves ``(bucket_id, from_node, to_node)`` by bucket."""

    plan: PlanRow
    moves: Sequence[tuple[int, str | None, str]]


def record_plan(
    session: Session,
    plan: Plan,
    *,
    plan_id: str,
    trigger: str,
    status: PlanStatus,
    base_epoch: int,
    max_moves: int | None,
) -> PlanRow:
    """Store ``plan`` with its moves under ``plan_id`` (idempotent: a repeat changes nothing)."""
    existing = session.get(PlanRow, plan_id)
    if existing is not None:
        return existing
    row = PlanRow(
        plan_id=plan_id,
        trigger=trigger,
        status=status,
        strategy=plan.stats.strategy,
        base_epoch=base_epoch,
        epoch=None,
        max_moves=max_moves,
        moves=plan.stats.moves,
        min_moves=plan.stats.min_moves,
        spread_before=plan.stats.spread_before,
        spread_after=plan.stats.spread_after,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    _insert_moves(session, plan_id, plan.moves)
    return row


def _insert_moves(session: Session, plan_id: str, moves: Sequence[Move]) -> None:
    if not moves:
        return
    table = PlanMove.__table__
    assert isinstance(table, Table)
    session.execute(
        table.insert(),
        [
            {"plan_id": plan_id, "bucket_id": m.bucket, "from_node": m.source, "to_node": m.target}
            for m in moves
        ],
    )


def set_status(
    session: Session,
    plan_id: str,
    status: PlanStatus,
    *,
    epoch: int | None = None,
    error: str | None = None,
    expected: Sequence[PlanStatus] | None = None,
) -> bool:
    """Move a plan to ``status``; with ``expected``, only from one of those statuses.

    Returns whether the row changed (False when the plan was already moved on by someone else).
    ``applied`` also records ``epoch`` and the time.
    """
    values: dict[str, object] = {"status": status}
    if epoch is not None:
        values["epoch"] = epoch
    if status == PlanStatus.APPLIED:
        values["applied_at"] = utcnow()
    if error is not None:
        values["error"] = error[:ERROR_LENGTH]
    query = update(PlanRow).where(PlanRow.plan_id == plan_id).values(**values)
    if expected is not None:
        query = query.where(PlanRow.status.in_(expected))
    result = cast(CursorResult[Any], session.execute(query))
    return bool(result.rowcount)


def settle_applying(session: Session, plan_id: str, landed_epoch: int | None) -> bool:
    """Finish a plan a crashed cycle left ``applying``: ``applied`` at ``landed_epoch`` when
    ZooKeeper shows it landed, else (None) ``failed``. Returns whether the row changed."""
    if landed_epoch is not None:
        return set_status(
            session,
            plan_id,
            PlanStatus.APPLIED,
            epoch=landed_epoch,
            expected=[PlanStatus.APPLYING],
        )
    return set_status(
        session,
        plan_id,
        PlanStatus.FAILED,
        expected=[PlanStatus.APPLYING],
        error="its cycle stopped before the ZooKeeper transaction committed",
    )


def fail_applying(session: Session, plan_id: str, error: str) -> bool:
    """Mark an ``applying`` plan ``failed`` with ``error``; False when it was not applying."""
    return set_status(
        session, plan_id, PlanStatus.FAILED, error=error, expected=[PlanStatus.APPLYING]
    )


def finish_applying(
    session: Session,
    plan: Plan,
    plan_id: str,
    *,
    trigger: str,
    base_epoch: int,
    epoch: int,
    max_moves: int | None,
) -> bool:
    """Mark a plan that reached ZooKeeper ``applied`` at ``epoch``, recording it first when SQL
    never got it (it was unavailable when the plan was made).

    Returns:
        False when the plan was no longer ``applying`` (another cycle settled it).
    """
    if session.get(PlanRow, plan_id) is None:
        record_plan(
            session,
            plan,
            plan_id=plan_id,
            trigger=trigger,
            status=PlanStatus.APPLYING,
            base_epoch=base_epoch,
            max_moves=max_moves,
        )
    return set_status(
        session, plan_id, PlanStatus.APPLIED, epoch=epoch, expected=[PlanStatus.APPLYING]
    )


def record_missed(
    session: Session, plan_id: str | None, epoch: int, held: Mapping[str, Iterable[int]]
) -> bool:
    """Record the plan ZooKeeper names (``plan_id`` at ``epoch``) when SQL has no row for it
    and its bucket owners differ from ``held``: a plan applied while SQL was unavailable. Its
    moves are what SQL has to change (several plans applied during one outage show as one);
    its trigger is ``catch-up``. Returns whether a plan was recorded.
    """
    if plan_id is None or session.get(PlanRow, plan_id) is not None:
        return False
    target = {bucket: node for node, buckets in held.items() for bucket in buckets}
    current = dict(session.execute(select(Bucket.bucket_id, Bucket.node_key)).all())
    moves = [
        Move(bucket, source, target[bucket])
        for bucket, source in sorted(current.items())
        if bucket in target and target[bucket] != source
    ]
    if not moves:
        return False
    session.add(
        PlanRow(
            plan_id=plan_id,
            trigger="catch-up",
            status=PlanStatus.APPLIED,
            strategy="unknown",
            base_epoch=epoch - 1,
            epoch=epoch,
            max_moves=None,
            moves=len(moves),
            min_moves=0,
            spread_before=0,
            spread_after=0,
            created_at=utcnow(),
            applied_at=utcnow(),
            error="applied while SQL was unavailable; recorded when it came back",
        )
    )
    session.flush()
    _insert_moves(session, plan_id, moves)
    return True


def find_plan(session: Session, plan_id: str) -> PlanDetail:
    """The plan whose id is ``plan_id`` or starts with it (at least 6 characters).

    Raises:
        InvalidInput: the prefix is shorter than 6 characters or matches several plans.
        NotFound: no plan matches.
    """
    plan_id = plan_id.strip().lower()
    row = session.get(PlanRow, plan_id)
    if row is None:
        if len(plan_id) < 6:
            raise InvalidInput(f"plan id {plan_id!r} is too short: give at least 6 characters")
        matches = (
            session.execute(
                select(PlanRow).where(PlanRow.plan_id.startswith(plan_id, autoescape=True)).limit(2)
            )
            .scalars()
            .all()
        )
        if len(matches) > 1:
            raise InvalidInput(f"plan id {plan_id!r} matches several plans: give more characters")
        if not matches:
            raise NotFound(f"no plan {plan_id!r}: `allot plans list` shows the recorded plans")
        row = matches[0]
    moves = session.execute(
        select(PlanMove.bucket_id, PlanMove.from_node, PlanMove.to_node)
        .where(PlanMove.plan_id == row.plan_id)
        .order_by(PlanMove.bucket_id)
    ).all()
    return PlanDetail(row, [(bucket, source, target) for bucket, source, target in moves])


def stale_reason(stored: PlanDetail, epoch: int, replanned: Plan) -> str | None:
    """Why the generated plan ``stored`` may no longer be applied, or None if it may.

    It is stale when the assignment epoch moved since it was made (``epoch`` is the current
    one) or when planning now (``replanned``, with the plan's strategy and ``max_moves``) gives
    other moves, e.g. because membership changed.
    """
    base = stored.plan.base_epoch
    if epoch != base:
        return f"the assignment moved from epoch {base} to {epoch}"
    if [(m.bucket, m.source, m.target) for m in replanned.moves] != list(stored.moves):
        return "membership changed: planning now gives other moves"
    return None


def list_plans(
    session: Session, limit: int | None = 20, status: str | None = None
) -> list[PlanRow]:
    """Recorded plans, newest first."""
    query = select(PlanRow).order_by(PlanRow.created_at.desc(), PlanRow.plan_id)
    if status is not None:
        query = query.where(PlanRow.status == status)
    if limit is not None:
        query = query.limit(limit)
    return list(session.execute(query).scalars())


def plans_in_status(session: Session, status: PlanStatus) -> list[PlanRow]:
    """Plans currently in ``status``, oldest first (the cycle's recovery looks at ``applying``)."""
    return list(
        session.execute(
            select(PlanRow).where(PlanRow.status == status).order_by(PlanRow.created_at)
        ).scalars()
    )


def _kept_plans() -> tuple[ColumnElement[str], ColumnElement[str]]:
    """The plans kept whatever their age, as scalar subqueries (``''`` when there is none):
    the newest plan and the newest ``applied`` one (what gave the buckets their owners)."""
    newest = select(PlanRow.plan_id).order_by(PlanRow.created_at.desc(), PlanRow.plan_id.desc())
    applied = newest.where(PlanRow.status == PlanStatus.APPLIED)
    return (
        func.coalesce(newest.limit(1).scalar_subquery(), ""),
        func.coalesce(applied.limit(1).scalar_subquery(), ""),
    )


def _prunable_plans(older_than: dt.datetime) -> ColumnElement[bool]:
    newest, newest_applied = _kept_plans()
    return (
        (PlanRow.created_at < older_than)
        & (PlanRow.status != PlanStatus.APPLYING)
        & (PlanRow.plan_id != newest)
        & (PlanRow.plan_id != newest_applied)
    )


def prune_plans(session: Session, older_than: dt.datetime, limit: int) -> int:
    """Delete at most ``limit`` plans created before ``older_than``, oldest first, with their
    moves (``ON DELETE CASCADE``), and return how many plans went; the caller commits.

    Never deleted: a plan ``applying`` (the next cycle finishes or fails it), the newest plan
    and the newest ``applied`` one. One statement, so on SQLite it waits for the write lock
    like any writer (a read first would make it fail at once when another writer went
    first). Safe to run in several processes at once, as
    :func:`allot.work.runs.prune_runs` is (``FOR UPDATE SKIP LOCKED`` on PostgreSQL).
    """
    doomed = (
        select(PlanRow.plan_id)
        .where(_prunable_plans(older_than))
        .order_by(PlanRow.created_at, PlanRow.plan_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = session.execute(
        delete(PlanRow).where(PlanRow.plan_id.in_(doomed)),
        execution_options={"synchronize_session": False},
    )
    return int(cast(CursorResult[Any], result).rowcount)


def count_prunable_plans(session: Session, older_than: dt.datetime) -> int:
    """How many plans :func:`prune_plans` would delete for ``older_than`` (all batches)."""
    return session.execute(
        select(func.count()).select_from(PlanRow).where(_prunable_plans(older_than))
    ).scalar_one()

"""The run history of table work: one ``table_task_run`` row per attempt, written once.

Pure SQL on a caller's :class:`~sqlalchemy.orm.Session`; no ZooKeeper, no Celery. The callers
(:mod:`allot.work.run` and :mod:`allot.work.context` in a worker's pool processes,
:mod:`allot.work.lost` in its main process) own the transactions.

An attempt's row is inserted when the attempt has ended, never updated: a successful run's
row is inserted ``committed`` by :func:`insert_committed` in the transaction of its writes
(at most one ``committed`` per run, a partial unique index, so a message delivered again
commits at most once); a failed or fenced attempt's row by :func:`insert_ended` after it, in a
small transaction of its own; an attempt whose pool process died by :func:`insert_ended` in the
worker's main process (:data:`ABANDONED`). :func:`run_state` is the one read before a run's
body: the bucket's fence, whether the run committed, and how often it was abandoned.
:class:`RunRow` is an attempt as ``allot work runs`` shows it
(:func:`allot.work.client.list_runs`). :func:`prune_runs` deletes old attempts in bounded
batches (:mod:`allot.history` decides how old and runs the batches).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, exists, func, insert, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from allot.work.fence import FenceRow
from models.base import utcnow
from models.schema import BucketLease, TableTaskRun
from models.states import RunStatus

ERROR_LENGTH = 2000
ABANDONED = "abandoned: "
"""How the error of an attempt whose pool process died under it begins (``failed``)."""


@dataclass(frozen=True)
class Attempt:
    """Who runs this attempt of a run, under which fence token of which ZooKeeper generation
    (0: a fence written before generations existed), and since when."""

    run_id: str
    task_name: str
    table_id: int
    bucket_id: int
    node_key: str
    token: int
    started_at: dt.datetime
    generation: int = 0


@dataclass(frozen=True)
class RunState:
    """What a delivery reads before it runs its body (:func:`run_state`)."""

    fence: FenceRow | None
    """The bucket's fence, or None when no node ever took its lease."""
    committed: bool
    """An attempt of the run committed: nothing to do."""
    abandoned: int
    """Attempts of the run whose pool process died under them."""


_OF_RUN = TableTaskRun.run_id == bindparam("run_id")
_OF_BUCKET = BucketLease.bucket_id == bindparam("bucket_id")
_RUN_STATE = select(
    select(BucketLease.node_key).where(_OF_BUCKET).scalar_subquery().label("node_key"),
    select(BucketLease.token).where(_OF_BUCKET).scalar_subquery().label("token"),
    select(BucketLease.generation).where(_OF_BUCKET).scalar_subquery().label("generation"),
    exists().where(_OF_RUN, TableTaskRun.status == RunStatus.COMMITTED).label("committed"),
    select(func.count())
    .where(
        _OF_RUN,
        TableTaskRun.status == RunStatus.FAILED,
        TableTaskRun.error.startswith(ABANDONED, autoescape=True),
    )
    .scalar_subquery()
    .label("abandoned"),
)
_INSERT = insert(TableTaskRun)
"""The statements of every run, built once: building them cost a run more than executing
them on SQLite."""


def run_state(session: Session, bucket_id: int, run_id: str) -> RunState:
    """The bucket's fence and what run ``run_id`` left in the history, in one read-only
    statement (scalar subqueries: the fence row by its key, the run's attempts through the
    ``run_id`` index)."""
    row = session.execute(_RUN_STATE, {"bucket_id": bucket_id, "run_id": run_id}).one()
    fence = (
        None
        if row.node_key is None
        else FenceRow(bucket_id, row.node_key, row.token, row.generation)
    )
    return RunState(fence, bool(row.committed), int(row.abandoned))


class AlreadyCommitted(Exception):
    """Another attempt of the same run committed first; this attempt's writes were rolled
    back (internal: the task ends quietly)."""


def _values(attempt: Attempt, status: RunStatus, error: str | None) -> dict[str, Any]:
    return {
        "run_id": attempt.run_id,
        "task_name": attempt.task_name,
        "table_id": attempt.table_id,
        "bucket_id": attempt.bucket_id,
        "node_key": attempt.node_key,
        "token": attempt.token,
        "status": status,
        "started_at": attempt.started_at,
        "finished_at": utcnow(),
        "error": None if error is None else error[:ERROR_LENGTH],
    }


def insert_committed(session: Session, attempt: Attempt) -> None:
    """Insert the attempt ``committed``, inside the transaction of the task's writes.

    Raises:
        AlreadyCommitted: another attempt of the run committed first (the unique index refused
            a second committed row); the caller rolls the transaction back.
    """
    try:
        session.execute(_INSERT, _values(attempt, RunStatus.COMMITTED, None))
    except IntegrityError:
        raise AlreadyCommitted from None


def insert_ended(
    session: Session,
    attempt: Attempt,
    status: RunStatus,
    error: str,
    *,
    unless_committed: bool = False,
) -> bool:
    """Insert the attempt as it ended (``failed`` or ``fenced``, with ``error``) and return
    whether it was inserted.

    ``unless_committed``: the attempt's own commit raised (its reply lost: the connection
    dropped after the server committed, or maybe before): insert nothing when the run has a
    committed attempt, which is then this one's. Its retry finds that row and runs nothing.
    """
    values = _values(attempt, status, error)
    if not unless_committed:
        session.execute(insert(TableTaskRun).values(values))
        return True
    committed = exists().where(
        TableTaskRun.run_id == attempt.run_id, TableTaskRun.status == RunStatus.COMMITTED
    )
    rows = select(
        *(literal(value, TableTaskRun.__table__.c[name].type) for name, value in values.items())
    ).where(~committed)
    inserted = session.execute(insert(TableTaskRun).from_select(list(values), rows))
    return bool(inserted.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class RunRow:
    """One attempt as ``allot work runs`` shows it."""

    attempt_id: int
    run_id: str
    task_name: str
    table: str
    bucket_id: int
    node_key: str
    token: int
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "attempt_id": self.attempt_id,
            "run_id": self.run_id,
            "task_name": self.task_name,
            "table": self.table,
            "bucket_id": self.bucket_id,
            "node_key": self.node_key,
            "token": self.token,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "error": self.error,
        }


def _prunable_runs(older_than: dt.datetime) -> ColumnElement[bool]:
    """The condition of an attempt :func:`prune_runs` may delete: started before
    ``older_than`` (a row is written once, when its attempt has ended)."""
    return TableTaskRun.started_at < older_than


def prune_runs(session: Session, older_than: dt.datetime, limit: int) -> int:
    """Delete at most ``limit`` attempts started before ``older_than``, oldest first, and
    return how many went; the caller commits.

    Safe to run in several processes at once: on PostgreSQL the rows are picked ``FOR UPDATE
    SKIP LOCKED``, so concurrent pruners take different rows instead of waiting on each other;
    on SQLite writers take turns. A row already deleted is simply not found. The oldest rows
    are found through the ``(started_at, attempt_id)`` index.
    """
    doomed = (
        select(TableTaskRun.attempt_id)
        .where(_prunable_runs(older_than))
        .order_by(TableTaskRun.started_at, TableTaskRun.attempt_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = session.execute(
        delete(TableTaskRun).where(TableTaskRun.attempt_id.in_(doomed)),
        execution_options={"synchronize_session": False},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def count_prunable_runs(session: Session, older_than: dt.datetime) -> int:
    """How many attempts :func:`prune_runs` would delete for ``older_than`` (all batches)."""
    return session.execute(
        select(func.count()).select_from(TableTaskRun).where(_prunable_runs(older_than))
    ).scalar_one()

"""The run history of table work: one ``table_task_run`` row per attempt.

Pure SQL on a caller's :class:`~sqlalchemy.orm.Session`; no ZooKeeper, no Celery. The caller
(:mod:`allot.work.run` and :mod:`allot.work.context` in a worker's pool processes) owns the
transactions.

:func:`start_attempt` / :func:`mark_committed` / :func:`finish_attempt` keep
``table_task_run``: one row per attempt, at most one ``committed`` per run (a partial unique
index), so a message delivered again commits at most once; :func:`give_up_if_abandoned` ends a
run whose attempts keep dying with their process. :class:`RunRow` is an attempt as
``allot work runs`` shows it (:func:`allot.work.client.list_runs`). :func:`prune_runs` deletes
old attempts in bounded batches (:mod:`allot.history` decides how old and runs the batches).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.base import utcnow
from models.schema import TableTaskRun
from models.states import RunStatus

ERROR_LENGTH = 2000
ABANDONED = "abandoned: "
"""How the error of an attempt found ``running`` by a later attempt of its run begins."""


def committed_attempt(session: Session, run_id: str) -> int | None:
    """The attempt of run ``run_id`` that committed, or None."""
    return session.execute(
        select(TableTaskRun.attempt_id).where(
            TableTaskRun.run_id == run_id, TableTaskRun.status == RunStatus.COMMITTED
        )
    ).scalar_one_or_none()


@dataclass(frozen=True)
class Attempt:
    """Who runs this attempt of a run, and under which fence token of which ZooKeeper
    generation (0: a fence written before generations existed)."""

    run_id: str
    task_name: str
    table_id: int
    bucket_id: int
    node_key: str
    token: int
    generation: int = 0


def start_attempt(session: Session, attempt: Attempt) -> int | None:
    """Record a new ``running`` attempt and return its id; None when the run already committed
    (a message delivered again: nothing to do).

    Earlier attempts of the run still marked ``running`` were abandoned (their worker died or
    their message came back): they become ``failed``, saying so.
    """
    if committed_attempt(session, attempt.run_id) is not None:
        return None
    now = utcnow()
    session.execute(
        update(TableTaskRun)
        .where(TableTaskRun.run_id == attempt.run_id, TableTaskRun.status == RunStatus.RUNNING)
        .values(
            status=RunStatus.FAILED,
            error=f"{ABANDONED}the run started again on {attempt.node_key}",
        )
    )
    return session.execute(
        insert(TableTaskRun)
        .values(
            run_id=attempt.run_id,
            task_name=attempt.task_name,
            table_id=attempt.table_id,
            bucket_id=attempt.bucket_id,
            node_key=attempt.node_key,
            token=attempt.token,
            status=RunStatus.RUNNING,
            started_at=now,
        )
        .returning(TableTaskRun.attempt_id)
    ).scalar_one()


def give_up_if_abandoned(session: Session, run_id: str, attempt_id: int, limit: int) -> int | None:
    """End attempt ``attempt_id`` ``failed`` before it runs when ``limit`` earlier attempts of
    its run were abandoned (their process died running the body: a message that kills its
    worker, delivered again and again); returns how many, or None when it may run."""
    abandoned = session.execute(
        select(func.count()).where(
            TableTaskRun.run_id == run_id,
            TableTaskRun.status == RunStatus.FAILED,
            TableTaskRun.error.startswith(ABANDONED, autoescape=True),
        )
    ).scalar_one()
    if abandoned < limit:
        return None
    finish_attempt(
        session,
        attempt_id,
        RunStatus.FAILED,
        error=f"abandoned {abandoned} times (ALLOT_MAX_ABANDONED={limit}): not run again",
    )
    return int(abandoned)


class AlreadyCommitted(Exception):
    """Another attempt of the same run committed first; this attempt's writes were rolled
    back (internal: the task ends quietly)."""


def mark_committed(session: Session, attempt_id: int) -> None:
    """Mark the attempt ``committed`` inside the transaction of the task's writes.

    Raises:
        AlreadyCommitted: another attempt of the run committed first (the unique index refused
            a second committed row); the caller rolls the transaction back.
    """
    try:
        session.execute(
            update(TableTaskRun)
            .where(TableTaskRun.attempt_id == attempt_id)
            .values(status=RunStatus.COMMITTED, finished_at=utcnow(), error=None)
        )
    except IntegrityError:
        raise AlreadyCommitted from None


def finish_attempt(
    session: Session,
    attempt_id: int,
    status: RunStatus,
    *,
    error: str | None = None,
    result: str | None = None,
) -> RunStatus:
    """Record how the attempt ended and return the status it has now.

    A committed attempt keeps ``committed`` whatever ``status`` says (only its result is
    added): a run whose commit landed on the server while its connection dropped before the
    reply (a pooler restart, a reset, a killed backend) ends in an error, as if it failed, and
    is retried; that end must not hide its commit, or the retry would find no committed
    attempt and run the body again. The guard is in the ``UPDATE`` itself, so it also holds
    when the commit is still in flight on the server: the update waits for its row lock and
    then finds it committed.
    """
    if status == RunStatus.COMMITTED:
        session.execute(
            update(TableTaskRun).where(TableTaskRun.attempt_id == attempt_id).values(result=result)
        )
        return status
    ended = session.execute(
        update(TableTaskRun)
        .where(TableTaskRun.attempt_id == attempt_id, TableTaskRun.status != RunStatus.COMMITTED)
        .values(
            status=status,
            finished_at=utcnow(),
            error=(error or "")[:ERROR_LENGTH],
            result=result,
        )
    )
    return status if ended.rowcount == 1 else RunStatus.COMMITTED  # type: ignore[attr-defined]


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
    ``older_than`` and no longer ``running`` (a running attempt's row is what its commit marks
    and its end updates, so it stays until the attempt ends or a later attempt of its run marks
    it ``failed``)."""
    return (TableTaskRun.started_at < older_than) & (TableTaskRun.status != RunStatus.RUNNING)


def prune_runs(session: Session, older_than: dt.datetime, limit: int) -> int:
    """Delete at most ``limit`` attempts started before ``older_than`` that are not
    ``running``, oldest first, and return how many went; the caller commits.

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

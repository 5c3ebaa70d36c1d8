"""The SQL side of table work: the per-bucket fence and the run history.

Pure SQL on a caller's :class:`~sqlalchemy.orm.Session`; no ZooKeeper, no Celery. The callers
(:mod:`allot.work.leases` in a worker's main process, :mod:`allot.work.task` in its pool
processes) own the transactions.

- :func:`take_fence` is how a node that has just taken a bucket's lease in ZooKeeper says so
  in SQL: it writes its key and lease token into the bucket's ``bucket_lease`` row, only ever
  raising the token. A holder with a smaller token is from then on refused by
  :func:`hold_fence`.
- :func:`hold_fence` is the first statement of every commit of a table task: an ``UPDATE``
  that matches only while the row names the task's node and token. It locks the row (a row
  lock on PostgreSQL, the database's write lock on SQLite) until the transaction ends, so a
  receiver's :func:`take_fence` waits for a commit that passed the check, and a commit that
  comes after it is refused. Check and commit are one transaction: there is no window between.
- :func:`start_attempt` / :func:`mark_committed` / :func:`finish_attempt` keep
  ``table_task_run``: one row per attempt, at most one ``committed`` per run (a partial unique
  index), so a message delivered again commits at most once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from allot.errors import Fenced
from models.base import utcnow
from models.schema import BucketLease, TableTaskRun
from models.states import RunStatus

ERROR_LENGTH = 2000

FENCE_LOCK_TIMEOUT_MS = 2000
"""How long a new holder's fence write waits on PostgreSQL for a commit holding the row before
it gives up for this pass (a frozen commit is ended by the server after the handoff timeout)."""


@dataclass(frozen=True)
class FenceRow:
    """What a bucket's ``bucket_lease`` row says: who may commit, with which token."""

    bucket_id: int
    node_key: str
    token: int


def read_fence(session: Session, bucket_id: int, *, for_write: bool = False) -> FenceRow | None:
    """The bucket's fence, or None when no node ever took its lease.

    ``for_write``: the transaction writes next; lock the row first (a write statement that
    changes nothing), so that on SQLite the transaction holds the write lock from its first
    statement instead of failing to upgrade a read (``database is locked``).
    """
    if for_write:
        session.execute(
            update(BucketLease)
            .where(BucketLease.bucket_id == bucket_id)
            .values(token=BucketLease.token)
        )
    row = session.execute(
        select(BucketLease.node_key, BucketLease.token).where(BucketLease.bucket_id == bucket_id)
    ).first()
    return None if row is None else FenceRow(bucket_id, row.node_key, row.token)


def read_fences(session: Session, buckets: Iterable[int]) -> dict[int, FenceRow]:
    """The fences of ``buckets`` that exist, by bucket."""
    rows = session.execute(
        select(BucketLease.bucket_id, BucketLease.node_key, BucketLease.token).where(
            BucketLease.bucket_id.in_(list(buckets))
        )
    )
    return {row.bucket_id: FenceRow(row.bucket_id, row.node_key, row.token) for row in rows}


def take_fence(session: Session, bucket_id: int, node_key: str, token: int) -> bool:
    """Make the bucket's fence name ``node_key`` with ``token``, unless a larger token is
    already there (then this holder is stale: False, nothing written).

    Waits for a commit holding the row (:func:`hold_fence`) to finish. A first write races
    another node's first write only if two nodes hold the bucket's lease at once, which
    ZooKeeper prevents; the loser of such a race gets an ``IntegrityError`` from the insert.
    """
    if session.get_bind().dialect.name == "postgresql":
        # the lease loop must not hang on a row a stuck commit holds: fail, try next pass
        session.execute(text(f"SET LOCAL lock_timeout = '{FENCE_LOCK_TIMEOUT_MS}ms'"))
    now = utcnow()
    raised = session.execute(
        update(BucketLease)
        .where(BucketLease.bucket_id == bucket_id, BucketLease.token <= token)
        .values(node_key=node_key, token=token, taken_at=now)
    )
    if raised.rowcount == 1:  # type: ignore[attr-defined]
        return True
    if read_fence(session, bucket_id) is not None:
        return False  # a later holder wrote first: this one is stale
    session.execute(
        insert(BucketLease).values(
            bucket_id=bucket_id, node_key=node_key, token=token, taken_at=now
        )
    )
    return True


def hold_fence(session: Session, bucket_id: int, node_key: str, token: int) -> None:
    """Lock the bucket's fence row for this transaction if it still names ``node_key`` with
    ``token``.

    Raises:
        Fenced: the row names another node or token (or does not exist): the bucket's work
            moved; this transaction must write nothing.
    """
    held = session.execute(
        update(BucketLease)
        .where(
            BucketLease.bucket_id == bucket_id,
            BucketLease.node_key == node_key,
            BucketLease.token == token,
        )
        .values(node_key=BucketLease.node_key)
    )
    if held.rowcount != 1:  # type: ignore[attr-defined]
        now = read_fence(session, bucket_id)
        holder = "nobody" if now is None else f"{now.node_key} (token {now.token})"
        raise Fenced(
            f"bucket {bucket_id} is fenced for {node_key} (token {token}): "
            f"its work moved to {holder}"
        )


def committed_attempt(session: Session, run_id: str) -> int | None:
    """The attempt of run ``run_id`` that committed, or None."""
    return session.execute(
        select(TableTaskRun.attempt_id).where(
            TableTaskRun.run_id == run_id, TableTaskRun.status == RunStatus.COMMITTED
        )
    ).scalar_one_or_none()


@dataclass(frozen=True)
class Attempt:
    """Who runs this attempt of a run, and under which fence token."""

    run_id: str
    task_name: str
    table_id: int
    bucket_id: int
    node_key: str
    token: int


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
            error=f"abandoned: the run started again on {attempt.node_key}",
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

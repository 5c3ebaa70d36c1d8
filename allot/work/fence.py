"""The fence of table work: a bucket's ``bucket_lease`` row, who may commit for the bucket.

Pure SQL on a caller's :class:`~sqlalchemy.orm.Session`; no ZooKeeper, no Celery. The callers
(:mod:`allot.work.leases` in a worker's main process, :mod:`allot.work.context` and
:mod:`allot.work.run` in its pool processes) own the transactions.

- :func:`take_fence` is how a node that has just taken a bucket's lease in ZooKeeper says so
  in SQL: it writes its key, its ZooKeeper's generation and its lease token into the bucket's
  ``bucket_lease`` row, only ever raising the pair ``(generation, token)``. A holder with a
  smaller pair is from then on refused by :func:`hold_fence`.
- :func:`hold_fence` is the first statement of every commit of a table task: it matches only
  while the row names the task's node, generation and token, and locks the row until the
  transaction ends (a shared row lock on PostgreSQL, ``FOR SHARE``, so one bucket's commits run
  side by side; the database's write lock on SQLite), so a receiver's :func:`take_fence` waits
  for every commit that passed the check, and a commit that comes after it is refused. Check
  and commit are one transaction: there is no window between.
- :func:`read_fence` / :func:`read_fences` say what the row names now: whether a message
  reached its bucket's holder, and whether a holder's fence was changed by a foreign writer.

A token is a lease znode's ``czxid``, which only grows within one ZooKeeper; the generation
(:mod:`allot.generation`) tells ZooKeepers apart, so a ZooKeeper rebuilt from scratch,
whose tokens start small again, takes over with a larger generation instead of being refused.
Why this is enough is argued in ``docs/table-work.md`` (the fence, F; case 16).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, insert, or_, select, text, update
from sqlalchemy.orm import Session

from allot.errors import Fenced
from models.base import utcnow
from models.schema import BucketLease

FENCE_LOCK_TIMEOUT_MS = 2000
"""How long a new holder's fence write waits on PostgreSQL for a commit holding the row before
it gives up for this pass (a frozen commit is ended by the server after the handoff timeout)."""


@dataclass(frozen=True)
class FenceRow:
    """What a bucket's ``bucket_lease`` row says: who may commit, with which token of which
    ZooKeeper ``generation``."""

    bucket_id: int
    node_key: str
    token: int
    generation: int


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
        select(BucketLease.node_key, BucketLease.token, BucketLease.generation).where(
            BucketLease.bucket_id == bucket_id
        )
    ).first()
    return None if row is None else FenceRow(bucket_id, row.node_key, row.token, row.generation)


def read_fences(session: Session, buckets: Iterable[int]) -> dict[int, FenceRow]:
    """The fences of ``buckets`` that exist, by bucket."""
    rows = session.execute(
        select(
            BucketLease.bucket_id, BucketLease.node_key, BucketLease.token, BucketLease.generation
        ).where(BucketLease.bucket_id.in_(list(buckets)))
    )
    return {
        row.bucket_id: FenceRow(row.bucket_id, row.node_key, row.token, row.generation)
        for row in rows
    }


def take_fence(
    session: Session, bucket_id: int, node_key: str, token: int, *, generation: int = 0
) -> bool:
    """Make the bucket's fence name ``node_key`` with ``(generation, token)``, unless a larger
    pair is already there (then this holder is stale: False, nothing written). Pairs compare
    generation first: a ZooKeeper rebuilt from scratch has a larger generation and smaller
    tokens; within one generation, the larger token is the later lease. Generation 0 is that
    of fences written before generations existed (the migration's default): every holder
    that read its ZooKeeper's generation (1 or more) takes over from it.

    Waits for a commit holding the row (:func:`hold_fence`) to finish. A first write races
    another node's first write only if two nodes hold the bucket's lease at once, which
    ZooKeeper prevents; the loser of such a race gets an ``IntegrityError`` from the insert.
    """
    if session.get_bind().dialect.name == "postgresql":
        # the lease loop must not hang on a row a stuck commit holds: fail, try next pass
        session.execute(text(f"SET LOCAL lock_timeout = '{FENCE_LOCK_TIMEOUT_MS}ms'"))
    now = utcnow()
    not_later = or_(
        BucketLease.generation < generation,
        and_(BucketLease.generation == generation, BucketLease.token <= token),
    )
    raised = session.execute(
        update(BucketLease)
        .where(BucketLease.bucket_id == bucket_id, not_later)
        .values(node_key=node_key, token=token, generation=generation, taken_at=now)
    )
    if raised.rowcount == 1:  # type: ignore[attr-defined]
        return True
    if read_fence(session, bucket_id) is not None:
        return False  # a later holder wrote first: this one is stale
    session.execute(
        insert(BucketLease).values(
            bucket_id=bucket_id, node_key=node_key, token=token, generation=generation, taken_at=now
        )
    )
    return True


_MINE = (
    BucketLease.bucket_id == bindparam("held_bucket"),
    BucketLease.node_key == bindparam("held_node"),
    BucketLease.token == bindparam("held_token"),
    BucketLease.generation == bindparam("held_generation"),
)
_SHARE_FENCE = select(BucketLease.bucket_id).where(*_MINE).with_for_update(read=True)
_LOCK_FENCE = (
    update(BucketLease)
    .where(*_MINE)
    .values(node_key=BucketLease.node_key)
    .execution_options(synchronize_session=False)
)
""":func:`hold_fence`'s statements, built once (it runs in every commit)."""


def hold_fence(
    session: Session, bucket_id: int, node_key: str, token: int, *, generation: int
) -> None:
    """Lock the bucket's fence row for this transaction if it still names ``node_key`` with
    ``token`` of ``generation``.

    On PostgreSQL a ``SELECT ... FOR SHARE``: the commits of one bucket share the lock and run
    side by side, and a new holder's :func:`take_fence` (an ``UPDATE``: an exclusive row lock)
    waits for every commit that passed the check; a check that waited for a fence write sees
    the row it wrote. On SQLite an ``UPDATE`` that changes nothing: it takes the database's
    write lock from the transaction's first statement (writers take turns anyway), rather than
    fail to upgrade a read lock later (``database is locked``).

    Raises:
        Fenced: the row names another node, token or generation (or does not exist): the
            bucket's work moved; this transaction must write nothing.
    """
    mine = {
        "held_bucket": bucket_id,
        "held_node": node_key,
        "held_token": token,
        "held_generation": generation,
    }
    if session.get_bind().dialect.name == "postgresql":
        held = session.execute(_SHARE_FENCE, mine).first() is not None
    else:
        changed = session.execute(_LOCK_FENCE, mine)
        held = changed.rowcount == 1  # type: ignore[attr-defined]
    if not held:
        now = read_fence(session, bucket_id)
        holder = (
            "nobody"
            if now is None
            else f"{now.node_key} (generation {now.generation}, token {now.token})"
        )
        raise Fenced(
            f"bucket {bucket_id} is fenced for {node_key} (generation {generation}, token "
            f"{token}): its work moved to {holder}"
        )

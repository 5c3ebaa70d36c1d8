"""The SQL mirror of the live assignment: ``bucket`` owners and ``node`` states.

ZooKeeper holds the truth; these functions make SQL say the same thing, idempotently, so a
cycle that crashed between the ZooKeeper transaction and the SQL mirror is finished by the next
one simply by mirroring again. They take a :class:`~sqlalchemy.orm.Session` and leave the
commit to the caller.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from models.base import utcnow
from models.schema import Bucket, MirrorState, Node
from models.states import NodeState

T = TypeVar("T")


@dataclass(frozen=True)
class NodeObservation:
    """A node as one assignment cycle saw it."""

    key: str
    state: NodeState
    weight: float = 1.0
    host: str | None = None


FENCE = "assignment"


SQL_UNAVAILABLE = (OperationalError, InterfaceError)
"""What SQLAlchemy raises when the database cannot be reached (or is locked past the busy
timeout): the cycle goes on without SQL and the mirror catches up later."""


def mirrored_epoch(session: Session) -> int:
    """The highest assignment epoch SQL has mirrored (0 when none)."""
    row = session.get(MirrorState, FENCE)
    return 0 if row is None else row.epoch


def owners(session: Session) -> dict[int, str | None]:
    """Every bucket's owner as SQL last recorded it."""
    return dict(session.execute(select(Bucket.bucket_id, Bucket.node_key)).all())


def mirror_assignment(
    session: Session, assignments: Mapping[str, Iterable[int]], epoch: int
) -> int:
    """Make ``bucket.node_key`` match ``assignments``; return how many buckets changed owner.

    A bucket whose owner changes takes ``epoch`` (the assignment epoch that moved it), so the
    per-bucket epoch increases exactly when its owner changes. Buckets absent from
    ``assignments`` become unowned. Repeating the call changes nothing.
    """
    target = {bucket: node for node, buckets in assignments.items() for bucket in buckets}
    now = utcnow()
    changes = [
        {"bucket_id": bucket, "node_key": target.get(bucket), "epoch": epoch, "updated_at": now}
        for bucket, current in owners(session).items()
        if target.get(bucket) != current
    ]
    if changes:
        session.execute(update(Bucket), changes)
    return len(changes)


def departed_since(session: Session) -> dict[str, dt.datetime]:
    """When each node that is not live was first seen gone (the start of its grace period)."""
    rows = session.execute(
        select(Node.node_key, Node.departed_at).where(
            Node.state != NodeState.LIVE, Node.departed_at.is_not(None)
        )
    )
    return {key: _aware(departed) for key, departed in rows if departed is not None}


def present_nodes(session: Session) -> set[str]:
    """Nodes SQL last saw live or suspect (a clean stop leaves no trace elsewhere)."""
    query = select(Node.node_key).where(Node.state != NodeState.OFFLINE)
    return set(session.execute(query).scalars())


def record_nodes(
    session: Session, observations: Iterable[NodeObservation], now: dt.datetime | None = None
) -> None:
    """Upsert the ``node`` rows from one cycle's observations.

    A live node gets ``last_seen = now`` and loses ``departed_at``; a node seen gone for the
    first time gets ``departed_at = now``, which later cycles keep (the grace period is measured
    from it). Nodes not observed are left as they are.
    """
    now = now or utcnow()
    observed = {observation.key: observation for observation in observations}
    if not observed:
        return
    rows = {
        row.node_key: row
        for row in session.execute(select(Node).where(Node.node_key.in_(observed))).scalars()
    }
    for key, observation in observed.items():
        row = rows.get(key)
        if row is None:
            row = Node(node_key=key, first_seen=now, last_seen=now, departed_at=None)
            session.add(row)
        row.state = observation.state
        if observation.state == NodeState.LIVE:
            row.weight = observation.weight
            row.host = observation.host or row.host
            row.last_seen = now
            row.departed_at = None
        elif row.departed_at is None:
            row.departed_at = now
    session.flush()


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite returns naive datetimes for timezone-aware columns; they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)

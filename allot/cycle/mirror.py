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

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from models.base import utcnow
from models.schema import Bucket, MirrorState, Node
from models.schema import Plan as PlanRow
from models.states import NodeState, PlanStatus

T = TypeVar("T")


@dataclass(frozen=True)
class NodeObservation:
    """A node as one assignment cycle saw it."""

    key: str
    state: NodeState
    weight: float = 1.0
    host: str | None = None


@dataclass(frozen=True)
class RecordedNode:
    """A ``node`` row as SQL holds it (what :func:`recorded_nodes` reads)."""

    state: NodeState
    weight: float
    host: str | None


FENCE = "assignment"


SQL_UNAVAILABLE = (OperationalError, InterfaceError)
"""What SQLAlchemy raises when the database cannot be reached (or is locked past the busy
timeout): the cycle goes on without SQL and the mirror catches up later."""


def mirrored_epoch(session: Session) -> int:
    """The highest assignment epoch SQL has mirrored (0 when none)."""
    row = session.get(MirrorState, FENCE)
    return 0 if row is None else row.epoch


def applied_epoch(session: Session, plan_id: str | None) -> int | None:
    """The epoch SQL records plan ``plan_id`` applied at (None: no such applied plan)."""
    if plan_id is None:
        return None
    query = select(PlanRow.epoch).where(
        PlanRow.plan_id == plan_id, PlanRow.status == PlanStatus.APPLIED
    )
    return session.execute(query).scalar_one_or_none()


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
    changes = [
        {"b_id": bucket, "b_node": target.get(bucket)}
        for bucket, current in owners(session).items()
        if target.get(bucket) != current
    ]
    if changes:  # one executemany of a plain UPDATE (no ORM bookkeeping per row)
        table = Bucket.__table__
        assert isinstance(table, Table)
        statement = (
            update(table)
            .where(table.c.bucket_id == bindparam("b_id"))
            .values(node_key=bindparam("b_node"), epoch=epoch, updated_at=utcnow())
        )
        session.connection().execute(statement, changes)
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
    return set(recorded_nodes(session))


def recorded_nodes(session: Session) -> dict[str, RecordedNode]:
    """The nodes SQL last saw live or suspect, with their state, weight and host: what a cycle
    compares its observation with to tell whether ``node`` needs a write at all."""
    query = select(Node.node_key, Node.state, Node.weight, Node.host).where(
        Node.state != NodeState.OFFLINE
    )
    return {
        key: RecordedNode(NodeState(state), weight, host)
        for key, state, weight, host in session.execute(query)
    }


def node_rows_match(
    recorded: Mapping[str, RecordedNode], observations: Iterable[NodeObservation]
) -> bool:
    """True when ``record_nodes(observations)`` would change no state, weight or host: every
    live or suspect node observed is recorded so (a live one with its weight and host), and
    SQL records no other node present. ``last_seen`` is refreshed only by a write."""
    wanted: dict[str, RecordedNode] = {}
    for seen in observations:
        if seen.state == NodeState.OFFLINE:
            if seen.key in recorded:
                return False
            continue
        wanted[seen.key] = RecordedNode(seen.state, seen.weight, seen.host)
    if wanted.keys() != recorded.keys():
        return False
    for key, want in wanted.items():
        have = recorded[key]
        if have.state != want.state:
            return False
        if want.state == NodeState.LIVE and (
            have.weight != want.weight or (want.host and have.host != want.host)
        ):
            return False
    return True


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
    table = Node.__table__
    assert isinstance(table, Table)
    found = session.execute(
        select(Node.node_key, Node.host, Node.departed_at).where(Node.node_key.in_(observed))
    )
    rows = {key: (host, departed) for key, host, departed in found}
    inserts: list[dict[str, object]] = []
    updates: list[dict[str, object]] = []
    for key, seen in observed.items():
        live = seen.state == NodeState.LIVE
        if key not in rows:
            inserts.append(
                {
                    "node_key": key,
                    "state": seen.state,
                    "weight": seen.weight if live else 1.0,
                    "host": seen.host if live else None,
                    "first_seen": now,
                    "last_seen": now,
                    "departed_at": None if live else now,
                }
            )
            continue
        host, departed = rows[key]
        updates.append(
            {
                "n_key": key,
                "n_state": seen.state,
                "n_weight": seen.weight if live else None,
                "n_host": (seen.host or host) if live else host,
                "n_seen": now if live else None,
                "n_departed": None if live else (departed or now),
            }
        )
    # plain statements, one executemany each: no ORM object per node (1,000 nodes join at once)
    connection = session.connection()
    columns = table.c
    if inserts:
        connection.execute(insert(table), inserts)
    if updates:
        connection.execute(
            update(table)
            .where(table.c.node_key == bindparam("n_key"))
            .values(
                state=bindparam("n_state"),
                weight=func.coalesce(
                    bindparam("n_weight", type_=columns.weight.type), columns.weight
                ),
                host=bindparam("n_host"),
                last_seen=func.coalesce(
                    bindparam("n_seen", type_=columns.last_seen.type), columns.last_seen
                ),
                departed_at=bindparam("n_departed", type_=columns.departed_at.type),
            ),
            updates,
        )


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite returns naive datetimes for timezone-aware columns; they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)

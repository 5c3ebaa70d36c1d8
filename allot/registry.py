"""The table registry: every table gets a bucket once, for good.

A new table goes to the bucket with the fewest tables, ties to the lowest bucket id (Amoro's
rule). Registering a table that exists is a no-op that returns its bucket. Registrations are
serialized by a registry lock held for the rest of the caller's transaction (a PostgreSQL
advisory lock; SQLite's write lock), so concurrent registrations from many processes never pick a
bucket from a stale count and never lose a count.

Functions take a :class:`~sqlalchemy.orm.Session` and leave the commit to the caller, except
:func:`register_in_batches`, which commits one transaction per batch so a bulk load of millions
of names never holds the lock for long.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Integer,
    Row,
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.selectable import TableValuedAlias

from allot.errors import NotFound
from allot.names import TableName
from models.base import utcnow
from models.schema import Bucket, TableIdentifier
from models.views import table_assignment

# Key of the PostgreSQL advisory lock that serializes registrations ("allot" in ASCII).
REGISTRY_LOCK_KEY = 0x616C6C6F74
# Names per existence query (three bind parameters each; SQLite allows 32,766 per statement).
LOOKUP_CHUNK = 2_000
DEFAULT_BATCH_SIZE = 10_000


@dataclass(frozen=True)
class Registration:
    """The outcome of registering one table."""

    name: TableName
    bucket_id: int
    created: bool


def lock_registry(session: Session) -> None:
    """Hold the registry lock until the session's transaction ends.

    On PostgreSQL this is a transaction-scoped advisory lock. On SQLite it takes the database
    write lock now (a write statement that changes nothing), so the counts read next cannot go
    stale before this transaction writes.
    """
    if _is_postgresql(session):
        session.execute(select(func.pg_advisory_xact_lock(REGISTRY_LOCK_KEY)))
    else:
        session.execute(
            update(Bucket).where(Bucket.bucket_id == 0).values(table_count=Bucket.table_count)
        )


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _unnest_names(names: Iterable[TableName], buckets: list[int] | None = None) -> TableValuedAlias:
    """A PostgreSQL ``unnest`` of the names (columns ``c``, ``d``, ``t``; ``b`` for buckets),
    passed as one array parameter per column so any number of rows costs one statement."""
    names = list(names)
    text_array = postgresql.ARRAY(String)
    arrays: list[BindParameter[Any]] = [
        bindparam("catalogs", [n.catalog for n in names], type_=text_array),
        bindparam("databases", [n.database for n in names], type_=text_array),
        bindparam("tables", [n.table for n in names], type_=text_array),
    ]
    columns = ["c", "d", "t"]
    if buckets is not None:
        arrays.append(bindparam("buckets", buckets, type_=postgresql.ARRAY(Integer)))
        columns.append("b")
    return func.unnest(*arrays).table_valued(*columns).render_derived()


def _existing_buckets(session: Session, names: Sequence[TableName]) -> dict[TableName, int]:
    """The buckets of those ``names`` already registered.

    PostgreSQL joins the unique index against the ``unnest``-ed names in one statement; SQLite
    matches row values in chunks of :data:`LOOKUP_CHUNK` names.
    """
    columns = (TableIdentifier.catalog_name, TableIdentifier.db_name, TableIdentifier.table_name)
    if _is_postgresql(session):
        wanted = _unnest_names(names)
        queries = [
            select(*columns, TableIdentifier.bucket_id).join(
                wanted,
                and_(
                    TableIdentifier.catalog_name == wanted.c.c,
                    TableIdentifier.db_name == wanted.c.d,
                    TableIdentifier.table_name == wanted.c.t,
                ),
            )
        ]
    else:
        queries = [
            select(*columns, TableIdentifier.bucket_id).where(
                tuple_(*columns).in_([tuple(name) for name in names[start : start + LOOKUP_CHUNK]])
            )
            for start in range(0, len(names), LOOKUP_CHUNK)
        ]
    found: dict[TableName, int] = {}
    for query in queries:
        for catalog, database, table, bucket_id in session.execute(query):
            found[TableName(catalog, database, table)] = bucket_id
    return found


def _insert_tables(session: Session, assigned: dict[TableName, int], now: dt.datetime) -> None:
    """Insert the new rows: one ``INSERT ... SELECT FROM unnest(...)`` on PostgreSQL, a
    driver-level ``executemany`` on SQLite."""
    table = TableIdentifier.__table__
    assert isinstance(table, Table)
    if _is_postgresql(session):
        rows = _unnest_names(assigned, list(assigned.values()))
        session.execute(
            table.insert().from_select(
                ["catalog_name", "db_name", "table_name", "bucket_id", "created_at"],
                select(rows.c.c, rows.c.d, rows.c.t, rows.c.b, bindparam("now", now)),
            )
        )
        return
    session.execute(
        table.insert(),
        [
            {
                "catalog_name": name.catalog,
                "db_name": name.database,
                "table_name": name.table,
                "bucket_id": bucket_id,
                "created_at": now,
            }
            for name, bucket_id in assigned.items()
        ],
    )


def register_tables(session: Session, names: Iterable[TableName]) -> list[Registration]:
    """Register ``names`` in the session's transaction and return one result per distinct name.

    Each new table takes the bucket with the fewest tables at that moment (ties to the lowest id),
    exactly as if the names were registered one by one in order. Names already registered, or
    repeated in ``names``, keep their bucket and are reported with ``created=False``.

    Raises:
        NotFound: the database has no buckets (``allot db upgrade`` creates them). A missing
            schema raises the driver's error, which the caller's
            :func:`allot.database.database_errors` turns into ``DatabaseNotReady``.
    """
    unique = list(dict.fromkeys(names))
    if not unique:
        return []
    lock_registry(session)
    existing = _existing_buckets(session, unique)
    new = [name for name in unique if name not in existing]
    assigned: dict[TableName, int] = {}
    if new:
        counts = session.execute(select(Bucket.bucket_id, Bucket.table_count)).all()
        if not counts:
            raise NotFound("the database has no buckets: run `allot db upgrade`")
        heap = [(count, bucket_id) for bucket_id, count in counts]
        heapq.heapify(heap)
        for name in new:
            count, bucket_id = heap[0]
            heapq.heapreplace(heap, (count + 1, bucket_id))
            assigned[name] = bucket_id
        now = utcnow()
        _insert_tables(session, assigned, now)
        before = dict(counts)
        session.execute(
            update(Bucket),
            [
                {"bucket_id": bucket_id, "table_count": count, "updated_at": now}
                for count, bucket_id in heap
                if before[bucket_id] != count
            ],
        )
    return [
        Registration(name, existing[name], False)
        if name in existing
        else Registration(name, assigned[name], True)
        for name in unique
    ]


def register_in_batches(
    sessions: sessionmaker[Session],
    names: Sequence[TableName],
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[int], None] | None = None,
) -> list[Registration]:
    """Register many names, committing one transaction per batch of ``batch_size`` names.

    A failure leaves the batches before it committed; running the same call again finishes the
    job (registration is idempotent). ``on_progress`` is called with the number of names done
    after each batch.
    """
    results: list[Registration] = []
    for start in range(0, len(names), batch_size):
        with sessions.begin() as session:
            results.extend(register_tables(session, names[start : start + batch_size]))
        if on_progress is not None:
            on_progress(min(start + batch_size, len(names)))
    return results


def drop_table(session: Session, name: TableName) -> int:
    """Remove a table from the registry and return the bucket it was in.

    Raises:
        NotFound: the table is not registered.
    """
    lock_registry(session)
    bucket_id = session.execute(
        delete(TableIdentifier)
        .where(
            TableIdentifier.catalog_name == name.catalog,
            TableIdentifier.db_name == name.database,
            TableIdentifier.table_name == name.table,
        )
        .returning(TableIdentifier.bucket_id)
    ).scalar_one_or_none()
    if bucket_id is None:
        raise NotFound(f"table {name} is not registered")
    session.execute(
        update(Bucket)
        .where(Bucket.bucket_id == bucket_id)
        .values(table_count=Bucket.table_count - 1, updated_at=utcnow())
    )
    return bucket_id


def list_tables(
    session: Session, limit: int | None = None, bucket_id: int | None = None
) -> list[Row[int, str, str, str, int]]:
    """Registered tables ordered by name: ``(table_id, catalog, db, table, bucket_id)`` rows."""
    query = select(
        TableIdentifier.table_id,
        TableIdentifier.catalog_name,
        TableIdentifier.db_name,
        TableIdentifier.table_name,
        TableIdentifier.bucket_id,
    ).order_by(TableIdentifier.catalog_name, TableIdentifier.db_name, TableIdentifier.table_name)
    if bucket_id is not None:
        query = query.where(TableIdentifier.bucket_id == bucket_id)
    if limit is not None:
        query = query.limit(limit)
    return list(session.execute(query).all())


def count_tables(session: Session) -> int:
    """The number of registered tables (the sum of the buckets' counts)."""
    return int(session.execute(select(func.coalesce(func.sum(Bucket.table_count), 0))).scalar_one())


def mapping(
    session: Session,
    table: TableName | None = None,
    node_key: str | None = None,
    limit: int | None = None,
) -> list[Row[str, str, str, int, str | None, int]]:
    """Rows of ``table_assignment``: ``(catalog, db, table, bucket_id, node_key, epoch)``.

    Filter by one table and/or by the owning node; ordered by name.
    """
    view = table_assignment.c
    query = select(
        view.catalog_name, view.db_name, view.table_name, view.bucket_id, view.node_key, view.epoch
    ).order_by(view.catalog_name, view.db_name, view.table_name)
    if table is not None:
        query = query.where(
            view.catalog_name == table.catalog,
            view.db_name == table.database,
            view.table_name == table.table,
        )
    if node_key is not None:
        query = query.where(view.node_key == node_key)
    if limit is not None:
        query = query.limit(limit)
    return list(session.execute(query).all())

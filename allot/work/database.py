"""The database of one process, for routing table tasks and for running them.

:func:`work_sql` gives this process's :class:`WorkSql` (opened on first use and again after a
fork): its engine and sessions, and the lookup of a registered table's id and bucket, cached
(a table's bucket is given for good). The router (:mod:`allot.work.routing`), a
run (:mod:`allot.work.run`) and the periodic tick (:mod:`allot.work.periodic`) share it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from allot.database import open_engine
from allot.errors import NotFound
from allot.names import TableName
from allot.settings import Settings, get_settings
from models.engine import session_factory
from models.schema import TableIdentifier


@dataclass
class WorkSql:
    """The database of one process, for routing and for running table tasks."""

    pid: int
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    tables: dict[TableName, tuple[int, int]] = field(default_factory=dict)

    def find_table(self, name: TableName) -> tuple[int, int]:
        """``(table_id, bucket_id)`` of a registered table (cached: a table's bucket is given
        for good).

        Raises:
            NotFound: the table is not registered.
        """
        found = self.tables.get(name)
        if found is None:
            with self.sessions() as session:
                row = session.execute(
                    select(TableIdentifier.table_id, TableIdentifier.bucket_id).where(
                        TableIdentifier.catalog_name == name.catalog,
                        TableIdentifier.db_name == name.database,
                        TableIdentifier.table_name == name.table,
                    )
                ).first()
            if row is None:
                raise NotFound(f"table {name} is not registered (allot tables register {name})")
            found = self.tables[name] = (row.table_id, row.bucket_id)
        return found


_sql: WorkSql | None = None


def work_sql() -> WorkSql:
    """This process's :class:`WorkSql`, created on first use and again after a fork.

    On PostgreSQL a transaction left idle longer than ``ALLOT_HANDOFF_TIMEOUT`` (a frozen
    process holding a bucket's fence row) is ended by the server, so it never holds up the
    bucket's next owner for longer than that; a body that computes inside ``commit()`` for
    longer fails (not retried). A connection the server does not answer fails after
    ``ALLOT_SQL_CONNECT_TIMEOUT``, so an unreachable database does not hold a pool process.
    """
    global _sql
    if _sql is None or _sql.pid != os.getpid():
        _sql = open_work_sql(get_settings())
    return _sql


def open_work_sql(settings: Settings) -> WorkSql:
    """A :class:`WorkSql` on ``settings``' database (see :func:`work_sql`)."""
    options: dict[str, Any] = {}
    url = make_url(settings.database_url)
    if url.get_backend_name() == "postgresql":
        idle_ms = max(int(settings.handoff_timeout * 1000), 1000)
        connect: dict[str, Any] = {"options": f"-c idle_in_transaction_session_timeout={idle_ms}"}
        if "connect_timeout" not in url.query:  # the URL's own wins
            connect["connect_timeout"] = settings.sql_connect_timeout
        options["connect_args"] = connect
    engine = open_engine(settings.database_url, **options)
    return WorkSql(os.getpid(), settings, engine, session_factory(engine))

"""Engines and sessions for SQLite and PostgreSQL.

``make_engine(url)`` is the one way allot opens a database. It

* maps ``postgresql://`` to the psycopg 3 driver allot ships with;
* creates the directory of a SQLite file (``sqlite:///var/allot.db`` makes ``var/``);
* puts SQLite in WAL mode with a 30 s busy timeout and foreign keys on, and lets SQLAlchemy,
  not the sqlite3 module, emit ``BEGIN``, so a transaction starts where the code says it does.

Engines hold connection pools: create them in the process that uses them (after a fork, never
before).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


class UnsupportedDatabaseUrl(ValueError):
    """The URL cannot be parsed or names a database allot does not support. (The SQL layer
    depends on nothing above it: :func:`allot.database.open_engine` turns this into allot's
    ``ConfigurationError``, same message.)"""


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and pick allot's driver for PostgreSQL (psycopg 3).

    Raises:
        UnsupportedDatabaseUrl: the URL cannot be parsed or names a database allot does not
            support.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UnsupportedDatabaseUrl(f"invalid database URL {str(url)!r}: {exc}") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise UnsupportedDatabaseUrl(
            f"unsupported database {backend!r} in ALLOT_DATABASE_URL: use sqlite or postgresql"
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _prepare_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (the sqlite3 module's implicit transactions start late
        # and break SELECT-then-write atomicity).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` (SQLite or PostgreSQL) configured as described above.

    Raises:
        UnsupportedDatabaseUrl: the URL is invalid or names an unsupported database.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, **kwargs)
        _prepare_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine``; objects stay usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)

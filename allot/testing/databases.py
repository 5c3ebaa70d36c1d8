"""Fresh databases for tests and benchmarks: a migrated SQLite file, or a PostgreSQL database
of their own on a shared server (``ALLOT_TEST_POSTGRES_URL``)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, text

from allot.database import upgrade
from models.engine import make_engine

# the maintenance database of the PostgreSQL server that tests and benchmarks create theirs on
POSTGRES_ADMIN_URL = os.environ.get(
    "ALLOT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def migrate(database_url: str, bucket_count: int = 100) -> str:
    """Upgrade the database at ``database_url`` to the newest schema with ``bucket_count``
    buckets; return the URL."""
    engine = make_engine(database_url)
    try:
        upgrade(engine, bucket_count=bucket_count)
    finally:
        engine.dispose()
    return database_url


def migrated_sqlite(directory: Path, bucket_count: int = 100) -> str:
    """The URL of a new SQLite database ``directory/allot.db``, upgraded to the newest schema
    with ``bucket_count`` buckets."""
    return migrate(f"sqlite:///{directory / 'allot.db'}", bucket_count)


@contextlib.contextmanager
def postgres_database(admin: Engine, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database named ``<prefix><random hex>``; its URL.

    ``admin`` is an AUTOCOMMIT engine on the server's maintenance database. The database is
    dropped when the block ends, even while connections to it are still open.
    """
    name = f"{prefix}{uuid.uuid4().hex[:16]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

"""Schema management: ``allot db upgrade``, the bucket rows, and schema checks.

The schema changes only through the Alembic migrations in ``migrations/``. :func:`upgrade` runs
them and creates the ``bucket`` rows ``1..bucket_count`` in one transaction, after refusing a
bucket count that differs from the one the database was created with.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, func, insert, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import NoSuchTableError, OperationalError, ProgrammingError

from allot.errors import (
    BucketCountMismatch,
    ConfigurationError,
    DatabaseNotReady,
    DatabaseUnavailable,
)
from models.base import utcnow
from models.engine import UnsupportedDatabaseUrl, make_engine
from models.schema import SCHEMA_REVISION, Bucket

if TYPE_CHECKING:
    from alembic.config import Config


def _migrations_dir() -> Path:
    """The folder of the ``migrations`` package, found without importing it: its ``env.py``
    imports :mod:`allot.settings`, so importing it from here would make the packages import
    each other."""
    spec = importlib.util.find_spec("migrations")
    if spec is None or spec.origin is None:
        raise ImportError("the migrations package is not installed beside allot")
    return Path(spec.origin).parent


MIGRATIONS_DIR = _migrations_dir()


def open_engine(url: str, **kwargs: Any) -> Engine:
    """:func:`models.engine.make_engine` with allot's error: where allot opens the configured
    database (the CLI, a worker's runtime and start-up check).

    Raises:
        ConfigurationError: ``url`` is invalid or names a database allot does not support (the
            SQL layer's :class:`~models.engine.UnsupportedDatabaseUrl`, same message).
    """
    try:
        return make_engine(url, **kwargs)
    except UnsupportedDatabaseUrl as exc:
        raise ConfigurationError(str(exc)) from None


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for allot's migrations, optionally bound to ``connection``.

    Alembic is imported here, not at module level: only schema changes need it, and every other
    command starts faster without it.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration revision this version of allot knows.

    This is :data:`models.schema.SCHEMA_REVISION`; a test checks it against Alembic's head.
    """
    return SCHEMA_REVISION


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None for an empty database."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


@contextlib.contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn driver errors into allot errors a user can act on.

    A database that cannot be reached raises :class:`DatabaseUnavailable`; a missing table
    raises :class:`DatabaseNotReady` (the schema was never created: run ``allot db upgrade``).
    """
    try:
        yield
    except (OperationalError, ProgrammingError, NoSuchTableError) as exc:
        text = str(exc.orig if hasattr(exc, "orig") and exc.orig is not None else exc)
        lowered = text.lower()
        if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
            raise DatabaseNotReady(
                f"the database at {safe_url(url)} has no allot schema: run `allot db upgrade`"
            ) from None
        if isinstance(exc, OperationalError):
            first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
            raise DatabaseUnavailable(
                f"cannot use the database at {safe_url(url)}: {first_line}"
            ) from None
        raise


def safe_url(url: str) -> str:
    """``url`` with any password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def stored_bucket_count(connection: Connection) -> int | None:
    """The number of buckets in the database, or None when there is no ``bucket`` table yet."""
    if not inspect(connection).has_table("bucket"):
        return None
    count = connection.execute(select(func.count()).select_from(Bucket)).scalar_one()
    return int(count) or None


def check_bucket_count(connection: Connection, bucket_count: int) -> None:
    """Refuse to go on when the database holds a different number of buckets.

    Raises:
        BucketCountMismatch: the database was created with another bucket count.
    """
    stored = stored_bucket_count(connection)
    if stored is not None and stored != bucket_count:
        raise BucketCountMismatch(
            f"the database has {stored} buckets but ALLOT_BUCKET_COUNT is {bucket_count}; "
            "the bucket count is fixed when the database is created (changing it would put "
            f"every table in another bucket): set ALLOT_BUCKET_COUNT={stored} "
            "or use a new database"
        )


def check_schema(connection: Connection, bucket_count: int) -> None:
    """Check the database is migrated to the newest revision and has ``bucket_count`` buckets.

    Raises:
        DatabaseNotReady: the schema is missing or older than this version of allot.
        BucketCountMismatch: the database has another number of buckets.
    """
    revision = current_revision(connection)
    if revision != head_revision():
        state = "has no allot schema" if revision is None else f"is at revision {revision}"
        raise DatabaseNotReady(
            f"the database {state} (this allot needs {head_revision()}): run `allot db upgrade`"
        )
    check_bucket_count(connection, bucket_count)


@dataclass(frozen=True)
class UpgradeResult:
    """What :func:`upgrade` did."""

    revision_before: str | None
    revision_after: str
    buckets_created: int
    bucket_count: int


def upgrade(engine: Engine, bucket_count: int) -> UpgradeResult:
    """Migrate the database to the newest schema and create buckets ``1..bucket_count``.

    Safe to repeat: an up-to-date database with its buckets is left unchanged. Everything
    happens in one transaction, so a failure leaves the database as it was.

    Raises:
        BucketCountMismatch: the database already has a different number of buckets.
    """
    with engine.begin() as connection:
        check_bucket_count(connection, bucket_count)
        before = current_revision(connection)
        from alembic import command

        command.upgrade(alembic_config(connection), "head")
        existing = stored_bucket_count(connection) or 0
        created = 0
        if existing == 0:
            now = utcnow()
            connection.execute(
                insert(Bucket),
                [
                    {"bucket_id": bucket_id, "table_count": 0, "epoch": 0, "updated_at": now}
                    for bucket_id in range(1, bucket_count + 1)
                ],
            )
            created = bucket_count
        after = current_revision(connection)
        assert after is not None
    return UpgradeResult(before, after, created, bucket_count)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Migrate the database down to ``revision`` (``base`` removes allot's schema entirely)."""
    from alembic import command

    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), revision)

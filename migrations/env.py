"""Alembic environment for allot.

``allot db upgrade`` passes its own connection in ``config.attributes["connection"]``. Running
``alembic upgrade head`` by hand uses ``ALLOT_DATABASE_URL`` (or ``sqlalchemy.url`` if set in
``alembic.ini``).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from allot.settings import load_settings
from models.base import Base
from models.engine import make_engine

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, or on a new one to the configured URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or load_settings().database_url
    engine = make_engine(url)
    try:
        with engine.connect() as new_connection:
            _run(new_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("allot's migrations run online only: use `allot db upgrade`")
run_migrations_online()

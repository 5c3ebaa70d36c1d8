"""Fixtures shared by every layer of the suite.

Real servers only: a ZooKeeper started from the Debian jars and a ``redis-server`` on free ports
(one each per test session), a fresh PostgreSQL database and a fresh SQLite file per test. A
missing server fails the test that needs it with a message saying how to get it; nothing is
skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from allot.settings import get_settings
from allot.testing.servers import ServerProcess, start_redis, start_zookeeper
from models.engine import make_engine

POSTGRES_ADMIN_URL = os.environ.get(
    "ALLOT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DATABASES = ["sqlite", "postgresql"]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never see the caller's ALLOT_* variables or a cached settings object."""
    for name in list(os.environ):
        if name.startswith("ALLOT_") and name != "ALLOT_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A ZooKeeper server for the whole session (1 s minimum session timeout)."""
    server = start_zookeeper(tmp_path_factory.mktemp("zookeeper"))
    yield server
    server.stop()


@pytest.fixture
def zk_root() -> str:
    """A ZooKeeper root of the test's own, so tests never see each other's znodes."""
    return f"/allottest-{uuid.uuid4().hex[:12]}/allot"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A redis-server for the whole session, without persistence."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the PostgreSQL server's maintenance database."""
    engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} ({exc.orig}); `make test` "
            "installs and starts it, or set ALLOT_TEST_POSTGRES_URL",
            pytrace=False,
        )
    yield engine
    engine.dispose()


def _fresh_postgres_database(admin: Engine) -> Iterator[str]:
    name = f"allot_test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'allot.db'}"
    else:
        yield from _fresh_postgres_database(request.getfixturevalue("postgres_admin"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the fresh database of :func:`database_url`."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def migrated(engine: Engine) -> Engine:
    """The fresh database, upgraded to the newest schema with 100 buckets."""
    from allot.database import upgrade

    upgrade(engine, bucket_count=100)
    return engine

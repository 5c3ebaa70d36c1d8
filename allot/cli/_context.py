"""What a CLI command needs to reach the database: settings, an engine, sessions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from allot.database import check_schema, database_errors
from allot.errors import ZooKeeperUnavailable
from allot.settings import Settings, load_settings
from allot.zk.client import connect
from models.engine import make_engine, session_factory


@dataclass
class DatabaseContext:
    """Settings, an engine and a session factory for one CLI invocation."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]


@contextlib.contextmanager
def open_database(check: bool = True) -> Iterator[DatabaseContext]:
    """Open the configured database for one command and close it afterwards.

    With ``check`` the schema revision and the bucket count are verified first, so a command
    never runs against a database it does not understand. Driver errors raised inside the block
    become allot errors (:func:`allot.database.database_errors`).
    """
    settings = load_settings()
    engine = make_engine(settings.database_url)
    try:
        with database_errors(settings.database_url):
            if check:
                with engine.connect() as connection:
                    check_schema(connection, settings.bucket_count)
            yield DatabaseContext(settings, engine, session_factory(engine))
    finally:
        engine.dispose()


@contextlib.contextmanager
def open_zookeeper(settings: Settings, doing: str) -> Iterator[KazooClient]:
    """A ZooKeeper client for one command, closed afterwards; a connection lost while
    ``doing`` (e.g. "reading the cluster") becomes one line
    (:class:`~allot.errors.ZooKeeperUnavailable`)."""
    client = connect(settings, timeout=10.0)
    try:
        yield client
    except KazooException as exc:
        lost = f"lost ZooKeeper at {settings.zk_hosts} while {doing}"
        raise ZooKeeperUnavailable(f"{lost}: {type(exc).__name__} {exc}".rstrip()) from None
    finally:
        client.stop()
        client.close()

"""What a CLI command needs: the settings (read once per invocation, :class:`CliConfig`), the
database (:func:`open_database`), ZooKeeper (:func:`open_zookeeper`) and the broker's Redis
(:func:`open_redis`)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import click
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from allot.database import check_schema, database_errors, open_engine
from allot.errors import ZooKeeperUnavailable
from allot.settings import Settings, load_settings
from allot.zk.client import connect
from models.engine import session_factory


class CliConfig:
    """The one place a command's settings come from, built by the root callback of the ``allot``
    app and kept in the click context (rq's ``CliConfig``). The settings are read on first use,
    so ``allot --help`` and ``allot plan --input`` work with an environment they do not need."""

    @functools.cached_property
    def settings(self) -> Settings:
        """The settings from the environment.

        Raises:
            ConfigurationError: a variable is invalid (the message names it).
        """
        return load_settings()


def cli_config() -> CliConfig:
    """The running command's :class:`CliConfig` (a fresh one outside a command, e.g. in tests
    calling a helper directly)."""
    context = click.get_current_context(silent=True)
    root = None if context is None else context.find_root()
    if root is not None and isinstance(root.obj, CliConfig):
        return root.obj
    return CliConfig()


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

    Raises:
        ConfigurationError: a setting is invalid, the database URL included.
    """
    settings = cli_config().settings
    engine = open_engine(settings.database_url)
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


@contextlib.contextmanager
def open_redis(settings: Settings) -> Iterator[Redis | None]:
    """The broker's Redis for one command (:func:`allot.inspect.backlog.broker_redis`: None when the
    broker is not Redis; gives up quickly when Redis does not answer), closed afterwards.

    Raises:
        ConfigurationError: the broker URL is a Redis URL redis-py cannot read.
    """
    from allot.inspect.backlog import broker_redis  # only the commands that read Redis load it

    client = broker_redis(settings)
    try:
        yield client
    finally:
        if client is not None:
            client.close()

"""Per-process resources for tasks: a ZooKeeper client, a database engine, the cycle.

Created lazily in the process that runs the task and re-created after a fork (prefork
children never share the parent's sockets): the process id is checked on every use, and
``worker_process_init`` drops anything inherited.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown
from kazoo.client import KazooClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from allot.cycle import AssignmentCycle, CycleHooks
from allot.database import check_schema, database_errors, open_engine
from allot.errors import DatabaseUnavailable
from allot.settings import Settings, get_settings
from allot.zk.client import connect
from models.engine import session_factory

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The resources of one process."""

    pid: int
    settings: Settings
    client: KazooClient
    engine: Engine
    sessions: sessionmaker[Session]
    cycle: AssignmentCycle

    def close(self) -> None:
        """Close the ZooKeeper session and the connection pool."""
        self.client.stop()
        self.client.close()
        self.engine.dispose()


_runtime: Runtime | None = None

cycle_hooks: CycleHooks | None = None
"""Fault-injection hooks given to every cycle this process builds (set only by tests, through
an app module of their own; production never sets it)."""


def get_runtime() -> Runtime:
    """This process's runtime, created on first use (and again after a fork).

    Raises:
        ZooKeeperUnavailable, DatabaseNotReady, BucketCountMismatch: the process cannot work
            (an unreachable database is not one of them: cycles go on without SQL).
    """
    global _runtime
    if _runtime is not None and _runtime.pid == os.getpid():
        return _runtime
    settings = get_settings()
    engine = open_engine(settings.database_url)
    try:
        try:
            with database_errors(settings.database_url), engine.connect() as connection:
                check_schema(connection, settings.bucket_count)
        except DatabaseUnavailable as exc:
            # ZooKeeper alone decides: a cycle runs without SQL and the mirror catches up
            log.warning("%s; the schema is checked when a later process starts", exc)
        client = connect(settings)
    except BaseException:
        engine.dispose()
        raise
    sessions = session_factory(engine)
    _runtime = Runtime(
        os.getpid(),
        settings,
        client,
        engine,
        sessions,
        AssignmentCycle(client, sessions, settings, hooks=cycle_hooks),
    )
    return _runtime


@worker_process_init.connect
def _forget_inherited(**_: Any) -> None:
    """A fresh prefork child: never use the parent's client or pool."""
    global _runtime
    _runtime = None


@worker_process_shutdown.connect
def _close(**_: Any) -> None:
    global _runtime
    if _runtime is not None and _runtime.pid == os.getpid():
        try:
            _runtime.close()
        except Exception:
            log.exception("closing the task runtime failed")
    _runtime = None

"""Fixtures for integration tests: ZooKeeper clients on a root of the test's own, deleted
after the test, and an in-process cluster (real ZooKeeper sessions as nodes, real SQL, a
clock the test moves by hand)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kazoo.client import KazooClient
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from allot.cycle import AssignmentCycle, CycleHooks
from allot.names import parse_table_name
from allot.registry import register_tables
from allot.settings import Settings
from allot.testing.cluster import sql_assignment, zk_assignment
from allot.testing.servers import ServerProcess
from allot.testing.zookeeper import delete_root
from allot.work.context import TableContext
from allot.work.database import WorkSql
from allot.work.fence import take_fence
from allot.work.spec import TableTaskSpec
from allot.zk.client import connect
from allot.zk.codec import MemberInfo
from allot.zk.paths import ZkPaths
from allot.zk.registration import NodeRegistration
from allot.zk.store import AssignmentStore
from models.engine import session_factory
from models.schema import TableTaskRun

GRACE = 30.0  # the cluster's node_offline_timeout: a departed node's buckets wait this long


@pytest.fixture
def zk_settings(zookeeper: ServerProcess, zk_root: str) -> Settings:
    """Settings naming the session's ZooKeeper and this test's root, with 4 s sessions."""
    return Settings(zk_hosts=zookeeper.address, zk_root=zk_root, zk_session_timeout=4)


@pytest.fixture
def zk_connect(zk_settings: Settings) -> Iterator[Callable[[], KazooClient]]:
    """Call it for a started client (:func:`allot.zk.client.connect` with :func:`zk_settings`).

    After the test every client it opened is closed, then the test's root is deleted with all
    below it (by a client of its own, since the test may have expired or stopped the others).
    """
    opened: list[KazooClient] = []

    def open_client() -> KazooClient:
        client = connect(zk_settings)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.stop()
        client.close()
    delete_root(zk_settings)


@pytest.fixture
def zk(zk_connect: Callable[[], KazooClient]) -> KazooClient:
    """A started client on this test's root (see :func:`zk_connect`)."""
    return zk_connect()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@dataclass
class Cluster:
    """Nodes as real ZooKeeper sessions with membership znodes, and cycles run in-process, so
    a test can inject a fault at an exact point (a crash between steps, a session expiring
    mid-cycle)."""

    settings: Settings
    engine: Engine
    client: KazooClient
    clock: Clock
    nodes: dict[str, KazooClient] = field(default_factory=dict)

    def cycle(
        self,
        hooks: CycleHooks | None = None,
        *,
        client: KazooClient | None = None,
        sessions: sessionmaker[Session] | None = None,
    ) -> AssignmentCycle:
        """A cycle on this cluster (through another ZooKeeper client or database if given)."""
        return AssignmentCycle(
            client or self.client,
            sessions or session_factory(self.engine),
            self.settings,
            clock=self.clock,
            hooks=hooks,
        )

    def join(self, key: str, weight: float = 1.0) -> None:
        node = connect(self.settings)
        NodeRegistration(
            node, ZkPaths(self.settings.zk_root), MemberInfo(key, "host", 1, weight, 0)
        ).register()
        self.nodes[key] = node

    def leave(self, key: str) -> None:
        """The node's session ends (its membership znode disappears at once)."""
        node = self.nodes.pop(key)
        node.stop()
        node.close()

    def zk_assignment(self) -> dict[str, list[int]]:
        return zk_assignment(AssignmentStore(self.client, ZkPaths(self.settings.zk_root)))

    def sql_assignment(self) -> dict[str, list[int]]:
        return sql_assignment(self.engine)

    def assert_consistent(self) -> dict[str, list[int]]:
        """ZooKeeper and SQL agree and every bucket has exactly one owner."""
        zk = self.zk_assignment()
        assert zk == self.sql_assignment()
        owned = sorted(bucket for buckets in zk.values() for bucket in buckets)
        assert owned == list(range(1, self.settings.bucket_count + 1))
        return zk


@pytest.fixture
def cluster(
    zk_settings: Settings, zk_connect: Callable[[], KazooClient], migrated: Engine
) -> Iterator[Cluster]:
    """An empty cluster on this test's root and fresh database; ``cluster.join(key)`` adds a
    node. Every node leaves after the test."""
    settings = Settings(
        zk_hosts=zk_settings.zk_hosts,
        zk_root=zk_settings.zk_root,
        zk_session_timeout=4.0,
        database_url=migrated.url.render_as_string(hide_password=False),
        node_offline_timeout=GRACE,
    )
    result = Cluster(settings, migrated, zk_connect(), Clock())
    yield result
    for key in list(result.nodes):
        result.leave(key)


def sizes(assignment: dict[str, list[int]]) -> dict[str, int]:
    """The number of buckets of each node."""
    return {key: len(buckets) for key, buckets in assignment.items()}


# Table work in-process: a registered table, its bucket fenced for a@h, a body that writes

effects = MetaData()
effect = Table("test_effect", effects, Column("run_id", String(64)), Column("table_id", Integer))
TABLE = parse_table_name("cat.db.orders")


@pytest.fixture
def sql(migrated: Engine, database_url: str) -> WorkSql:
    effects.create_all(migrated)
    sessions = session_factory(migrated)
    with sessions.begin() as session:
        register_tables(session, [TABLE])
    return WorkSql(os.getpid(), Settings(database_url=database_url), migrated, sessions)


@pytest.fixture
def bucket(sql: WorkSql) -> int:
    """The table's bucket, fenced for node a@h with token 100."""
    bucket_id = sql.find_table(TABLE)[1]
    with sql.sessions.begin() as session:
        assert take_fence(session, bucket_id, "a@h", 100)
    return bucket_id


def writing(calls: list[str]) -> TableTaskSpec:
    def body(ctx: TableContext, **_: Any) -> dict[str, int]:
        calls.append(ctx.run_id)
        with ctx.commit() as session:
            session.execute(insert(effect).values(run_id=ctx.run_id, table_id=ctx.table_id))
        return {"token": ctx.token}

    return TableTaskSpec("test.write", body, None)


def effects_of(engine: Engine, run_id: str) -> int:
    with engine.connect() as connection:
        return connection.execute(
            select(func.count()).select_from(effect).where(effect.c.run_id == run_id)
        ).scalar_one()


def attempts(engine: Engine, run_id: str) -> list[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(TableTaskRun.status)
            .where(TableTaskRun.run_id == run_id)
            .order_by(TableTaskRun.attempt_id)
        )
        return list(rows.scalars())

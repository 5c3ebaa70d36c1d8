"""The harness starts real servers: ZooKeeper and Redis answer, PostgreSQL gives fresh databases."""

from __future__ import annotations

import redis
from kazoo.client import KazooClient
from sqlalchemy import Engine, text

from allot.testing.servers import ServerProcess


def test_zookeeper_accepts_sessions_and_writes(zookeeper: ServerProcess, zk_root: str) -> None:
    client = KazooClient(hosts=zookeeper.address)
    client.start(timeout=10)
    try:
        client.create(f"{zk_root}/probe", b"hello", makepath=True)
        assert client.get(f"{zk_root}/probe")[0] == b"hello"
    finally:
        client.stop()
        client.close()


def test_redis_answers(redis_server: ServerProcess) -> None:
    connection = redis.Redis(host=redis_server.host, port=redis_server.port)
    assert connection.ping() is True
    connection.set("allot:probe", "1")
    assert connection.get("allot:probe") == b"1"


def test_each_test_gets_an_empty_database(engine: Engine) -> None:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.execute(text("SELECT name FROM sqlite_master")).all()
        else:
            rows = connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).all()
    assert rows == []

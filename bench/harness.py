"""A local cluster of real processes for the benchmarks that need one (failover, scale).

:func:`local_cluster` starts a ZooKeeper and a Redis of its own in a new temporary directory
(allot.testing), creates a migrated SQLite database there (or, with ``database="postgresql"``,
a PostgreSQL database of its own on the server of ``ALLOT_TEST_POSTGRES_URL``) and returns a
:class:`~allot.testing.cluster.LocalCluster` on them, with no worker started yet. Everything
it started or created is stopped or dropped when the block ends.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from allot.settings import Settings
from allot.testing.cluster import LocalCluster
from allot.testing.databases import (
    POSTGRES_ADMIN_URL,
    migrate,
    migrated_sqlite,
    postgres_database,
)
from allot.testing.processes import allot_env
from allot.testing.servers import start_redis, start_zookeeper
from allot.zk.client import connect
from models.engine import make_engine

ZK_ROOT = "/bench/allot"
DATABASES = ("sqlite", "postgresql")


@contextlib.contextmanager
def migrated_database(kind: str, workdir: Path, bucket_count: int) -> Iterator[str]:
    """The URL of a new database of ``kind`` (one of :data:`DATABASES`) upgraded to the newest
    schema with ``bucket_count`` buckets: a SQLite file in ``workdir``, or a PostgreSQL
    database dropped when the block ends."""
    if kind == "sqlite":
        yield migrated_sqlite(workdir, bucket_count)
        return
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with postgres_database(admin, "allot_bench_") as url:
            yield migrate(url, bucket_count)
    finally:
        admin.dispose()


@contextlib.contextmanager
def local_cluster(
    prefix: str, bucket_count: int, database: str = "sqlite", **settings: Any
) -> Iterator[LocalCluster]:
    """A local cluster with ``bucket_count`` buckets in a new directory ``/tmp/<prefix>...``,
    on a new database of kind ``database`` (:func:`migrated_database`).

    ``settings`` (``node_offline_timeout=2.0``) reach both the workers' environment and the
    cluster's own :class:`~allot.settings.Settings`, so that the cycles this process runs
    (:func:`~allot.testing.cluster.steady_cycles`) see the cluster as its workers do.
    """
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    values: dict[str, Any] = {"bucket_count": bucket_count, **settings}
    with contextlib.ExitStack() as stack:
        zookeeper = start_zookeeper(workdir / "zookeeper")
        stack.callback(zookeeper.stop)
        redis = start_redis(workdir / "redis")
        stack.callback(redis.stop)
        database_url = stack.enter_context(migrated_database(database, workdir, bucket_count))
        engine = make_engine(database_url)
        stack.callback(engine.dispose)
        env = allot_env(
            zookeeper,
            redis,
            zk_root=ZK_ROOT,
            database_url=database_url,
            **{name: str(value) for name, value in values.items()},
        )
        config = Settings(
            zk_hosts=zookeeper.address, zk_root=ZK_ROOT, database_url=database_url, **values
        )
        client = connect(config)
        stack.callback(client.close)
        stack.callback(client.stop)
        cluster = LocalCluster(workdir, env, client, engine, config)
        stack.callback(cluster.stop_all)
        yield cluster

"""A real worker measures its buckets' load: the seconds its prefork pool processes spend on
each bucket's runs reach ``{root}/load/{node}`` from its main process, and go with it."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from allot.names import parse_table_name
from allot.registry import register_tables
from allot.testing.cluster import QUICK_START, LocalCluster
from allot.zk.load import read_load
from allot.zk.paths import ZkPaths
from models.engine import session_factory
from tests.e2e.conftest import START
from tests.e2e.load_tasks import SLOW_SECONDS

BUCKETS = 3
TABLES = ["cat.db.t0_slow", "cat.db.t1", "cat.db.t2"]  # one per bucket: 1, 2, 3


@pytest.fixture
def migrated(engine: Engine) -> Engine:
    """The fresh database, upgraded to the newest schema with three buckets."""
    from allot.database import upgrade

    upgrade(engine, bucket_count=BUCKETS)
    return engine


def test_a_worker_publishes_the_seconds_its_pool_spent_per_bucket(
    cluster: LocalCluster, migrated: Engine
) -> None:
    # Given three tables in three buckets, the one in bucket 1 slow, and one worker with a
    # prefork pool of two processes running their periodic task every second
    with session_factory(migrated).begin() as session:
        register_tables(session, [parse_table_name(name) for name in TABLES])
    env = cluster.env | {
        "ALLOT_TASK_MODULES": "tests.e2e.load_tasks",
        "ALLOT_BUCKET_COUNT": str(BUCKETS),
        "ALLOT_LOAD_WINDOW": "30",
        "ALLOT_LOAD_PUBLISH_INTERVAL": "0.5",
    }
    cluster.processes["a"] = cluster.group.worker("a", env, *QUICK_START, "-c", "2")
    paths = ZkPaths(cluster.settings.zk_root)
    key = cluster.key("a")

    # When it has run a few periods, then its znode holds every bucket's seconds, the slow
    # bucket's the most
    def measured() -> dict[int, float] | None:
        published = read_load(cluster.client, paths).by_node.get(key)
        if published is None or published.buckets.get(1, 0.0) < 3 * SLOW_SECONDS:
            return None
        return published.buckets if set(published.buckets) == {1, 2, 3} else None

    buckets = cluster.wait_for(measured, "the worker's load published", START)
    assert buckets[1] > 5 * max(buckets[2], buckets[3])
    assert read_load(cluster.client, paths).by_node[key].window == 30

    # And when it stops, its load goes with its session
    cluster.processes.pop("a").stop()
    assert cluster.client.exists(paths.load_of(key)) is None

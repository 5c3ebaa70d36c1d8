"""A gray failure, with a real partition: a worker alive in ZooKeeper whose route to the broker
is cut steps aside, so its buckets move and their work goes on; it comes back when healed.

Three workers; w1 runs in a network namespace of its own (:mod:`allot.testing.netns`), its
ZooKeeper and Redis on two addresses of the test's bridge, so a blackhole route cuts w1 from
Redis alone. SQLite only: the database is a file, reachable from inside the namespace (the
PostgreSQL server listens on loopback only).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from allot.names import parse_table_name
from allot.registry import register_tables
from allot.settings import Settings
from allot.testing.cluster import QUICK_START, LocalCluster
from allot.testing.netns import Lab, Namespace
from allot.testing.processes import ManagedProcess, fresh_allot_env
from allot.testing.servers import ServerProcess, start_redis, start_zookeeper
from allot.testing.zookeeper import delete_root
from allot.work.stepaside import PROBE_SECONDS, PROBE_TIMEOUT
from allot.zk.client import connect
from models.engine import session_factory
from tests.e2e.conftest import START
from tests.e2e.test_table_work import (
    TABLES,
    committed,
    effects,
    overlapping_owners,
    send,
    served_by_owners,
)
from tests.e2e.work_tasks import metadata

STEP_ASIDE = 4.0
HANDOFF = 4.0
CYCLE = 5.0  # a membership cycle: the trigger, the task's delivery, the lock and the writes
BOUND = STEP_ASIDE + PROBE_SECONDS + PROBE_TIMEOUT + HANDOFF + CYCLE
"""docs/table-work.md, case 17: the cut node's buckets are served elsewhere within this."""
RETURN = 30.0 + STEP_ASIDE + CYCLE + START
"""Case 17 again: healed, the node is back once Celery's consumer has reconnected (kombu's
retry interval grows to 30 s during a long cut) and the broker answered for STEP_ASIDE s, then
a cycle gives it buckets (and slack for a loaded machine)."""


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(servers=2) as made:
        yield made


@pytest.fixture
def lab_servers(lab: Lab, tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """ZooKeeper on the bridge's first address, Redis on its second."""
    zookeeper = start_zookeeper(tmp_path / "zookeeper", host=lab.addresses[0])
    try:
        redis_server = start_redis(tmp_path / "redis", host=lab.addresses[1])
    except BaseException:
        zookeeper.stop()
        raise
    yield zookeeper, redis_server
    redis_server.stop()
    zookeeper.stop()


@pytest.fixture
def lab_cluster(
    lab_servers: tuple[ServerProcess, ServerProcess],
    migrated: Engine,
    zk_root: str,
    tmp_path: Path,
) -> Iterator[LocalCluster]:
    zookeeper, redis_server = lab_servers
    env = fresh_allot_env(
        zookeeper,
        redis_server,
        zk_root=zk_root,
        database_url=migrated.url.render_as_string(hide_password=False),
        zk_session_timeout="2",
        node_offline_timeout="2",
        task_modules="tests.e2e.work_tasks",
        handoff_timeout=str(HANDOFF),
        redelivery_timeout="8",
        broker_step_aside=str(STEP_ASIDE),
    )
    metadata.create_all(migrated)
    with session_factory(migrated).begin() as session:
        register_tables(session, [parse_table_name(name) for name in TABLES])
    settings = Settings(zk_hosts=zookeeper.address, zk_root=zk_root)
    client = connect(settings)
    cluster = LocalCluster(tmp_path, env, client, migrated, settings)
    try:
        yield cluster
    finally:
        cluster.stop_all()
        client.stop()
        client.close()
        print(cluster.logs())
        delete_root(settings)


def worker_in(cluster: LocalCluster, namespace: Namespace, name: str) -> ManagedProcess:
    """Worker ``name`` started inside ``namespace``, as :meth:`LocalCluster.worker` starts one."""
    args = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-n", f"{name}@%h"]
    args += ["-c", "1", "--loglevel", "INFO", *QUICK_START]
    process = cluster.group.start(name, namespace.command(args), cluster.env)
    cluster.processes[name] = process
    return process


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_worker_cut_from_the_broker_steps_aside_and_comes_back(
    lab: Lab, lab_cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster = lab_cluster
    redis_address = lab.addresses[1]
    w1_space = lab.namespace()
    w1 = worker_in(cluster, w1_space, "w1")
    cluster.worker("w2")
    cluster.worker("w3")
    key = cluster.key("w1")
    cluster.wait_for(lambda: served_by_owners(cluster, 3), "three serving", START)
    w1_buckets = set(cluster.zk()[key])

    # Given table tasks flowing to every table, when w1's route to Redis (not ZooKeeper) is cut
    ids = tmp_path / "sent.txt"
    w1_space.blackhole(redis_address)
    cut = time.monotonic()
    sender = send(cluster, ids, count=120, rate=10, seconds=0.05)

    # Then w1 steps aside: its buckets are served by w2 and w3 within the bound
    def without_w1() -> dict[str, list[int]] | None:
        served = served_by_owners(cluster)
        return served if served is not None and key not in served else None

    moved = cluster.wait_for(without_w1, "w1's buckets moved", BOUND)
    print(f"w1's buckets served by w2 and w3 {time.monotonic() - cut:.1f} s after the cut")
    assert w1_buckets <= set(moved[cluster.key("w2")]) | set(moved[cluster.key("w3")])
    assert w1.running

    # and, still during the cut, every message sent commits, exactly once, on every table
    sender.popen.wait(60)
    sent = ids.read_text().split()
    assert len(sent) == 120
    cluster.wait_for(lambda: len(committed(cluster.engine)) >= len(sent), "every run", 60)
    assert w1_space.cut == {redis_address}
    runs = committed(cluster.engine)
    assert set(runs) == set(sent)
    assert set(runs.values()) == {1}
    assert effects(cluster.engine) == dict.fromkeys(sent, 1)
    assert w1.output().count("steps aside") == 1

    # When the route is healed, w1 comes back and is given buckets by the normal cycle
    w1_space.heal(redis_address)
    healed = time.monotonic()
    cluster.wait_for(lambda: served_by_owners(cluster, 3), "back", RETURN)
    print(f"w1 serving again {time.monotonic() - healed:.1f} s after the heal")
    assert "is back" in w1.output()

    # and work sent now runs on all three, still exactly once, never on two owners at once
    later = tmp_path / "sent-later.txt"
    send(cluster, later, count=30, rate=15, seconds=0.0, name="sender-later").popen.wait(60)
    sent += later.read_text().split()
    cluster.wait_for(lambda: len(committed(cluster.engine)) >= len(sent), "later runs", 60)
    runs = committed(cluster.engine)
    assert set(runs) == set(sent)
    assert set(runs.values()) == {1}
    assert effects(cluster.engine) == dict.fromkeys(sent, 1)
    assert overlapping_owners(cluster.engine) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_node_steps_aside_when_the_broker_is_cut_from_all(
    lab: Lab, lab_cluster: LocalCluster
) -> None:
    # Given two workers, each in a namespace of its own
    cluster = lab_cluster
    redis_address = lab.addresses[1]
    spaces = [lab.namespace(), lab.namespace()]
    workers = [worker_in(cluster, space, f"w{i}") for i, space in enumerate(spaces, 1)]
    cluster.wait_for(lambda: served_by_owners(cluster, 2), "two serving", START)
    before = cluster.zk()

    # When both lose their route to Redis for longer than the step-aside limit
    for space in spaces:
        space.blackhole(redis_address)
    cluster.wait_for(
        lambda: all("not stepping aside" in w.output() for w in workers),
        "both workers past the limit",
        BOUND,
    )

    # Then neither stepped aside: both are still members with the buckets they had
    assert cluster.zk() == before
    assert not any("steps aside" in w.output() for w in workers)
    members = cluster.client.get_children(f"{cluster.settings.zk_root}/nodes")
    assert set(members) == {cluster.key("w1"), cluster.key("w2")}

    # Healed before the workers stop, so their warm shutdown does not wait on a dead route
    for space in spaces:
        space.heal(redis_address)

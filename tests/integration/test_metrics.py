"""The metrics endpoint against real ZooKeeper, Redis and SQL (SQLite and PostgreSQL): a scrape
over HTTP shows what ZooKeeper holds; one node at a time serves the cluster's gauges; a source
that goes away is ``allot_up 0``, never an error; the counters of forked processes add up in
multiprocess mode."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine, select

from allot.cycle import AssignmentCycle
from allot.database import upgrade
from allot.errors import ServiceError
from allot.metrics import (
    MULTIPROC_ENV,
    ClusterCollector,
    metrics_registry,
    prepare_multiprocess_dir,
    serve_metrics,
)
from allot.names import parse_table_name
from allot.registry import register_tables
from allot.settings import Settings
from allot.testing.polling import wait_for
from allot.testing.servers import ServerProcess, free_port, start_zookeeper
from allot.testing.zookeeper import expire_session
from allot.work import bucket_queue
from allot.zk.client import connect
from allot.zk.load import publish_load
from allot.zk.paths import ZkPaths
from allot.zk.store import AssignmentStore
from allot.zk.triggers import TriggerDuty
from models.engine import make_engine, session_factory
from models.schema import TableIdentifier, TableTaskRun
from tests.integration.conftest import GRACE, Cluster

Labels = tuple[tuple[str, str], ...]
Scrape = dict[str, dict[Labels, float]]


def scrape(port: int) -> Scrape:
    """``{sample name: {sorted labels: value}}`` served on ``127.0.0.1:port``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        assert response.status == 200
        text = response.read().decode()
    result: Scrape = {}
    for metric in text_string_to_metric_families(text):
        for sample in metric.samples:
            result.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return result


def by(scraped: Scrape, name: str, label: str) -> dict[str, float]:
    """The samples of ``name`` keyed by the value of their one label ``label``."""
    return {dict(labels)[label]: value for labels, value in scraped.get(name, {}).items()}


def single(scraped: Scrape, name: str) -> float:
    return scraped[name][()]


def states(scraped: Scrape) -> dict[str, str]:
    """Each node's state: the ``state`` label of its ``allot_node_state`` sample that is 1."""
    return {
        dict(labels)["node"]: dict(labels)["state"]
        for labels, value in scraped["allot_node_state"].items()
        if value == 1
    }


@contextlib.contextmanager
def served(collector: ClusterCollector | None) -> Iterator[int]:
    """Serve a registry with ``collector`` on a free port of 127.0.0.1; yield the port."""
    server = serve_metrics(free_port(), metrics_registry(collector), address="127.0.0.1")
    assert server is not None
    try:
        yield server.port
    finally:
        server.stop()


def unreachable_redis() -> Redis:
    return Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=1, socket_timeout=1,
        retry=Retry(NoBackoff(), 0),
    )  # fmt: skip


@pytest.fixture
def redis(redis_server: ServerProcess) -> Iterator[Redis]:
    client = Redis(host=redis_server.host, port=redis_server.port, socket_timeout=5)
    yield client
    client.close()


def own_cluster_name(settings: Settings) -> Settings:
    """The settings under a cluster name of this test's own, so its bucket queues in the
    session's Redis are its own."""
    return settings.model_copy(update={"cluster": f"metrics-{uuid.uuid4().hex[:8]}"})


def record_runs(engine: Engine, task: str, statuses: list[str]) -> None:
    """Register one table and record one attempt of ``task`` at it per status."""
    with session_factory(engine).begin() as session:
        bucket_id = register_tables(session, [parse_table_name("cat.db.orders")])[0].bucket_id
        table_id = session.scalars(select(TableIdentifier.table_id)).one()
        session.add_all(
            TableTaskRun(
                run_id=f"run-{number}",
                task_name=task,
                table_id=table_id,
                bucket_id=bucket_id,
                node_key="a@h",
                token=1,
                status=status,
            )
            for number, status in enumerate(statuses)
        )


def test_a_scrape_shows_what_zookeeper_holds(cluster: Cluster, redis: Redis) -> None:
    # Given two nodes (b of weight 2) after a cycle, leases on a's buckets only, three messages
    # waiting in the queue of one of b's buckets and table task attempts in SQL
    settings = own_cluster_name(cluster.settings)
    cluster.join("a@h")
    cluster.join("b@h", weight=2.0)
    report = cluster.cycle().run()
    assignment = cluster.zk_assignment()
    paths = ZkPaths(settings.zk_root)
    for bucket in assignment["a@h"]:
        lease = b'{"node_key":"a@h","epoch":1}'
        cluster.client.create(paths.lease(bucket), lease, ephemeral=True, makepath=True)
    redis.rpush(bucket_queue(settings.cluster, assignment["b@h"][0]), "m1", "m2", "m3")
    record_runs(cluster.engine, "demo.compact", ["committed", "committed", "fenced"])
    # and each node's load published for its first bucket: 4 s on a, 2 s on b (mean 3 s)
    first = {key: buckets[0] for key, buckets in assignment.items()}
    publish_load(cluster.nodes["a@h"], paths, "a@h", 3600, {first["a@h"]: 4.0})
    publish_load(cluster.nodes["b@h"], paths, "b@h", 3600, {first["b@h"]: 2.0})
    sessions = session_factory(cluster.engine)

    # When Prometheus scrapes the endpoint
    with served(ClusterCollector(cluster.client, sessions, settings, redis)) as port:
        scraped = scrape(port)

    # Then every value is the one ZooKeeper (and SQL, and Redis) holds
    epoch = AssignmentStore(cluster.client, paths).read_version().epoch
    assert by(scraped, "allot_up", "source") == {"zookeeper": 1, "sql": 1, "redis": 1}
    assert by(scraped, "allot_node_buckets", "node") == {
        key: len(buckets) for key, buckets in assignment.items()
    }
    assert states(scraped) == {"a@h": "live", "b@h": "live"}
    assert by(scraped, "allot_node_weight", "node") == {"a@h": 1.0, "b@h": 2.0}
    assert single(scraped, "allot_unowned_buckets") == 0
    assert single(scraped, "allot_buckets_without_lease") == len(assignment["b@h"])
    assert single(scraped, "allot_spread") == pytest.approx(report.spread_after)
    assert single(scraped, "allot_epoch") == epoch == report.epoch == 1
    assert single(scraped, "allot_sql_epoch") == epoch
    assert single(scraped, "allot_membership_size") == 2
    assert by(scraped, "allot_plans", "status") == {"generated": 0, "applying": 0}
    assert "allot_table_task_runs" not in scraped  # the history is never counted whole
    assert by(scraped, "allot_bucket_queue_backlog", "node") == {"a@h": 0, "b@h": 3}
    # unmeasured buckets count as the mean; only measured buckets have a series
    assert by(scraped, "allot_node_load", "node") == {
        "a@h": 4.0 + 3.0 * (len(assignment["a@h"]) - 1),
        "b@h": 2.0 + 3.0 * (len(assignment["b@h"]) - 1),
    }
    assert by(scraped, "allot_bucket_load", "bucket") == {
        str(first["a@h"]): 4.0,
        str(first["b@h"]): 2.0,
    }


def reporters(scrapes: dict[str, Scrape]) -> list[str]:
    """The nodes whose scrape says they serve the cluster's gauges."""
    return [key for key, scraped in scrapes.items() if single(scraped, "allot_cluster_reporter")]


def test_one_node_at_a_time_serves_the_cluster_gauges(
    cluster: Cluster,
    zk_connect: Callable[[], KazooClient],
    redis: Redis,
    zookeeper: ServerProcess,
) -> None:
    # Given three nodes holding the cluster's 100 buckets, each queued for the trigger duty
    # with a session of its own, each serving its metrics as a worker does (the cluster's
    # gauges while it holds the duty)
    settings = own_cluster_name(cluster.settings)
    for key in ("a@h", "b@h", "c@h"):
        cluster.join(key)
    cluster.cycle().run()
    sessions = session_factory(cluster.engine)
    paths = ZkPaths(settings.zk_root)
    clients: dict[str, KazooClient] = {}
    ports: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        for key in ("a@h", "b@h", "c@h"):
            client = clients[key] = zk_connect()
            duty = TriggerDuty(client, paths, key, lambda _version: None)
            stack.callback(duty.stop)
            collector = ClusterCollector(
                client, sessions, settings, redis, reporting=duty.holding.is_set
            )
            ports[key] = stack.enter_context(served(collector))

        def one_reporter(not_this: str | None = None) -> tuple[str, dict[str, Scrape]] | None:
            scrapes = {key: scrape(port) for key, port in ports.items()}
            found = reporters(scrapes)
            if len(found) != 1 or found[0] == not_this:
                return None
            return found[0], scrapes

        # When Prometheus scrapes every node
        first, scrapes = wait_for(one_reporter, "one node serving the cluster's gauges", 20)

        # Then exactly one serves the cluster's gauges, read once, and the sum of the buckets
        # over every node's scrape is the bucket count; the others serve none of them
        assert sum(sum(s.get("allot_node_buckets", {}).values()) for s in scrapes.values()) == 100
        assert by(scrapes[first], "allot_up", "source") == {"zookeeper": 1, "sql": 1, "redis": 1}
        for key, scraped in scrapes.items():
            if key != first:
                assert single(scraped, "allot_cluster_reporter") == 0
                assert not {"allot_up", "allot_node_buckets", "allot_epoch"} & set(scraped)

        # When the reporter's session ends (its node died)
        expire_session(clients[first], zookeeper.address)

        # Then another node serves them from its next scrape on, and the first one stops
        second, scrapes = wait_for(
            lambda: one_reporter(not_this=first), "another node serving the gauges", 20
        )
        assert sum(sum(s.get("allot_node_buckets", {}).values()) for s in scrapes.values()) == 100
        assert single(scrapes[first], "allot_cluster_reporter") == 0
        assert "allot_node_buckets" not in scrapes[first]
        assert single(scrapes[second], "allot_epoch") == 1


def test_a_departed_node_is_suspect_then_offline_with_its_buckets(cluster: Cluster) -> None:
    # Given a cycle that saw b leave (its grace period runs)
    cluster.join("a@h")
    cluster.join("b@h")
    cluster.cycle().run()
    held_by_b = len(cluster.zk_assignment()["b@h"])
    cluster.leave("b@h")
    cluster.cycle().run()
    sessions = session_factory(cluster.engine)
    collector = ClusterCollector(cluster.client, sessions, cluster.settings, clock=cluster.clock)

    with served(collector) as port:
        # Then b is suspect and keeps its buckets: none is unowned
        suspect = scrape(port)
        # When its grace period is over and no cycle has run yet
        cluster.clock.advance(GRACE + 1)
        overdue = scrape(port)
        # When the next cycle moves its buckets
        cluster.cycle().run()
        moved = scrape(port)

    assert states(suspect) == {"a@h": "live", "b@h": "suspect"}
    assert by(suspect, "allot_node_buckets", "node")["b@h"] == held_by_b
    assert single(suspect, "allot_unowned_buckets") == 0
    assert single(suspect, "allot_membership_size") == 1
    assert by(suspect, "allot_node_weight", "node") == {"a@h": 1.0}  # weights of live nodes
    # the picture AllotOfflineNodeHoldsBuckets alerts on
    assert states(overdue) == {"a@h": "live", "b@h": "offline"}
    assert by(overdue, "allot_node_buckets", "node")["b@h"] == held_by_b
    assert by(moved, "allot_node_buckets", "node") == {"a@h": 100}
    assert single(moved, "allot_epoch") == single(moved, "allot_sql_epoch") == 2


def test_a_zookeeper_outage_is_up_zero_and_never_an_error(
    tmp_path: Path, zk_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a cluster on a ZooKeeper server of this test's own, and SQLite
    server = start_zookeeper(tmp_path / "zk")
    engine = make_engine(f"sqlite:///{tmp_path / 'allot.db'}")
    upgrade(engine, bucket_count=100)
    settings = Settings(
        zk_hosts=server.address, zk_root=zk_root, zk_session_timeout=4.0,
        database_url=engine.url.render_as_string(hide_password=False),
    )  # fmt: skip
    client = connect(settings)
    sessions = session_factory(engine)
    try:
        AssignmentCycle(client, sessions, settings).run()
        collector = ClusterCollector(client, sessions, settings)
        caplog.set_level(logging.INFO, logger="allot.metrics.cluster")
        with served(collector) as port:
            assert by(scrape(port), "allot_up", "source") == {"zookeeper": 1, "sql": 1}

            # When the server goes away
            server.stop()
            wait_for(lambda: not client.connected, "the client to see the server gone", 20)
            first, second = scrape(port), scrape(port)

            # Then ZooKeeper's families are left out, SQL's are still there, one warning
            assert first == second
            assert by(first, "allot_up", "source") == {"zookeeper": 0, "sql": 1}
            assert "allot_node_buckets" not in first
            assert "allot_epoch" not in first
            assert single(first, "allot_sql_epoch") == 0
            warnings = [
                r.getMessage() for r in caplog.records if r.name.startswith("allot.metrics")
            ]
            assert len(warnings) == 1
            assert warnings[0].startswith("metrics: cannot read zookeeper")

            # When it comes back, so do its families
            server = start_zookeeper(tmp_path / "zk", port=server.port)

            def zookeeper_back() -> Scrape | None:
                scraped = scrape(port)
                return scraped if by(scraped, "allot_up", "source")["zookeeper"] else None

            back = wait_for(zookeeper_back, 'allot_up{source="zookeeper"} 1 again', 60)
            assert single(back, "allot_unowned_buckets") == 100  # no node ever joined
            assert "metrics: zookeeper answers again" in caplog.messages
    finally:
        client.stop()
        client.close()
        server.stop()
        engine.dispose()


def test_sql_and_redis_outages_leave_only_their_own_families_out(cluster: Cluster) -> None:
    # Given a healthy cluster, read through a database and a Redis nobody answers on
    cluster.join("a@h")
    cluster.cycle().run()
    gone = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres")
    collector = ClusterCollector(
        cluster.client, session_factory(gone), cluster.settings, unreachable_redis()
    )

    with served(collector) as port:
        scraped = scrape(port)
    gone.dispose()

    assert by(scraped, "allot_up", "source") == {"zookeeper": 1, "sql": 0, "redis": 0}
    assert by(scraped, "allot_node_buckets", "node") == {"a@h": 100}
    assert single(scraped, "allot_epoch") == 1
    left_out = {"allot_sql_epoch", "allot_plans"}
    assert not (left_out | {"allot_bucket_queue_backlog"}) & set(scraped)


def test_a_taken_port_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(ServiceError, match=f"cannot serve metrics on 127.0.0.1:{port}: "):
            serve_metrics(port, metrics_registry(), address="127.0.0.1")


CHILDREN = """
import multiprocessing, sys
from allot.metrics import HANDOFF_DURATION, metrics_registry, record_table_task, serve_metrics

def child() -> None:
    record_table_task("demo.compact", "committed")
    record_table_task("demo.compact", "committed")
    record_table_task("demo.compact", "fenced")
    # the inherited copy of the parent's listening socket was closed at fork
    sys.exit(0 if SERVER.server.socket.fileno() == -1 else 3)

SERVER = serve_metrics(int(sys.argv[1]), metrics_registry(), "127.0.0.1")
HANDOFF_DURATION.observe(1.5)
pool = [multiprocessing.get_context("fork").Process(target=child) for _ in range(3)]
for process in pool:
    process.start()
for process in pool:
    process.join()
print("exit codes", [process.exitcode for process in pool], flush=True)
sys.stdin.read()
"""


def test_forked_processes_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    # Given a process started with PROMETHEUS_MULTIPROC_DIR whose three forked children each
    # count two committed attempts and one fenced, while it serves the metrics
    folder = tmp_path / "metrics"
    prepare_multiprocess_dir(folder)
    port = free_port()
    env = {**os.environ, MULTIPROC_ENV: str(folder)}
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILDREN), str(port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "exit codes [0, 0, 0]\n"

        # When it is scraped
        scraped = scrape(port)
    finally:
        process.communicate("", timeout=30)

    # Then the children's counts are summed and the parent's own histogram is there
    assert by(scraped, "allot_table_tasks_total", "status") == {"committed": 6, "fenced": 3}
    assert single(scraped, "allot_handoff_duration_seconds_count") == 1
    assert single(scraped, "allot_handoff_duration_seconds_sum") == 1.5
    assert process.returncode == 0

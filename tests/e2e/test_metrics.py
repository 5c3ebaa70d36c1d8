"""Metrics on a real cluster, read back through a real Prometheus server: every worker serves
``/metrics`` (cluster gauges read from ZooKeeper, its pool processes' counters through the
multiprocess directory), and what Prometheus stores matches ZooKeeper after a join and a
kill -9."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from allot.testing.cluster import LocalCluster
from allot.testing.prometheus import by_label, query, start_prometheus
from allot.testing.servers import ServerProcess, free_port
from tests.e2e.conftest import START

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def worker_with_metrics(cluster: LocalCluster, name: str, port: int) -> None:
    metrics = cluster.workdir / "metrics" / name
    metrics.mkdir(parents=True)
    cluster.worker(name, ALLOT_METRICS_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(metrics))


@pytest.fixture
def ports() -> dict[str, int]:
    return {name: free_port() for name in ("node1", "node2", "node3")}


@pytest.fixture
def prometheus(tmp_path: Path, ports: dict[str, int]) -> Iterator[ServerProcess]:
    server = start_prometheus(
        tmp_path / "prometheus", [f"127.0.0.1:{port}" for port in ports.values()]
    )
    try:
        yield server
    finally:
        server.stop()


def buckets_in_prometheus(prometheus: ServerProcess) -> dict[str, int]:
    """Buckets per node as Prometheus has them (nodes holding at least one)."""
    found = by_label(prometheus.address, "max without(instance) (allot_node_buckets)", "node")
    return {node: int(value) for node, value in found.items() if value > 0}


def matches_zookeeper(cluster: LocalCluster, prometheus: ServerProcess, nodes: int) -> bool:
    zk = {node: len(buckets) for node, buckets in cluster.zk().items()}
    return (
        len(zk) == nodes
        and sum(zk.values()) == 100
        and buckets_in_prometheus(prometheus) == zk
        and by_label(prometheus.address, "max without(instance) (allot_epoch)", "")
        == {"": float(cluster.epoch())}
        and by_label(prometheus.address, "max without(instance) (allot_unowned_buckets)", "")
        == {"": 0.0}
    )


def targets_up(prometheus: ServerProcess, ports: dict[str, int]) -> dict[str, float]:
    by_instance = by_label(prometheus.address, 'up{job="allot"}', "instance")
    return {name: by_instance.get(f"127.0.0.1:{port}", -1) for name, port in ports.items()}


def test_prometheus_sees_the_assignment_of_zookeeper_through_a_join_and_a_kill(
    cluster: LocalCluster, prometheus: ServerProcess, ports: dict[str, int]
) -> None:
    worker_with_metrics(cluster, "node1", ports["node1"])
    worker_with_metrics(cluster, "node2", ports["node2"])
    cluster.wait_for(
        lambda: matches_zookeeper(cluster, prometheus, 2), "Prometheus to see 2 nodes", START
    )
    # the pool processes' counters reach Prometheus: the cycles that placed the buckets
    cluster.wait_for(
        lambda: query(prometheus.address, 'sum(allot_cycles_total{outcome="applied"}) >= 1'),
        "an applied cycle counted",
        START,
    )
    assert by_label(prometheus.address, "min without(instance) (allot_up)", "source") == {
        "zookeeper": 1.0,
        "sql": 1.0,
        "redis": 1.0,
    }
    # every live node has a load (no table work runs here: 0 s), no bucket has one
    assert by_label(prometheus.address, "max without(instance) (allot_node_load)", "node") == {
        cluster.key("node1"): 0.0,
        cluster.key("node2"): 0.0,
    }
    assert by_label(prometheus.address, "count(allot_bucket_load) or vector(0)", "") == {"": 0.0}

    # When a node joins
    worker_with_metrics(cluster, "node3", ports["node3"])
    cluster.wait_for(
        lambda: matches_zookeeper(cluster, prometheus, 3), "Prometheus to see the join", START
    )
    cluster.wait_for(
        lambda: targets_up(prometheus, ports) == {"node1": 1.0, "node2": 1.0, "node3": 1.0},
        "every node's target up",
        30,
    )

    # When it is killed
    cluster.processes["node3"].kill()
    cluster.wait_for(
        lambda: matches_zookeeper(cluster, prometheus, 2), "Prometheus to see the kill", START
    )
    assert cluster.key("node3") not in buckets_in_prometheus(prometheus)
    cluster.wait_for(
        lambda: targets_up(prometheus, ports)["node3"] == 0.0, "node3's target down", 30
    )

"""Metrics on a real cluster, read back through a real Prometheus server: every worker serves
``/metrics`` (its pool processes' counters through the multiprocess directory; the cluster
gauges, read from ZooKeeper, on the one node holding the trigger duty), and what Prometheus
stores, summed over every node's scrape, matches ZooKeeper after a join and after a kill -9
of the node serving the gauges."""

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
    """Buckets per node as Prometheus has them, summed over every node's scrape (nodes
    holding at least one): a node serving the cluster's gauges beside another would count
    each bucket twice."""
    found = by_label(prometheus.address, "sum by(node) (allot_node_buckets)", "node")
    return {node: int(value) for node, value in found.items() if value > 0}


def reporters(prometheus: ServerProcess, ports: dict[str, int]) -> list[str]:
    """The nodes whose last scrape says they serve the cluster's gauges."""
    found = by_label(prometheus.address, "allot_cluster_reporter == 1", "instance")
    return [name for name, port in ports.items() if f"127.0.0.1:{port}" in found]


def matches_zookeeper(cluster: LocalCluster, prometheus: ServerProcess, nodes: int) -> bool:
    zk = {node: len(buckets) for node, buckets in cluster.zk().items()}
    return (
        len(zk) == nodes
        and sum(zk.values()) == 100
        and by_label(prometheus.address, "sum(allot_cluster_reporter)", "") == {"": 1.0}
        and buckets_in_prometheus(prometheus) == zk
        and by_label(prometheus.address, "sum(allot_node_buckets)", "") == {"": 100.0}
        and by_label(prometheus.address, "sum(allot_epoch)", "") == {"": float(cluster.epoch())}
        and by_label(prometheus.address, "sum(allot_unowned_buckets)", "") == {"": 0.0}
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
    assert by_label(prometheus.address, "allot_up", "source") == {
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

    # When the node serving the cluster's gauges is killed
    [killed] = reporters(prometheus, ports)
    cluster.processes[killed].kill()

    # Then another node serves them, and they match ZooKeeper again
    cluster.wait_for(
        lambda: matches_zookeeper(cluster, prometheus, 2), "Prometheus to see the kill", START
    )
    assert cluster.key(killed) not in buckets_in_prometheus(prometheus)
    assert reporters(prometheus, ports) not in ([], [killed])
    cluster.wait_for(
        lambda: targets_up(prometheus, ports)[killed] == 0.0, f"{killed}'s target down", 30
    )

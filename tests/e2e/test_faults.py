"""Faults on a running cluster of real workers: a frozen cycle, an SQL outage during a
failover, foreign data in ZooKeeper. Each reproduces a fault the probe found; the cluster must
keep every bucket with exactly one owner and end with SQL saying what ZooKeeper says."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from allot.testing.cluster import LocalCluster, sizes, watching_for_double_owners
from allot.zk.paths import ZkPaths
from tests.cli import allot
from tests.e2e.conftest import START
from tests.e2e.proxy import Proxy


def assert_verified(cluster: LocalCluster) -> None:
    """``allot verify`` finds every invariant holding."""
    result = allot("verify", env=cluster.env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_cycle_frozen_past_its_session_writes_nothing_when_it_wakes(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # Given node1 alone with beat; its first quiet cycle pauses after refreshing
    # last-update-time, before its SQL side (node1 is the only worker: the pause is certain)
    pause = tmp_path / "pause"
    pause.mkdir()
    n1, n2 = cluster.key("node1"), cluster.key("node2")
    cluster.worker(
        "node1", app="tests.e2e.pausing_app",
        ALLOT_E2E_PAUSE_AT="before_catch_up", ALLOT_E2E_PAUSE_DIR=str(pause),
    )  # fmt: skip
    cluster.beat()
    paused = pause / "paused"
    cluster.wait_for(lambda: paused.exists() and paused.read_text(), "a pause", START)
    pid = int(paused.read_text())
    assert cluster.zk() == {n1: list(range(1, 101))}
    # When that process is frozen past its session timeout while node2 joins and, once the
    # frozen holder's lock is gone with its session, moves half the buckets to itself
    os.kill(pid, signal.SIGSTOP)
    try:
        with watching_for_double_owners(cluster.zk) as double_owners:
            cluster.worker("node2")
            after = cluster.wait_for(
                lambda: cluster.settled({n1: 50, n2: 50}), "node2's share", START
            )
    finally:
        (pause / "go").write_text("")
        os.kill(pid, signal.SIGCONT)
    # Then the woken cycle ends aborted, with no traceback, and SQL still says what
    # ZooKeeper says: the stale view (node1 holding everything) was never written
    cluster.wait_for(lambda: cluster.count_in_logs("cycle aborted"), "the woken cycle", 30)
    assert cluster.zk() == after
    assert cluster.sql() == after
    assert cluster.count_in_logs("Traceback") == 0
    assert double_owners == []
    assert_verified(cluster)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_sql_outage_does_not_hold_back_a_failover(
    cluster: LocalCluster, migrated: Engine
) -> None:
    # Given three workers and beat reaching PostgreSQL through a proxy
    url = make_url(cluster.env["ALLOT_DATABASE_URL"])
    proxy = Proxy((url.host or "127.0.0.1", url.port or 5432))
    cluster.env["ALLOT_DATABASE_URL"] = url.set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False
    )
    n1, n2, n3 = (cluster.key(f"node{i}") for i in range(1, 4))
    try:
        for name in ("node1", "node2", "node3"):
            cluster.worker(name)
        cluster.beat()
        cluster.wait_for(lambda: cluster.settled([34, 33, 33], {n1, n2, n3}), "3 nodes", START)
        # When SQL becomes unreachable and node3 is killed
        proxy.cut()
        cluster.processes["node3"].kill()
        # Then node3's buckets move in ZooKeeper while SQL is still down
        cluster.wait_for(lambda: sizes(cluster.zk()) == [50, 50], "failover without SQL", 60)
        failed_over = cluster.zk()
        assert set(failed_over) == {n1, n2}
        # And when SQL is back, it catches up with ZooKeeper
        proxy.restore()
        caught_up = cluster.wait_for(
            lambda: cluster.settled([50, 50], {n1, n2}), "SQL to catch up", 60
        )
        assert caught_up == failed_over
        assert_verified(cluster)
    finally:
        proxy.cut()


def test_foreign_data_in_zookeeper_never_stops_a_failover(cluster: LocalCluster) -> None:
    # Given three workers and beat
    n1, n2, n3 = (cluster.key(f"node{i}") for i in range(1, 4))
    for name in ("node1", "node2", "node3"):
        cluster.worker(name)
    cluster.beat()
    cluster.wait_for(lambda: cluster.settled([34, 33, 33], {n1, n2, n3}), "3 nodes", START)
    paths = ZkPaths(cluster.store.paths.root)
    # When a foreign writer adds an unknown bucket to node1, lists node2's first bucket under a
    # foreign entry, registers an Amoro AMS member, and node3 dies
    before = cluster.zk()
    listed = [str(bucket) for bucket in [*before[n1], 999]]
    cluster.client.set(paths.assignments(n1), json.dumps(listed).encode())
    taken = before[n2][0]
    cluster.client.create(paths.assignments("amoro-7@h"), f'["{taken}"]'.encode(), makepath=True)
    member = b'{"host":"10.0.0.7","restBindPort":1630,"thriftBindPort":1260}'
    cluster.client.create(f"{paths.nodes}/node-", member, ephemeral=True, sequence=True)
    cluster.processes["node3"].kill()
    # Then the failover still happens, the foreign data is repaired, and the Amoro member
    # gets nothing
    after = cluster.wait_for(lambda: cluster.settled([50, 50], {n1, n2}), "the failover", 60)
    owned = sorted(bucket for buckets in after.values() for bucket in buckets)
    assert owned == list(range(1, 101))
    assert taken in after[n2]
    assert_verified(cluster)

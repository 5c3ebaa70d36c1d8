"""End to end: real ``celery worker`` and ``celery beat`` processes, ZooKeeper, Redis, and
SQLite or PostgreSQL. Timeouts are short (2 s sessions, a few seconds of grace)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from pathlib import Path

from sqlalchemy import select

from allot.testing.cluster import LocalCluster, moved, watching_for_double_owners
from allot.zk.last_cycle import read_last_cycle
from models import Plan
from tests.cli import ALLOT_COMMAND, allot
from tests.e2e.conftest import SESSION_TIMEOUT, START

GRACE = 8.0  # long enough for a killed worker's cold restart, short enough for a quick failover


def test_join_death_and_restart_move_exactly_the_minimum(cluster: LocalCluster) -> None:
    cluster.env["ALLOT_NODE_OFFLINE_TIMEOUT"] = str(GRACE)
    n1, n2, n3, n4 = (cluster.key(f"node{i}") for i in range(1, 5))
    with watching_for_double_owners(cluster.zk) as double_owners:
        # Given three workers and beat: the first assignment is 34/33/33, in ZooKeeper and SQL
        for name in ("node1", "node2", "node3"):
            cluster.worker(name)
        cluster.beat()
        first = cluster.wait_for(
            lambda: cluster.settled([34, 33, 33], {n1, n2, n3}), "34/33/33", START
        )
        first_epoch = cluster.epoch()

        # When a fourth joins, exactly the minimum (25 buckets) move to it, and the change
        # triggers at most two cycles whatever the number of workers
        requested = cluster.count_in_logs("cycle requested")
        cluster.worker("node4")
        joined = cluster.wait_for(
            lambda: cluster.settled({n1: 25, n2: 25, n3: 25, n4: 25}), "25 each", START
        )
        assert moved(first, joined) == set(joined[n4])
        assert 1 <= cluster.count_in_logs("cycle requested") - requested <= 2
        with cluster.engine.connect() as connection:
            last = connection.execute(
                select(Plan.moves, Plan.min_moves).where(Plan.status == "applied")
                .order_by(Plan.epoch.desc()).limit(1)
            ).one()  # fmt: skip
        assert tuple(last) == (25, 25)

        # When node4 is killed, it keeps its buckets through the grace period, then exactly
        # its buckets move
        cluster.processes["node4"].kill()
        killed_at = cluster.epoch()
        cluster.wait_for(lambda: n4 not in cluster.client.get_children(cluster.store.paths.nodes),
                         "node4's session to expire", 10)  # fmt: skip
        assert cluster.zk() == joined  # suspect: nothing moved yet
        after_death = cluster.wait_for(
            lambda: cluster.settled([34, 33, 33], {n1, n2, n3}), "node4's buckets to move", 30
        )
        assert moved(joined, after_death) == set(joined[n4])
        assert cluster.epoch() == killed_at + 1

        # When node3 is killed and restarted within the grace period, nothing moves: a cycle
        # that started after it registered again finds it live and changes nothing
        epoch = cluster.epoch()
        killed = time.monotonic()
        cluster.processes["node3"].kill()
        cluster.worker("node3")
        cluster.wait_for(lambda: n3 in cluster.client.get_children(cluster.store.paths.nodes),
                         "node3 to register again", 30)  # fmt: skip
        back = dt.datetime.now(dt.UTC)
        assert time.monotonic() - killed < SESSION_TIMEOUT + GRACE, "restarted too late"
        report = cluster.wait_for(
            lambda: cycle_after(cluster, back, n3), "a cycle that sees node3 back", 30
        )
        assert report["outcome"] == "unchanged"
        assert cluster.zk() == after_death
        assert cluster.sql() == after_death
        assert cluster.epoch() == epoch

    assert double_owners == []
    assert first_epoch >= 1


def cycle_after(cluster: LocalCluster, moment: dt.datetime, live: str) -> dict[str, object] | None:
    """The last published cycle report, once it is of a cycle that started after ``moment``
    and found ``live`` live."""
    report = read_last_cycle(cluster.client, cluster.store.paths)
    if report is None or not report.get("started_at") or live not in report.get("live", []):
        return None
    started = dt.datetime.fromisoformat(str(report["started_at"]))
    return report if started > moment else None


def test_manual_rebalances_serialize_and_a_stale_dry_run_is_refused(
    cluster: LocalCluster,
) -> None:
    n1, n2 = cluster.key("node1"), cluster.key("node2")
    # every cycle holds the lock 1.5 s, so a second rebalance sent meanwhile goes to the other
    # (idle) worker and must wait for the lock there
    for name in ("node1", "node2"):
        cluster.worker(name, app="tests.e2e.pausing_app", ALLOT_E2E_HOLD_LOCK="1.5")
    cluster.wait_for(lambda: cluster.settled({n1: 50, n2: 50}), "50/50", START)

    # Two `allot rebalance` at once: both run (neither is skipped), on two workers, one after
    # the other
    command = [*ALLOT_COMMAND, "rebalance", "--format", "json", "--timeout", "60"]
    calls = [
        subprocess.Popen(command, env=cluster.env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    reports = [json.loads(call.communicate(timeout=90)[0]) for call in calls]
    assert [r["outcome"] for r in reports] == ["unchanged", "unchanged"]
    first, second = sorted(reports, key=lambda r: r["started_at"])
    assert first["worker"] != second["worker"]
    assert first["finished_at"] <= second["started_at"]

    # A dry run, then a membership change: applying the plan is refused as stale
    dry = allot("rebalance", "--dry-run", "--format", "json", env=cluster.env)
    assert dry.returncode == 0, dry.stderr
    plan_id = json.loads(dry.stdout)["plan_id"]
    cluster.worker("node3")
    cluster.wait_for(lambda: cluster.settled([34, 33, 33]), "3 nodes", START)
    refused = allot("plans", "apply", plan_id[:10], "--format", "json", env=cluster.env)
    assert refused.returncode == 1
    report = json.loads(refused.stdout)
    assert report["outcome"] == "rejected"
    assert "stale" in report["reason"]
    shown = json.loads(allot("plans", "show", plan_id, "-f", "json", env=cluster.env).stdout)
    assert shown["status"] == "rejected"

    status = json.loads(allot("status", "--format", "json", env=cluster.env).stdout)
    assert [n["state"] for n in status["nodes"]] == ["live", "live", "live"]
    assert status["last_cycle"]["outcome"] in ("applied", "unchanged")


def test_a_crash_between_zookeeper_and_sql_converges(cluster: LocalCluster, tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    node = cluster.key("node1")
    cluster.worker("node1", app="tests.e2e.crashing_app", ALLOT_E2E_CRASH_MARKER=str(marker))
    cluster.wait_for(marker.exists, "the injected crash", START)
    crashed_plan = marker.read_text()
    cluster.beat()

    settled = cluster.wait_for(lambda: cluster.settled({node: 100}), "SQL to catch up", START)

    assert settled == {node: list(range(1, 101))}
    with cluster.engine.connect() as connection:
        rows = connection.execute(select(Plan.plan_id, Plan.status, Plan.epoch)).all()
    assert [tuple(row) for row in rows] == [(crashed_plan, "applied", 1)]


def test_two_beats_at_once_are_harmless(cluster: LocalCluster, tmp_path: Path) -> None:
    # Given two workers and TWO beat processes (a deployment mistake)
    n1, n2 = cluster.key("node1"), cluster.key("node2")
    for name in ("node1", "node2"):
        cluster.worker(name)
    cluster.beat()
    second = cluster.group.celery(
        "beat2", ["beat", "--schedule", str(tmp_path / "second-schedule"), "-l", "INFO"],
        cluster.env,
    )  # fmt: skip
    settled = cluster.wait_for(lambda: cluster.settled({n1: 50, n2: 50}), "50/50", START)
    epoch = cluster.epoch()
    # When both send their ticks for four intervals
    with watching_for_double_owners(cluster.zk) as double_owners:
        received = cluster.count_in_logs("allot.assign")
        cluster.wait_for(
            lambda: cluster.count_in_logs("Sending due task") >= 8, "eight beat ticks", 60
        )
        cluster.wait_for(
            lambda: cluster.count_in_logs("allot.assign") >= received + 8, "their cycles", 60
        )
    # Then every tick ran or was skipped, nothing moved, and no bucket ever had two owners
    assert second.returncode is None
    assert cluster.zk() == settled
    assert cluster.sql() == settled
    assert cluster.epoch() == epoch
    assert double_owners == []
    assert cluster.count_in_logs("Traceback") == 0

"""`make run` as a newcomer uses it: the cluster comes up, the three gestures work, Ctrl-C stops it.

The real command (``make run``: scripts/ensure-services.sh --run, then scripts/run.sh and honcho
with the Procfile) in a session of its own, with its data under the test's temporary directory
(``VAR_DIR``). ZooKeeper is on a free port where nothing answers, so make run starts its own;
Redis is the session's server, which make run must use as it is and leave running.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from allot.testing.processes import (
    ROOT,
    VENV_BIN,
    Processes,
    empty_redis,
    flower_tasks,
    http,
    http_json,
    inherited_env,
)
from allot.testing.prometheus import by_label
from allot.testing.servers import (
    ServerProcess,
    free_port,
    free_ports_in_a_row,
    redis_answers,
    zookeeper_answers,
)
from tests.e2e.proctree import still_running, watching_tree


def status(env: dict[str, str]) -> dict[str, Any] | None:
    """``allot status --format json``, None while it cannot answer."""
    result = subprocess.run(
        [str(VENV_BIN / "allot"), "status", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        return None
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_make_run_brings_up_the_cluster_and_ctrl_c_stops_everything(
    processes: Processes, redis_server: ServerProcess, tmp_path: Path
) -> None:
    empty_redis(redis_server)
    zk_port, flower_port, prometheus_port = free_port(), free_port(), free_port()
    metrics_base = free_ports_in_a_row(3)
    env = inherited_env() | {
        "VAR_DIR": str(tmp_path / "var"),
        "ALLOT_DATABASE_URL": f"sqlite:///{tmp_path / 'allot.db'}",
        "ALLOT_ZK_HOSTS": f"127.0.0.1:{zk_port}",
        "ALLOT_BROKER_URL": f"redis://{redis_server.address}/0",
        "FLOWER_PORT": str(flower_port),
        "METRICS_BASE_PORT": str(metrics_base),
        "ALLOT_PROMETHEUS": "1",
        "PROMETHEUS_PORT": str(prometheus_port),
    }
    base = f"http://127.0.0.1:{flower_port}"

    # Given `make run` in a terminal of its own
    make = processes.start("make-run", ["make", "--no-print-directory", "run"], env)
    with watching_tree(make.pid) as tree:
        try:
            # When it says the cluster is running
            processes.wait_for(
                lambda: "allot is running" in make.output(), "make run's summary", timeout=120
            )
            credentials = (tmp_path / "var" / "flower" / "basic-auth").read_text().strip()
            summary = make.output()
            assert f"{base}   user:password {credentials}" in summary
            assert "1,000 table(s) registered" in summary
            assert f"127.0.0.1:{zk_port} (started by make run" in summary
            assert f"{redis_server.address}/0 (already running: used as it is)" in summary
            for hint in ("allot status", "allot rebalance --dry-run", "table_assignment"):
                assert hint in summary

            # Then `allot status` shows three live nodes sharing the 100 buckets
            def three_nodes_share_the_buckets() -> dict[str, Any] | None:
                state = status(env)
                if state is None or state["unowned"] != 0:
                    return None
                live = [n for n in state["nodes"] if n["state"] == "live"]
                return state if len(live) == 3 else None

            state = processes.wait_for(
                three_nodes_share_the_buckets, "allot status: 3 live nodes", timeout=90
            )
            keys = sorted(n["node_key"] for n in state["nodes"])
            assert [k.split("@")[0] for k in keys] == ["node1", "node2", "node3"]

            # And Flower shows the runs, to the right credentials only
            assert http("GET", f"{base}/api/tasks")[0] == 401
            processes.wait_for(
                lambda: any(
                    task["state"] == "SUCCESS"
                    for task in flower_tasks(base, credentials, taskname="allot.assign").values()
                ),
                "Flower to show a successful allot.assign",
                timeout=60,
            )

            # And a rebalance can be triggered through Flower's API, as the README shows
            sent = http_json(
                "POST",
                f"{base}/api/task/async-apply/allot.rebalance",
                auth=credentials,
                body={"kwargs": {"dry_run": True}},
            )
            processes.wait_for(
                lambda: (
                    flower_tasks(base, credentials).get(sent["task-id"], {}).get("state")
                    == "SUCCESS"
                ),
                "the dry-run rebalance to succeed",
                timeout=60,
            )

            # And the README's SQL query answers which node owns the tables
            with sqlite3.connect(tmp_path / "allot.db") as connection:
                rows = connection.execute(
                    "SELECT node_key, count(*) FROM table_assignment GROUP BY node_key"
                ).fetchall()
            assert sorted(node for node, _ in rows) == keys
            assert sum(count for _, count in rows) == 1000

            # And the demo's table work runs on all three nodes, each table on its owner
            def compacted_by() -> list[tuple[str, int]] | None:
                with sqlite3.connect(tmp_path / "allot.db") as connection:
                    found = connection.execute(
                        "SELECT r.node_key, count(*) FROM table_task_run r"
                        " JOIN table_assignment a USING (table_id)"
                        " WHERE r.status = 'committed' AND r.node_key = a.node_key"
                        " GROUP BY r.node_key"
                    ).fetchall()
                return found if len(found) == 3 else None

            processes.wait_for(compacted_by, "demo.compact runs on the three nodes", timeout=90)

            # And Flower shows those runs, each table's run a task of its own (the tick fans
            # out: demo.compact with the table as its argument), on the three nodes
            def runs_by_worker() -> set[str] | None:
                runs = flower_tasks(base, credentials, taskname="demo.compact").values()
                found = {
                    t["worker"].split("@")[0]
                    for t in runs
                    if t["state"] == "SUCCESS" and ("hive." in t["args"] or "iceberg." in t["args"])
                }
                return found if found == {"node1", "node2", "node3"} else None

            processes.wait_for(
                runs_by_worker, "Flower to show table runs on every node", timeout=30
            )

            # And a table task sent through Flower's API runs once, on the table's owner
            sent = http_json(
                "POST",
                f"{base}/api/task/async-apply/demo.compact",
                auth=credentials,
                body={"args": ["hive.sales.orders"], "kwargs": {"max_ms": 30}},
            )

            def run_of_flower_call() -> list[tuple[str, str, str]] | None:
                with sqlite3.connect(tmp_path / "allot.db") as connection:
                    found = connection.execute(
                        "SELECT r.status, r.node_key, a.node_key FROM table_task_run r"
                        " JOIN table_assignment a USING (table_id) WHERE r.run_id = ?",
                        (sent["task-id"],),
                    ).fetchall()
                return found if found and all(row[0] != "running" for row in found) else None

            [(run_status, ran_on, owner)] = processes.wait_for(
                run_of_flower_call, "the table task sent through Flower", timeout=90
            )
            assert (run_status, ran_on) == ("committed", owner)
            # an unregistered table is refused in the sender: nothing is sent
            refused, _ = http(
                "POST",
                f"{base}/api/task/async-apply/demo.compact",
                auth=credentials,
                body={"args": ["hive.sales.nope"]},
            )
            assert refused != 200

            # And Prometheus (ALLOT_PROMETHEUS=1) has every node's metrics: the buckets they hold
            prometheus = f"127.0.0.1:{prometheus_port}"

            def nodes_in_prometheus() -> dict[str, float] | None:
                found = by_label(prometheus, "sum by(node) (allot_node_buckets)", "node")
                scraped = by_label(prometheus, 'up{job="allot"}', "instance")
                if sorted(found) != keys or sorted(scraped.values()) != [1.0, 1.0, 1.0]:
                    return None
                return found if sum(found.values()) == 100 else None

            processes.wait_for(nodes_in_prometheus, "Prometheus to scrape 3 nodes", timeout=60)

            # When the operator presses Ctrl-C (SIGINT to the terminal's process group)
            make.signal_group(signal.SIGINT)
            processes.wait_for(lambda: not make.running, "make run to stop", timeout=30)
        finally:
            leftovers = still_running(tree)
            for line in leftovers:  # never leave a process behind, even when the test failed
                os.kill(int(line.split(":")[0]), signal.SIGKILL)

    # Then everything it started has stopped cleanly, and the Redis it reused still runs
    assert leftovers == [], leftovers
    assert "== stopped" in make.output()
    assert "SIGKILL" not in make.output()
    assert not zookeeper_answers("127.0.0.1", zk_port)
    assert http("GET", f"{base}/healthcheck")[0] == 0
    assert redis_answers(redis_server.host, redis_server.port)
    assert ROOT.joinpath("Procfile").exists()

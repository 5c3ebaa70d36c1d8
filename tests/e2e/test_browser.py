"""The operator's first gesture, in a real browser: watch the assignment runs in Flower.

A local cluster (the session's ZooKeeper and Redis, a SQLite database, one worker node, beat
every 2 s and Flower with allot's flowerconfig.py) runs two cycles; headless Chromium (Debian's
``chromium``, installed by ``make test``) opens Flower's task page with the basic-auth
credentials, and the rendered page must list the ``allot.assign`` runs with their results. The
screenshot is kept in the test's temporary directory (``flower-tasks.png``).
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

from allot.testing.databases import migrated_sqlite
from allot.testing.processes import Processes, flower_env, flower_tasks, fresh_allot_env
from allot.testing.servers import ServerProcess, free_port
from tests.e2e.browser import WINDOW, chromium, png_size

ROW = re.compile(r'<tr id="(?P<id>[0-9a-f-]{36})"[^>]*>(?P<cells>.*?)</tr>', re.DOTALL)
SUMMARY = re.compile(r"(applied|unchanged|skipped) \((beat|membership|[a-z]+)\): epoch \d+")


def test_flower_shows_the_assignment_runs_with_their_results(
    processes: Processes,
    zookeeper: ServerProcess,
    redis_server: ServerProcess,
    zk_root: str,
    tmp_path: Path,
) -> None:
    user, password = "operator", secrets.token_urlsafe(12)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = fresh_allot_env(
        zookeeper,
        redis_server,
        zk_root=zk_root,
        database_url=migrated_sqlite(tmp_path),
        assign_interval="2",
    )
    flower_variables = flower_env(port, f"{user}:{password}", tmp_path / "flower" / "flower.db")

    # Given a node, beat every 2 s and Flower
    processes.flower(env | flower_variables)
    processes.worker("node1", env, "--without-mingle", "--without-gossip")
    processes.beat(tmp_path / "celerybeat-schedule", env)
    processes.wait_for_http(f"{base}/healthcheck")

    # When two assignment cycles have run
    def two_runs() -> list[str] | None:
        tasks = flower_tasks(base, f"{user}:{password}", taskname="allot.assign")
        done = [tid for tid, task in tasks.items() if task["state"] == "SUCCESS"]
        return done if len(done) >= 2 else None

    runs = processes.wait_for(two_runs, "two allot.assign runs in Flower", timeout=90)

    # Then Flower's task page, rendered by a browser that logs in with the credentials, lists
    # them with a readable result
    page = f"http://{user}:{password}@127.0.0.1:{port}/tasks"

    def rendered_rows() -> dict[str, str] | None:
        dumped = chromium(page, tmp_path, "--dump-dom")
        rows = {m["id"]: m["cells"] for m in ROW.finditer(dumped.stdout)}
        return rows if set(runs) <= set(rows) else None

    rows: dict[str, Any] = processes.wait_for(
        rendered_rows, "the runs in the page Chromium rendered", timeout=60
    )
    for task_id in runs:
        cells = rows[task_id]
        assert "allot.assign" in cells
        assert "SUCCESS" in cells
        assert "node1@" in cells
        assert SUMMARY.search(cells), cells  # e.g. "applied (membership): epoch 1, 1 live, ..."

    # And a screenshot of the page shows them (kept for a person to look at)
    screenshot = tmp_path / "flower-tasks.png"
    shot = chromium(page, tmp_path, f"--screenshot={screenshot}")
    assert screenshot.exists(), shot.stderr[-2000:]
    assert png_size(screenshot) == WINDOW
    assert screenshot.stat().st_size > 20_000  # a blank or error page compresses to far less

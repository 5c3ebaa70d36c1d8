"""Flower as allot runs it (flowerconfig.py): basic auth always, a history that survives a crash.

Real processes: one ``celery -A tasks worker`` node and ``celery -A tasks flower`` on the
session's ZooKeeper and Redis, a fresh SQLite database and ZooKeeper root per test.
"""

from __future__ import annotations

import runpy
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from allot.testing.databases import migrated_sqlite
from allot.testing.processes import (
    FLOWER_CONFIG,
    Processes,
    flower_env,
    flower_tasks,
    fresh_allot_env,
    http,
    http_json,
)
from allot.testing.servers import ServerProcess, free_port

SAVE_INTERVAL_MS = 500


@pytest.fixture
def env(
    zookeeper: ServerProcess, redis_server: ServerProcess, zk_root: str, tmp_path: Path
) -> dict[str, str]:
    """This test's servers, ZooKeeper root and a migrated SQLite database; an empty Redis."""
    return fresh_allot_env(
        zookeeper, redis_server, zk_root=zk_root, database_url=migrated_sqlite(tmp_path)
    )


def saved_after(db: Path, moment: float) -> bool:
    """True when Flower's state file(s) were written after ``moment`` (``time.time()``)."""
    files = [p for p in db.parent.glob(db.name + "*") if ".tmp" not in p.name]
    return bool(files) and min(p.stat().st_mtime for p in files) > moment


def test_flowerconfig_defaults_are_safe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Given only the credentials, as make run and docker compose give them
    for name in ("FLOWER_ADDRESS", "FLOWER_PORT", "FLOWER_DB", "FLOWER_MAX_TASKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("FLOWER_STATE_SAVE_INTERVAL", raising=False)
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "user:password")

    # When Flower reads its configuration file (a copy: its default db is beside it, under var/)
    config = tmp_path / "checkout" / "flowerconfig.py"
    config.parent.mkdir()
    config.write_text(FLOWER_CONFIG.read_text())
    options = runpy.run_path(str(config))

    # Then it listens on loopback only, keeps a bounded, persistent history under var/ saved
    # every few seconds, and shows each task's result
    assert (options["address"], options["port"]) == ("127.0.0.1", 5555)
    assert options["persistent"] is True
    assert 0 < options["state_save_interval"] <= 5000
    assert 0 < options["max_tasks"] <= 100_000
    assert options["db"] == str(config.parent / "var" / "flower" / "flower.db")
    assert (config.parent / "var" / "flower").is_dir()
    assert "result" in options["tasks_columns"].split(",")
    assert "basic_auth" not in options  # Flower reads FLOWER_BASIC_AUTH itself

    # And the environment overrides a value, as docker compose does for the address
    monkeypatch.setenv("FLOWER_ADDRESS", "0.0.0.0")
    monkeypatch.setenv("FLOWER_DB", str(tmp_path / "elsewhere" / "flower.db"))
    options = runpy.run_path(str(config))
    assert options["address"] == "0.0.0.0"
    assert options["db"] == str(tmp_path / "elsewhere" / "flower.db")


def test_flower_lists_a_cycle_with_a_one_line_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "user:password")
    options = runpy.run_path(str(FLOWER_CONFIG))
    report = {
        "outcome": "applied", "trigger": "membership", "epoch": 3, "plan_id": "0123456789abcdef",
        "live": ["a@h", "b@h"], "suspect": ["c@h"], "offline": [], "moves": 1, "reason": None,
    }  # fmt: skip

    class Task:
        name = "allot.assign"
        result = repr(report)

    shown = options["format_task"](Task())
    assert shown.result == (
        "applied (membership): epoch 3, 2 live, 1 suspect, 1 move, plan 0123456789ab | "
        + repr(report)
    )
    other = Task()
    other.name = "celery.accumulate"
    assert options["format_task"](other).result == repr(report)
    broken = Task()
    broken.result = "<unreadable>"
    assert options["format_task"](broken).result == "<unreadable>"


def test_flower_refuses_to_start_without_credentials(
    processes: Processes, env: dict[str, str], tmp_path: Path
) -> None:
    # Given Flower's variables without FLOWER_BASIC_AUTH
    variables = flower_env(free_port(), "", tmp_path / "flower.db")
    del variables["FLOWER_BASIC_AUTH"]

    # When it starts
    flower = processes.flower(env | variables)

    # Then it exits at once, saying what to set
    processes.wait_for(lambda: not flower.running, "Flower to exit", timeout=30)
    assert flower.returncode != 0
    assert "set FLOWER_BASIC_AUTH=user:password" in flower.output()


def test_flower_keeps_the_history_of_runs_across_a_crash(
    processes: Processes, env: dict[str, str], tmp_path: Path
) -> None:
    auth = f"operator:{secrets.token_urlsafe(12)}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    db = tmp_path / "flower" / "flower.db"
    flower_variables = env | flower_env(port, auth, db, SAVE_INTERVAL_MS)

    # Given a worker node and Flower with a persistent history
    worker = processes.worker("node1", env, "--without-mingle", "--without-gossip")
    processes.flower(flower_variables)
    processes.wait_for_http(f"{base}/healthcheck")

    # Then Flower refuses requests without the right credentials
    assert http("GET", f"{base}/api/tasks")[0] == 401
    assert http("GET", f"{base}/api/tasks", auth="operator:wrong")[0] == 401
    assert http("GET", f"{base}/tasks")[0] == 401

    # When an operator triggers a dry-run rebalance through Flower's API and it succeeds
    sent = http_json(
        "POST",
        f"{base}/api/task/async-apply/allot.rebalance",
        auth=auth,
        body={"kwargs": {"dry_run": True}},
    )
    task_id = sent["task-id"]

    def succeeded() -> dict[str, Any] | None:
        task = flower_tasks(base, auth).get(task_id)
        return task if task and task["state"] == "SUCCESS" else None

    before = processes.wait_for(succeeded, "the rebalance to succeed in Flower", timeout=60)
    seen_at = time.time()
    assert before["name"] == "allot.rebalance"
    assert "'dry_run': True" in before["kwargs"]

    # And Flower crashes (SIGKILL) after its next periodic save, with the worker gone too, so
    # nothing can tell the new Flower about that task but its saved state
    processes.wait_for(lambda: saved_after(db, seen_at), "Flower to save its state", timeout=10)
    processes.started[-1].kill()
    worker.stop()
    processes.flower(flower_variables, name="flower-restarted")
    processes.wait_for_http(f"{base}/healthcheck")

    # Then the restarted Flower lists the run as it was
    after = processes.wait_for(succeeded, "the run to be listed after the restart", timeout=10)
    for key in ("name", "state", "kwargs", "result", "received", "succeeded", "worker"):
        assert after[key] == before[key], key

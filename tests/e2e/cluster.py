"""A real local cluster for end-to-end tests: ``celery worker`` and ``celery beat`` processes
against the session's ZooKeeper and Redis and a fresh database, plus observers that read the
assignment from ZooKeeper and SQL."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient
from sqlalchemy import Engine, select

from allot.zk.paths import ZkPaths
from allot.zk.store import AssignmentStore
from models import Bucket

ROOT = Path(__file__).resolve().parents[2]
HOST = socket.gethostname()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll until ``predicate()`` is truthy and return its value; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Process:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as output:
            self.popen = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        """``kill -9`` of the whole group: the worker and its pool children die at once."""
        if self.alive:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """A clean stop (SIGTERM: Celery's warm shutdown), then SIGKILL if it hangs."""
        if self.alive:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        else:
            # the group may still hold children of a process that died alone
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class LocalCluster:
    """Workers and beat of one test, with a ZooKeeper client and an engine to observe."""

    def __init__(
        self, workdir: Path, env: dict[str, str], client: KazooClient, engine: Engine, root: str
    ) -> None:
        self.workdir = workdir
        self.env = env
        self.client = client
        self.engine = engine
        self.store = AssignmentStore(client, ZkPaths(root))
        self.processes: dict[str, Process] = {}

    @staticmethod
    def key(name: str) -> str:
        """The node key of worker ``name`` (Celery's ``name@host``)."""
        return f"{name}@{HOST}"

    def worker(self, name: str, app: str = "tasks", **extra_env: str) -> Process:
        command = [
            sys.executable, "-m", "celery", "-A", app, "worker", "-n", f"{name}@%h",
            "-c", "1", "-l", "info", "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        return self._start(name, command, extra_env)

    def beat(self) -> Process:
        schedule = self.workdir / "celerybeat-schedule"
        command = [sys.executable, "-m", "celery", "-A", "tasks", "beat", "-s", str(schedule)]
        return self._start("beat", command, {})

    def _start(self, name: str, command: list[str], extra_env: dict[str, str]) -> Process:
        log = self.workdir / f"{name}.log"
        process = Process(name, command, self.env | extra_env, log)
        self.processes[name] = process
        return process

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.stop(timeout=10)

    def count_in_logs(self, text: str) -> int:
        """How many lines of all the processes' logs contain ``text``."""
        return sum(
            line.count(text) > 0
            for process in self.processes.values()
            for line in process.log.read_text(errors="replace").splitlines()
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{process.tail()}" for name, process in self.processes.items()
        )

    # -- observing ---------------------------------------------------------------------------

    def zk(self) -> dict[str, list[int]]:
        """The assignment in ZooKeeper (nodes holding at least one bucket)."""
        return {k: v for k, v in self.store.read_all().buckets_by_node().items() if v}

    def epoch(self) -> int:
        return self.store.read_version().epoch

    def sql(self) -> dict[str, list[int]]:
        owners: dict[str, list[int]] = {}
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(Bucket.bucket_id, Bucket.node_key).order_by(Bucket.bucket_id)
            )
            for bucket, node in rows:
                if node is not None:
                    owners.setdefault(node, []).append(bucket)
        return owners

    def settled(
        self, expected: dict[str, int] | list[int], nodes: set[str] | None = None
    ) -> dict[str, list[int]] | None:
        """The assignment once ZooKeeper and SQL agree on it and it has the expected sizes,
        else None.

        ``expected`` is either ``{node: buckets}`` or the sizes alone, largest first (which
        node gets the larger share depends on the order nodes joined), then over ``nodes``.
        """
        zk = self.zk()
        counts = {k: len(v) for k, v in zk.items()}
        if isinstance(expected, dict):
            matches = counts == expected
        else:
            matches = sorted(counts.values(), reverse=True) == expected and (
                nodes is None or set(counts) == nodes
            )
        if not matches or zk != self.sql():
            return None
        return zk


def no_double_owner(assignment: dict[str, list[int]]) -> bool:
    """True when no bucket appears under two nodes."""
    buckets = [bucket for owned in assignment.values() for bucket in owned]
    return len(buckets) == len(set(buckets))

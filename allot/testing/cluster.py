"""A real local cluster for end-to-end tests and benchmarks: ``celery worker`` and ``celery
beat`` processes against given ZooKeeper, Redis and database, plus observers that read the
assignment from ZooKeeper and SQL."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from kazoo.client import KazooClient
from sqlalchemy import Engine, select

from allot.cycle import AssignmentCycle
from allot.settings import Settings
from allot.testing.processes import ManagedProcess, Processes
from allot.zk.paths import ZkPaths
from allot.zk.store import AssignmentStore
from models import Bucket
from models.engine import session_factory

T = TypeVar("T")

HOST = socket.gethostname()
# Worker options that only shorten start-up (no peers to sync with in a test).
QUICK_START = ("--without-mingle", "--without-gossip")


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
        self.group = Processes(workdir / "logs")
        self.processes: dict[str, ManagedProcess] = {}

    @staticmethod
    def key(name: str) -> str:
        """The node key of worker ``name`` (Celery's ``name@host``)."""
        return f"{name}@{HOST}"

    def worker(self, name: str, app: str = "tasks", **extra_env: str) -> ManagedProcess:
        process = self.group.worker(name, self.env | extra_env, *QUICK_START, app=app)
        self.processes[name] = process
        return process

    def beat(self) -> ManagedProcess:
        process = self.group.beat(self.workdir / "celerybeat-schedule", self.env)
        self.processes["beat"] = process
        return process

    def wait_for(self, predicate: Callable[[], T | None], what: str, timeout: float) -> T:
        """Poll until ``predicate()`` is truthy (see :meth:`Processes.wait_for`)."""
        return self.group.wait_for(predicate, what, timeout)

    def stop_all(self) -> None:
        self.group.stop_all()

    def count_in_logs(self, text: str) -> int:
        """How many lines of all the processes' logs contain ``text``."""
        return sum(
            text in line for process in self.group.started for line in process.output().splitlines()
        )

    def logs(self) -> str:
        return self.group.report()

    # -- observing ---------------------------------------------------------------------------

    def zk(self) -> dict[str, list[int]]:
        """The assignment in ZooKeeper (nodes holding at least one bucket)."""
        return zk_assignment(self.store)

    def epoch(self) -> int:
        return self.store.read_version().epoch

    def sql(self) -> dict[str, list[int]]:
        """The assignment in SQL's ``bucket`` table (nodes holding at least one bucket)."""
        return sql_assignment(self.engine)

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


def steady_cycles(
    client: KazooClient, engine: Engine, settings: Settings, count: int
) -> list[float]:
    """Run ``count`` cycles in this process on a settled cluster; their durations in ms.

    Raises:
        AssertionError: a cycle did something else than find nothing to move.
    """
    cycle = AssignmentCycle(client, session_factory(engine), settings)
    durations = []
    for _ in range(count):
        began = time.perf_counter()
        report = cycle.run("bench", lock_timeout=30)
        durations.append((time.perf_counter() - began) * 1000)
        assert report.outcome == "unchanged", report.headline()
    return durations


def zk_assignment(store: AssignmentStore) -> dict[str, list[int]]:
    """The assignment in ZooKeeper: ``{node: buckets}`` of the nodes holding at least one."""
    return {k: v for k, v in store.read_all().buckets_by_node().items() if v}


def sql_assignment(engine: Engine) -> dict[str, list[int]]:
    """The assignment in SQL's ``bucket`` table: ``{node: buckets}``, bucket ids in order."""
    owners: dict[str, list[int]] = {}
    with engine.connect() as connection:
        rows = connection.execute(
            select(Bucket.bucket_id, Bucket.node_key).order_by(Bucket.bucket_id)
        )
        for bucket, node in rows:
            if node is not None:
                owners.setdefault(node, []).append(bucket)
    return owners


def round_robin(keys: list[str], buckets: int) -> dict[str, list[int]]:
    """Buckets ``1..buckets`` dealt round-robin over ``keys``: a balanced assignment."""
    dealt: dict[str, list[int]] = {key: [] for key in keys}
    for bucket in range(1, buckets + 1):
        dealt[keys[(bucket - 1) % len(keys)]].append(bucket)
    return dealt


def no_double_owner(assignment: dict[str, list[int]]) -> bool:
    """True when no bucket appears under two nodes."""
    buckets = [bucket for owned in assignment.values() for bucket in owned]
    return len(buckets) == len(set(buckets))

"""A real local cluster for end-to-end tests and benchmarks: ``celery worker`` and ``celery
beat`` processes against given ZooKeeper, Redis and database, plus observers that read the
assignment from ZooKeeper and SQL, compare two readings, and watch for a bucket with two
owners."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from kazoo.client import KazooClient
from sqlalchemy import Engine, select

from allot.cycle import AssignmentCycle
from allot.settings import Settings
from allot.testing.polling import repeating
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
    """Workers and beat of one test or benchmark, with a ZooKeeper client and an engine to
    observe them; ``settings`` are this process's (its client's, and those of the cycles
    :func:`steady_cycles` runs), ``env`` the processes'."""

    def __init__(
        self,
        workdir: Path,
        env: dict[str, str],
        client: KazooClient,
        engine: Engine,
        settings: Settings,
    ) -> None:
        self.workdir = workdir
        self.env = env
        self.client = client
        self.engine = engine
        self.settings = settings
        self.store = AssignmentStore(client, ZkPaths(settings.zk_root))
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

    def wait_for(
        self,
        predicate: Callable[[], T | None],
        what: str,
        timeout: float,
        interval: float | None = None,
    ) -> T:
        """Poll until ``predicate()`` is truthy (see :meth:`Processes.wait_for`)."""
        return self.group.wait_for(predicate, what, timeout, interval)

    def stop_all(self) -> None:
        self.group.stop_all()

    def count_in_logs(self, text: str, *more: str) -> int:
        """How many lines of all the processes' logs contain ``text`` (and each of ``more``)."""
        texts = (text, *more)
        return sum(
            all(t in line for t in texts)
            for process in self.group.started
            for line in process.output().splitlines()
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
        if isinstance(expected, dict):
            matches = {k: len(v) for k, v in zk.items()} == expected
        else:
            matches = sizes(zk) == expected and (nodes is None or set(zk) == nodes)
        if not matches or zk != self.sql():
            return None
        return zk


def steady_cycles(cluster: LocalCluster, count: int) -> list[float]:
    """Run ``count`` cycles in this process on a settled cluster (with ``cluster.settings``);
    their durations in ms.

    Raises:
        AssertionError: a cycle did something else than find nothing to move.
    """
    cycle = AssignmentCycle(cluster.client, session_factory(cluster.engine), cluster.settings)
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


def sizes(assignment: dict[str, list[int]]) -> list[int]:
    """How many buckets each node holds, largest first."""
    return sorted((len(buckets) for buckets in assignment.values()), reverse=True)


def moved(before: dict[str, list[int]], after: dict[str, list[int]]) -> set[int]:
    """The buckets that ``after`` places on another node than ``before`` (or on a node at all,
    when ``before`` had no owner for them)."""
    owner = {b: node for node, buckets in before.items() for b in buckets}
    return {b for node, buckets in after.items() for b in buckets if owner.get(b) != node}


def listed_twice(assignment: dict[str, list[int]]) -> int:
    """How many entries repeat a bucket listed before them: 0 when no bucket has two owners."""
    buckets = [bucket for owned in assignment.values() for bucket in owned]
    return len(buckets) - len(set(buckets))


@contextlib.contextmanager
def watching_for_double_owners(
    read: Callable[[], dict[str, list[int]]], interval: float = 0.02
) -> Iterator[list[dict[str, list[int]]]]:
    """Call ``read`` (``LocalCluster.zk``) every ``interval`` seconds while the block runs; the
    list it yields collects every reading in which a bucket has two owners.

    A read that raises is skipped: the server it asked may be the one a fault took down.
    """
    bad: list[dict[str, list[int]]] = []

    def observe() -> None:
        try:
            seen = read()
        except Exception:
            return
        if listed_twice(seen):
            bad.append(seen)

    with repeating(observe, interval):
        yield bad

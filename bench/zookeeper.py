"""ZooKeeper store benchmark: read every assignment, apply plans, measure request sizes.

Starts its own ZooKeeper (``allot.testing.start_zookeeper``, the Debian jars) in a temporary
directory and stops it at the end. For 100 and 1,000 nodes sharing 16,384 buckets it times:

- ``read_all``: every node's ``assignments`` and ``last-update-time`` plus the version
  (pipelined ``get_async``);
- ``apply initial``: the first full write (every node's entry created) in one fenced
  transaction, holding the assignment lock (its znode is checked inside the transaction);
- ``apply join``: one node joins and takes its share from the fullest nodes (the fewest
  moves), so only the nodes that change are written.

The last rows show worst cases: nodes with the longest keys allowed (128 characters) and
digest ACLs (every create carries the ACL). 1,000 such nodes still fit one request; 2,000 do
not fit ZooKeeper's 1 MB request limit and are applied in fenced steps.
Each case runs on a fresh root, ``--repeats`` times; the table shows the median and the size
of the largest request against ``jute.maxbuffer`` (1,048,575 bytes).

Run: ``.venv/bin/python bench/zookeeper.py [--record bench/RESULTS.md]``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from allot.settings import Settings
from allot.testing.cluster import round_robin
from allot.testing.servers import ServerProcess, start_zookeeper
from allot.zk import (
    DEFAULT_MAX_REQUEST_BYTES,
    AllAssignments,
    ApplyResult,
    AssignmentLock,
    AssignmentStore,
    LockGuard,
    ZkPaths,
    connect,
)
from bench.results import machine, record_section

BUCKETS = 16_384


@dataclass
class Row:
    case: str
    nodes: int
    seconds: list[float]
    transactions: int = 0
    request_bytes: int = 0
    written: int = 0


def spread(keys: list[str], buckets: int = BUCKETS) -> dict[str, list[int]]:
    """The balanced initial assignment of these tests: buckets dealt round-robin."""
    return round_robin(keys, buckets)


def join(plan: dict[str, list[int]], newcomer: str) -> dict[str, list[int]]:
    """``newcomer`` takes its share, one bucket at a time from the fullest node."""
    after = {k: list(v) for k, v in plan.items()}
    after[newcomer] = []
    share = sum(len(v) for v in plan.values()) // len(after)
    while len(after[newcomer]) < share:
        fullest = max(plan, key=lambda k: (len(after[k]), k))
        after[newcomer].append(after[fullest].pop())
    return after


def timed_apply(
    store: AssignmentStore,
    snapshot: AllAssignments,
    plan: dict[str, list[int]],
    plan_id: str,
    guard: LockGuard | None = None,
) -> tuple[float, ApplyResult]:
    started = time.perf_counter()
    result = store.apply(snapshot, plan, plan_id=plan_id, guard=guard)
    return time.perf_counter() - started, result


def timed_read(store: AssignmentStore) -> tuple[float, AllAssignments]:
    started = time.perf_counter()
    snapshot = store.read_all()
    return time.perf_counter() - started, snapshot


def note(row: Row, seconds: float, result: ApplyResult) -> None:
    row.seconds.append(seconds)
    row.transactions = result.transactions
    row.request_bytes = max(result.request_bytes)
    row.written = len(result.written)


@contextlib.contextmanager
def locked_store(server: ServerProcess, **options: Any) -> Iterator[tuple[AssignmentStore, Any]]:
    """A store under a fresh root of ``server``, with the assignment lock held (its guard)."""
    settings = Settings(
        zk_hosts=server.address, zk_root=f"/bench-{uuid.uuid4().hex[:8]}/allot", **options
    )
    client = connect(settings)
    try:
        paths = ZkPaths(settings.zk_root)
        lock = AssignmentLock(client, paths, "bench")
        guard = lock.acquire()
        yield AssignmentStore(client, paths), guard
        lock.release()
    finally:
        client.stop()
        client.close()


def measure(server: ServerProcess, nodes: int, repeats: int) -> list[Row]:
    reads, first, second = (
        Row("read_all", nodes, []),
        Row("apply initial", nodes, []),
        Row("apply join (+1 node)", nodes, []),
    )
    keys = [f"celery@worker-{i:04d}" for i in range(nodes)]
    initial = spread(keys)
    joined = join(initial, f"celery@worker-{nodes:04d}")
    for _ in range(repeats):
        with locked_store(server) as (store, guard):
            note(first, *timed_apply(store, store.read_all(), initial, "initial", guard))
            seconds, snapshot = timed_read(store)
            reads.seconds.append(seconds)
            note(second, *timed_apply(store, snapshot, joined, "join", guard))
    return [reads, first, second]


def worst_case(server: ServerProcess, nodes: int, repeats: int) -> Row:
    row = Row("apply initial, 128-char keys + ACL", nodes, [])
    keys = [f"{i:04d}-" + "k" * 123 for i in range(nodes)]
    initial = spread(keys)
    for _ in range(repeats):
        with locked_store(server, zk_auth="allot:secret") as (store, guard):
            note(row, *timed_apply(store, store.read_all(), initial, "initial", guard))
    return row


def table(rows: list[Row], repeats: int) -> Table:
    out = Table(title=f"ZooKeeper store, {BUCKETS:,} buckets, median of {repeats} runs")
    for name in ("case", "nodes", "median ms", "min ms", "txns", "largest request", "of 1 MB"):
        out.add_column(name, justify="left" if name == "case" else "right")
    out.add_column("nodes written", justify="right")
    for row in rows:
        size = f"{row.request_bytes:,} B" if row.request_bytes else "-"
        share = f"{row.request_bytes / DEFAULT_MAX_REQUEST_BYTES:.1%}" if row.request_bytes else "-"
        out.add_row(
            row.case,
            f"{row.nodes:,}",
            f"{statistics.median(row.seconds) * 1000:,.1f}",
            f"{min(row.seconds) * 1000:,.1f}",
            str(row.transactions) if row.request_bytes else "-",
            size,
            share,
            f"{row.written:,}" if row.request_bytes else "-",
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=7, help="runs per case (fresh root each)")
    parser.add_argument("--record", type=Path, help="write the results into this Markdown file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # kazoo warns on every client stop
    console = Console(width=120, record=True)
    console.print(machine())
    with tempfile.TemporaryDirectory(prefix="allot-bench-zk-") as workdir:
        server = start_zookeeper(Path(workdir))
        try:
            rows = [*measure(server, 100, args.repeats), *measure(server, 1_000, args.repeats)]
            rows.append(worst_case(server, 1_000, args.repeats))
            rows.append(worst_case(server, 2_000, args.repeats))
        finally:
            server.stop()
    console.print(table(rows, args.repeats))
    if args.record:
        command = " ".join([".venv/bin/python", "bench/zookeeper.py", *sys.argv[1:]])
        record_section(
            args.record,
            "ZooKeeper",
            command,
            [
                "ZooKeeper 3.8 (Debian jars) on the same machine, data on local disk, one client.",
                "`apply` includes computing the change set, the exact size check and the commit "
                "(one fsync'd multi-op transaction per step) under the assignment lock; "
                "`read_all` is every node's two znodes plus the version (ZooKeeper `multiRead`, "
                "up to 1,000 reads per request).",
                "`txns` > 1: the plan exceeded the 1 MB request limit and was applied in fenced "
                "steps (see `allot/zk/apply.py`).",
            ],
            console.export_text(),
        )


if __name__ == "__main__":
    main()

"""Assignment by measured work, live: strategy ``balanced`` against ``load`` on real workers.

Run: ``.venv/bin/python bench/load_live.py`` (``--help`` for options; ``--record`` appends to
bench/RESULTS.md). It starts its own ZooKeeper, Redis and database (:mod:`bench.harness`),
registers one table per bucket and three workers (``--concurrency`` pool processes each)
running :mod:`bench.load_live_tasks`: every table every ``--period`` seconds, each run sleeping
``--base-cost`` seconds, except the tables of ``--slow`` buckets of the first worker, which
sleep ``--slow-cost``: the fleet's slow tables concentrated on one node. The workers measure
and publish their buckets' load (``ALLOT_LOAD_WINDOW=--window``,
``ALLOT_LOAD_PUBLISH_INTERVAL=--publish``); this process runs an assignment cycle every
``--interval`` seconds (no beat), on the same cluster:

balanced: ``ceil(window / interval) + --steady`` cycles under ``balanced`` (the window fills);
load: cycles under ``load`` until one moves nothing (it has settled), then ``--steady`` more.

Per cycle: the load ratio (largest node load over its fair share, from the loads the nodes
published, measured the same way under both strategies), the ratio the planner saw before and
after its plan (``load`` only) and the moves. The summary gives the last ratio, the moves, and
the moves in the steady cycles after it settled (0 means no flapping).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from allot.cycle import AssignmentCycle
from allot.cycle.report import CycleReport
from allot.testing.cluster import QUICK_START, LocalCluster
from allot.zk.load import read_load
from allot.zk.paths import ZkPaths
from bench.harness import DATABASES, local_cluster
from bench.results import command_line, make_table, record_section
from bench.work_cluster import served
from models.engine import session_factory

WORKERS = ("node1", "node2", "node3")


def load_ratio(cluster: LocalCluster) -> float:
    """The largest node load over its fair share (equal weights), from the published loads;
    buckets nobody measured count as the mean of the measured ones (the planner's rule)."""
    measured = read_load(cluster.client, ZkPaths(cluster.settings.zk_root)).by_bucket
    assignment = cluster.zk()
    if not measured or not assignment:
        return math.nan
    mean = sum(measured.values()) / len(measured)
    per_node = [sum(measured.get(b, mean) for b in owned) for owned in assignment.values()]
    total = sum(per_node)
    return max(per_node) / (total / len(WORKERS)) if total else math.nan


class Phase:
    """The cycles of one strategy, run from this process every ``interval`` seconds."""

    def __init__(self, cluster: LocalCluster, strategy: str, interval: float) -> None:
        settings = cluster.settings.model_copy(update={"strategy": strategy})
        self.cycle = AssignmentCycle(cluster.client, session_factory(cluster.engine), settings)
        self.cluster = cluster
        self.strategy = strategy
        self.interval = interval
        self.rows: list[tuple[float, float, CycleReport]] = []
        self.began = time.monotonic()

    def step(self) -> CycleReport:
        """Wait for the next tick, run one cycle; keep (time, measured ratio, report)."""
        due = self.began + len(self.rows) * self.interval
        time.sleep(max(0.0, due - time.monotonic()))
        report = self.cycle.run("bench", lock_timeout=30)
        ratio = load_ratio(self.cluster)
        self.rows.append((time.monotonic() - self.began, ratio, report))
        return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--buckets", type=int, default=30)
    parser.add_argument("--slow", type=int, default=6, help="slow buckets, all on one node")
    parser.add_argument("--slow-cost", type=float, default=1.0)
    parser.add_argument("--base-cost", type=float, default=0.05)
    parser.add_argument("--period", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--publish", type=float, default=1.0)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--steady", type=int, default=10)
    parser.add_argument("--max-cycles", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--database", choices=DATABASES, default="sqlite")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    phases: list[Phase] = []
    with local_cluster(
        "allot-load-live-",
        args.buckets,
        args.database,
        load_window=args.window,
        load_publish_interval=args.publish,
    ) as cluster:
        from allot.names import parse_table_name
        from allot.registry import register_tables

        names = [f"load.db.t{index:04d}" for index in range(args.buckets)]
        with session_factory(cluster.engine).begin() as session:
            registered = register_tables(session, [parse_table_name(n) for n in names])
        table_of = {reg.bucket_id: name for name, reg in zip(names, registered, strict=True)}
        costs = cluster.workdir / "costs.json"
        env = {
            "ALLOT_TASK_MODULES": "bench.load_live_tasks",
            "LOAD_PERIOD": str(args.period),
            "LOAD_BASE_COST": str(args.base_cost),
            "LOAD_COSTS": str(costs),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        for name in WORKERS:
            cluster.processes[name] = cluster.group.worker(
                name, cluster.env | env, *QUICK_START, "-c", str(args.concurrency)
            )
        assignment = cluster.wait_for(lambda: served(cluster), "every bucket served", 180)
        heavy = sorted(assignment[cluster.key(WORKERS[0])])[: args.slow]
        costs.write_text(json.dumps({table_of[b]: args.slow_cost for b in heavy}))
        print(f"slow buckets on {cluster.key(WORKERS[0])}: {heavy}", flush=True)

        balanced = Phase(cluster, "balanced", args.interval)
        phases.append(balanced)
        for _ in range(math.ceil(args.window / args.interval) + args.steady):
            report = balanced.step()
            print(f"balanced: {report.headline()}; ratio {balanced.rows[-1][1]:.2f}", flush=True)

        load = Phase(cluster, "load", args.interval)
        phases.append(load)
        settled_at: int | None = None
        while len(load.rows) < args.max_cycles:
            report = load.step()
            print(f"load: {report.headline()}; ratio {load.rows[-1][1]:.2f}", flush=True)
            if settled_at is None and report.moves == 0:
                settled_at = len(load.rows)
            if settled_at is not None and len(load.rows) >= settled_at + args.steady:
                break

    text = report_text(args, phases, settled_at)
    print(text)
    if args.record:
        record_section(
            Path(__file__).with_name("RESULTS.md"),
            f"Assignment by measured work, live (bench/load_live.py, {args.database})",
            command_line(),
            [
                "ratio: the largest node load over its fair share, from the loads the "
                "workers published (seconds of work per bucket over the window), measured "
                "alike under both strategies; planner: the ratio the cycle's plan saw "
                "before and after (strategy load only); steady moves: the moves of the "
                f"{args.steady} cycles after the first cycle that moved nothing.",
            ],
            text,
        )


def report_text(args: argparse.Namespace, phases: list[Phase], settled_at: int | None) -> str:
    table = make_table(
        f"{args.buckets} buckets, 1 table each every {args.period:g} s ({args.base_cost:g} s; "
        f"{args.slow} slow buckets on node1: {args.slow_cost:g} s), window {args.window:g} s, "
        f"a cycle every {args.interval:g} s, 3 workers x {args.concurrency}, {args.database}",
        ["strategy", "cycle", "t s", "ratio", "planner before", "planner after", "moves"],
        left=["strategy"],
    )
    summary = make_table(
        f"summary (ALLOT_LOAD_TOLERANCE {phases[0].cycle.settings.load_tolerance:g})",
        ["strategy", "last ratio", "moves", "settled at cycle", "steady cycles", "steady moves"],
        left=["strategy"],
    )
    for phase in phases:
        for index, (at, ratio, report) in enumerate(phase.rows, 1):
            before, after = report.load_ratio_before, report.load_ratio_after
            table.add_row(
                phase.strategy,
                str(index),
                f"{at:.0f}",
                f"{ratio:.2f}",
                "" if before is None else f"{before:.2f}",
                "" if after is None else f"{after:.2f}",
                str(report.moves),
            )
        if phase.strategy == "load":
            settle = settled_at
            steady = phase.rows[settle:] if settle is not None else []
        else:
            settle, steady = None, phase.rows[-args.steady :]
        summary.add_row(
            phase.strategy,
            f"{phase.rows[-1][1]:.2f}",
            str(sum(report.moves for _, _, report in phase.rows)),
            "" if settle is None else str(settle),
            str(len(steady)),
            str(sum(report.moves for _, _, report in steady)),
        )
    out = io.StringIO()
    console = Console(file=out, width=110)
    console.print(table)
    console.print(summary)
    return out.getvalue()


if __name__ == "__main__":
    main()

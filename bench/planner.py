"""Benchmark of the planner strategies: how many buckets they move, how balanced they leave the
cluster, and how long they take.

Run: ``.venv/bin/python bench/planner.py`` (``--help`` for options).

**Quality.** ``--scenarios`` random scenarios from ``random.Random(--seed)``, in five kinds
(an equal share of each): ``join`` (1-3 nodes join), ``leave`` (1-2 nodes leave: gone from
``nodes``), ``death`` (1-2 nodes die: half the time still in their grace period, ``suspect``,
half the time ``offline``), ``weights`` (1-3 nodes change weight) and ``mixed`` (joins, leaves,
deaths and weight changes at once). Each scenario has 1-256 buckets and 1-12 nodes; half of the
clusters are weighted. Every strategy starts from its *own* steady state (its plan for the
cluster before the event, from an empty assignment), so HRW and Amoro are not penalised for
undoing another strategy's choices; then the event happens and the strategy plans again. For
that second plan the table shows moves / minimum (the minimum is ``M*`` of DESIGN.md, the fewest
moves that reach a balanced assignment from that strategy's own starting point), over the
scenarios whose minimum is > 0; a plan that moves anything when the minimum is 0 is counted as
a *violation* instead. "Balanced" is the share of plans whose result is balanced (every live
node at the floor or ceiling of its weighted share, nothing unplaced); "worst spread" is the
largest ``spread_after`` (``max - min`` of ``held - share`` over live nodes). Rows split the
scenarios into equal weights (after the event) and weighted ones.

A second table (``--drift`` scenarios) starts every strategy from the *same arbitrary*
assignment (each bucket on a random node of the cluster before the event, on a departed node,
or on nobody), the state after a plan cut short by ``max_moves``, a hand edit or a migration.

**Time.** A cluster of ``B`` buckets spread evenly over ``N`` nodes; one node joins and one dies
(offline). The median over repeats of ``plan_from_json`` (the JSON contract: validation,
planning, JSON out) and of the typed ``plan`` (a validated ``Snapshot`` in), with
``time.perf_counter``; µs per bucket; and each strategy's time as a multiple of ``balanced``'s.
HRW evaluates a hash per (bucket, node) pair, so its large cases are timed fewer times (a time
budget per case, at least one run).

``--record bench/RESULTS.md`` writes the machine, date, command and tables into that file's
``## Planner`` section (replacing an older one, leaving the other sections alone).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from allot.planner import plan, plan_from_json, snapshot_from_json, strategy_names
from allot.testing.cluster import round_robin
from bench.results import command_line, machine, make_table, record_section

KINDS = ("join", "leave", "death", "weights", "mixed")
WEIGHTS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
TIMING_CASES = ((100, 3), (1_024, 100), (16_384, 100), (16_384, 1_000))


# --- quality ----------------------------------------------------------------------------------


@dataclass
class Quality:
    """What one strategy did over one group of scenarios."""

    plans: int = 0
    ratios: list[float] = field(default_factory=list)
    violations: int = 0
    balanced: int = 0
    worst_spread: float = 0.0
    moves: int = 0
    minimum: int = 0

    def add(self, stats: dict[str, Any]) -> None:
        """Count one plan's statistics."""
        self.plans += 1
        self.moves += stats["moves"]
        self.minimum += stats["min_moves"]
        self.balanced += bool(stats["balanced"])
        self.worst_spread = max(self.worst_spread, float(stats["spread_after"]))
        if stats["min_moves"] > 0:
            self.ratios.append(stats["moves"] / stats["min_moves"])
        elif stats["moves"] > 0:
            self.violations += 1


GROUPS = ("equal", "weighted", "all")


def weight(rnd: random.Random, weighted: bool) -> float:
    return rnd.choice(WEIGHTS) if weighted else 1.0


def scenario(rnd: random.Random, kind: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """``(bucket_count, nodes before, nodes after)`` for one random event of ``kind``."""
    buckets = rnd.randint(1, 256)
    weighted = kind == "weights" or rnd.random() < 0.5
    size = rnd.randint(2 if kind in ("leave", "death") else 1, 12)
    before: dict[str, dict[str, Any]] = {
        f"n{i:02d}@host": {"weight": weight(rnd, weighted)} for i in range(size)
    }
    after = {key: dict(node) for key, node in before.items()}
    keys = list(before)
    events = [kind] if kind != "mixed" else rnd.sample(["join", "leave", "death", "weights"], 2)
    for event in events:
        if event == "join":
            for i in range(rnd.randint(1, 3)):
                after[f"new{i}@host"] = {"weight": weight(rnd, weighted)}
        elif event in ("leave", "death") and len(keys) > 1:
            for key in rnd.sample(keys, rnd.randint(1, min(2, len(keys) - 1))):
                keys.remove(key)
                if event == "leave":
                    del after[key]
                else:
                    after[key]["state"] = rnd.choice(("suspect", "offline"))
        elif event == "weights":
            for key in rnd.sample(keys, min(len(keys), rnd.randint(1, 3))):
                after[key]["weight"] = rnd.choice([w for w in WEIGHTS if w != after[key]["weight"]])
    return buckets, before, after


def measure_quality(
    count: int, seed: int, names: tuple[str, ...]
) -> dict[tuple[str, str], Quality]:
    """Run ``count`` scenarios through every strategy; results by (strategy, group)."""
    rnd = random.Random(seed)
    results = {(name, group): Quality() for name in names for group in GROUPS}
    for index in range(count):
        buckets, before, after = scenario(rnd, KINDS[index % len(KINDS)])
        live = [node for node in after.values() if node.get("state", "live") == "live"]
        group = "weighted" if len({node["weight"] for node in live}) > 1 else "equal"
        for name in names:
            steady = plan_from_json({"bucket_count": buckets, "nodes": before}, name)
            snapshot = {
                "bucket_count": buckets,
                "nodes": after,
                "assignments": steady["assignments"],
            }
            stats = plan_from_json(snapshot, name)["stats"]
            results[name, group].add(stats)
            results[name, "all"].add(stats)
    return results


def measure_drift(count: int, seed: int, names: tuple[str, ...]) -> dict[tuple[str, str], Quality]:
    """``count`` scenarios from an arbitrary start, the same for every strategy.

    The nodes after a random event (as in :func:`measure_quality`), but every bucket starts on a
    random holder: one of the nodes before the event, a node that left, or nobody. This is the
    state after a plan cut short by ``max_moves``, a hand edit, or a migration from another tool.
    """
    rnd = random.Random(seed + 1)
    results = {(name, group): Quality() for name in names for group in GROUPS}
    for index in range(count):
        buckets, before, after = scenario(rnd, KINDS[index % len(KINDS)])
        holders = [*before, "departed@host", None]
        assignments: dict[str, list[int]] = {}
        for bucket in range(1, buckets + 1):
            holder = rnd.choice(holders)
            if holder is not None:
                assignments.setdefault(holder, []).append(bucket)
        live = [node for node in after.values() if node.get("state", "live") == "live"]
        group = "weighted" if len({node["weight"] for node in live}) > 1 else "equal"
        snapshot = {"bucket_count": buckets, "nodes": after, "assignments": assignments}
        for name in names:
            stats = plan_from_json(snapshot, name)["stats"]
            results[name, group].add(stats)
            results[name, "all"].add(stats)
    return results


def quality_table(results: dict[tuple[str, str], Quality], title: str) -> Table:
    table = make_table(
        title,
        (
            "strategy",
            "weights",
            "plans",
            "moves/min mean",
            "moves/min max",
            "min=0 violations",
            "total moves / min",
            "balanced",
            "worst spread",
        ),
        left=("strategy", "weights"),
    )
    for (name, group), quality in results.items():
        ratios = quality.ratios or [0.0]
        table.add_row(
            name,
            group,
            f"{quality.plans:,}",
            f"{statistics.fmean(ratios):.3f}",
            f"{max(ratios):.3f}",
            f"{quality.violations:,}",
            f"{quality.moves:,} / {quality.minimum:,}",
            f"{100 * quality.balanced / max(quality.plans, 1):.1f}%",
            f"{quality.worst_spread:.2f}",
        )
        if group == GROUPS[-1]:
            table.add_section()
    table.caption = (
        "moves/min: over the plans whose minimum is > 0. "
        "min=0 violations: plans that moved buckets when the minimum was 0."
    )
    return table


# --- time ---------------------------------------------------------------------------------------


def timing_snapshot(buckets: int, nodes: int) -> dict[str, Any]:
    """``buckets`` spread round-robin over ``nodes`` nodes; then one joins and one dies."""
    keys = [f"node{i:04d}@host" for i in range(nodes)]
    assignments = round_robin(keys, buckets)
    states: dict[str, Any] = {key: {"state": "live"} for key in keys}
    states[keys[0]] = {"state": "offline"}
    states["joined@host"] = {"state": "live"}
    return {"bucket_count": buckets, "nodes": states, "assignments": assignments}


def median_seconds(run: Callable[[], object], repeats: int, budget: float) -> tuple[float, int]:
    """Median wall time of ``run`` over up to ``repeats`` runs within ``budget`` seconds."""
    times: list[float] = []
    deadline = time.perf_counter() + budget
    while len(times) < repeats and (not times or time.perf_counter() < deadline):
        gc.collect()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(times)


def timing_table(names: tuple[str, ...], repeats: int, budget: float) -> Table:
    table = make_table(
        f"Time: median of up to {repeats} runs (one node joins, one dies)",
        (
            "buckets x nodes",
            "strategy",
            "plan_from_json",
            "plan (typed)",
            "µs / bucket",
            "x balanced",
            "runs",
        ),
        left=("strategy",),
    )
    for buckets, nodes in TIMING_CASES:
        data = timing_snapshot(buckets, nodes)
        snapshot = snapshot_from_json(data)
        baseline = 0.0
        for name in names:
            whole, runs = median_seconds(partial(plan_from_json, data, name), repeats, budget)
            typed, _ = median_seconds(partial(plan, snapshot, name), repeats, budget)
            baseline = baseline or whole
            table.add_row(
                f"{buckets:,} x {nodes:,}",
                name,
                f"{whole * 1e3:.2f} ms",
                f"{typed * 1e3:.2f} ms",
                f"{whole * 1e6 / buckets:.2f}",
                f"{whole / baseline:.1f}",
                str(runs),
            )
        table.add_section()
    return table


# --- output ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scenarios", type=int, default=10_000, help="random scenarios")
    parser.add_argument("--seed", type=int, default=1, help="seed of the scenarios")
    parser.add_argument(
        "--drift", type=int, default=2_000, help="scenarios from an arbitrary start"
    )
    parser.add_argument("--repeats", type=int, default=31, help="timed runs per case")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per timed case")
    parser.add_argument("--skip-quality", action="store_true", help="timings only")
    parser.add_argument("--skip-timing", action="store_true", help="quality only")
    parser.add_argument("--record", type=Path, help="write the results into this Markdown file")
    args = parser.parse_args()

    console = Console(width=120, record=True)
    names = strategy_names()
    console.print(machine())
    if not args.skip_quality:
        steady = measure_quality(args.scenarios, args.seed, names)
        title = (
            f"Quality: {args.scenarios:,} scenarios (seed {args.seed}), "
            "each strategy from its own steady state"
        )
        console.print(quality_table(steady, title))
        drift = measure_drift(args.drift, args.seed, names)
        title = (
            f"Quality: {args.drift:,} scenarios (seed {args.seed}) from an arbitrary start, "
            "the same for every strategy"
        )
        console.print(quality_table(drift, title))
    if not args.skip_timing:
        console.print(timing_table(names, args.repeats, args.budget))
    if args.record:
        record_section(
            args.record,
            "Planner",
            command_line(),
            ["The machine is shared and noisy: the time ratios matter more than absolute times."],
            console.export_text(),
        )


if __name__ == "__main__":
    main()

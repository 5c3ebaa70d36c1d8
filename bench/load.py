"""Benchmark of strategy ``load`` against ``balanced`` and the optimum, offline (no servers).

Run: ``.venv/bin/python bench/load.py`` (``--help`` for options).

Each scenario: ``B`` buckets with Zipf-distributed costs (the bucket of rank ``r`` costs
``1 / r**s`` seconds, ranks shuffled over the buckets with ``random.Random(--seed)``), ``N``
nodes of weights drawn from 1, 2 and 4, starting from ``balanced``'s assignment (balanced by
count). In the ``hot`` scenarios the heaviest costs sit on the buckets of one node instead (the
slow tables of a fleet behind one node's buckets). Then:

- ``balanced`` plans once: it is balanced already, so it moves nothing and keeps the ratio;
- ``load`` plans once (at most ``--max-load-moves`` moves, tolerance ``--tolerance``), then
  plans its own result again until a plan moves nothing ("at rest": the plans and moves it
  took), then once more to check that it stays at rest ("steady": that plan's moves, always 0);
- the optimum: the MILP optimum (HiGHS: minimise the load ratio, any number of moves; solved
  to a relative gap of 1e-4 and re-evaluated exactly) where ``B <= --exact-buckets`` and the
  solver gets there within ``--time-limit`` seconds; otherwise a lower bound, the largest of 1
  and, for every ``j``, the ``j`` heaviest buckets over the ``j`` largest shares (or the
  solver's own bound when larger). The ``optimum`` column says which: a number alone, or
  ``>=`` and the bound.

``gap`` is ``load``'s ratio at rest over the optimum (an upper bound of the gap when the
optimum is only a lower bound): it stops within the tolerance, by design. Where the optimum is
solved, ``load at rest, tolerance 1`` is its ratio at rest when asked for perfect balance: the
heuristic's own gap. ``ms`` is the median CPU time of one ``load`` plan (typed
``plan``, ``time.process_time``: the machine is shared, wall time would measure the neighbours)
from the starting assignment.

``--record bench/RESULTS.md`` writes the machine, date, command and table into that file's
``## Load balancing (offline)`` section (replacing an older one, leaving the others alone).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import highspy
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from allot.planner import NodeInfo, Snapshot, plan
from bench.results import command_line, machine, make_table, record_section

WEIGHTS = (1.0, 2.0, 4.0)
EXACT_GAP = 1e-4
"""The MILP counts as solved when its solution is within this relative gap of its bound."""
SCENARIOS = (  # (buckets, nodes, Zipf exponent, hot)
    (24, 3, 1.0, False),
    (24, 5, 1.0, True),
    (48, 3, 1.0, False),
    (48, 5, 1.0, False),
    (64, 3, 0.8, True),
    (64, 10, 0.8, False),
    (1_024, 3, 1.0, False),
    (1_024, 10, 0.8, False),
    (1_024, 10, 0.8, True),
    (16_384, 3, 1.0, False),
    (16_384, 3, 0.8, True),
    (16_384, 20, 0.8, False),
    (16_384, 50, 0.6, False),
    (16_384, 50, 0.6, True),
)


@dataclass
class Scenario:
    """One starting point: its nodes, the balanced assignment and the bucket costs."""

    buckets: int
    weights: dict[str, float]
    start: dict[str, tuple[int, ...]]
    load: dict[int, float]
    exponent: float
    hot: bool

    def snapshot(
        self, assignments: dict[str, tuple[int, ...]], args: argparse.Namespace
    ) -> Snapshot:
        return Snapshot(
            bucket_count=self.buckets,
            nodes={key: NodeInfo(weight) for key, weight in self.weights.items()},
            assignments=assignments,
            load=self.load,
            tolerance=args.tolerance,
            max_load_moves=args.max_load_moves,
        )

    def shares(self) -> dict[str, float]:
        total = math.fsum(self.load.values())
        weight_sum = math.fsum(self.weights.values())
        return {key: total * weight / weight_sum for key, weight in self.weights.items()}


def make_scenario(
    buckets: int, nodes: int, exponent: float, hot: bool, rnd: random.Random
) -> Scenario:
    """Nodes of random weights, balanced by count, Zipf costs (the heaviest on one node if
    ``hot``)."""
    weights = {f"n{index:02d}@bench": rnd.choice(WEIGHTS) for index in range(nodes)}
    empty = Snapshot(buckets, {key: NodeInfo(weight) for key, weight in weights.items()})
    start = dict(plan(empty, "balanced").assignments)
    costs = [1.0 / rank**exponent for rank in range(1, buckets + 1)]
    if hot:  # the heaviest costs on the first node's buckets, the rest shuffled
        first = list(start[min(start)])
        others = [b for key, held in start.items() if key != min(start) for b in held]
        rnd.shuffle(others)
        order = first + others
    else:
        order = list(range(1, buckets + 1))
        rnd.shuffle(order)
    load = dict(zip(order, costs, strict=True))
    return Scenario(buckets, weights, start, load, exponent, hot)


def lower_bound(scenario: Scenario) -> float:
    """max(1, for every j: the j heaviest buckets over the j largest shares)."""
    shares = sorted(scenario.shares().values(), reverse=True)
    heaviest = sorted(scenario.load.values(), reverse=True)[: len(shares)]
    bound, loads, capacity = 1.0, 0.0, 0.0
    for load, share in zip(heaviest, shares, strict=False):
        loads += load
        capacity += share
        bound = max(bound, loads / capacity)
    return bound


def optimum(scenario: Scenario, time_limit: float) -> tuple[float, bool]:
    """The MILP optimum (``True``) or the best lower bound known (``False``)."""
    shares = scenario.shares()
    total = math.fsum(scenario.load.values())
    solver = highspy.Highs()  # type: ignore[no-untyped-call]  # its __init__ has no hints
    solver.setOptionValue("output_flag", False)
    solver.setOptionValue("mip_rel_gap", EXACT_GAP)
    solver.setOptionValue("time_limit", time_limit)
    keys = sorted(shares)
    place = {(b, key): solver.addBinary() for b in scenario.load for key in keys}
    ratio = solver.addVariable(lb=0.0)
    for bucket in scenario.load:
        solver.addConstr(sum(place[bucket, key] for key in keys) == 1)
    for key in keys:
        used = sum(scenario.load[b] / total * place[b, key] for b in scenario.load)
        solver.addConstr(used - ratio * (shares[key] / total) <= 0)
    solver.minimize(ratio)
    bound = max(lower_bound(scenario), solver.getInfo().mip_dual_bound)
    if solver.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return bound, False
    values = solver.vals(place)
    held: dict[str, list[float]] = {key: [] for key in keys}
    for bucket, load in scenario.load.items():
        held[next(key for key in keys if values[bucket, key] > 0.5)].append(load)
    return max(math.fsum(loads) / shares[key] for key, loads in held.items()), True


def at_rest(scenario: Scenario, args: argparse.Namespace, tolerance: float) -> float:
    """``load``'s ratio at rest with this tolerance (the heuristic's own gap at 1.0)."""
    strict = argparse.Namespace(**{**vars(args), "tolerance": tolerance})
    current = plan(scenario.snapshot(scenario.start, strict), "load")
    while current.moves:
        current = plan(scenario.snapshot(dict(current.assignments), strict), "load")
    return current.stats.load_ratio_after


def run(scenario: Scenario, args: argparse.Namespace) -> list[str]:
    """One row of the table."""
    start = scenario.snapshot(scenario.start, args)
    by_count = plan(start, "balanced")
    first = plan(start, "load")
    times = []
    for _ in range(args.repeats):
        began = time.process_time()
        plan(start, "load")
        times.append(time.process_time() - began)
    current, plans, moves = first, 1, first.stats.moves
    while current.moves and plans < 1_000:
        current = plan(scenario.snapshot(dict(current.assignments), args), "load")
        plans += 1
        moves += current.stats.moves
    steady = plan(scenario.snapshot(dict(current.assignments), args), "load").stats.moves
    rest = current.stats.load_ratio_after
    if scenario.buckets <= args.exact_buckets:
        best, exact = optimum(scenario, args.time_limit)
        strict = f"{at_rest(scenario, args, 1.0):.3f}"
    else:
        best, exact = lower_bound(scenario), False
        strict = ""
    return [
        f"{scenario.buckets:,} x {len(scenario.weights)}",
        f"{scenario.exponent}{' hot' if scenario.hot else ''}",
        f"{by_count.stats.load_ratio_after:.3f}",
        f"{by_count.stats.moves}",
        f"{first.stats.load_ratio_after:.3f}",
        f"{first.stats.moves}",
        f"{rest:.3f}",
        f"{plans - 1} / {moves}",
        f"{steady}",
        f"{'' if exact else '>= '}{best:.3f}",
        f"{rest / best:.3f}",
        strict,
        f"{statistics.median(times) * 1000:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=1, help="seed of costs and weights")
    parser.add_argument("--tolerance", type=float, default=1.15, help="ALLOT_LOAD_TOLERANCE")
    parser.add_argument("--max-load-moves", type=int, default=10, help="ALLOT_MAX_LOAD_MOVES")
    parser.add_argument("--exact-buckets", type=int, default=64, help="MILP up to this size")
    parser.add_argument("--time-limit", type=float, default=20.0, help="solver seconds")
    parser.add_argument("--repeats", type=int, default=5, help="timed load plans per scenario")
    parser.add_argument("--record", type=Path, help="write the results into this Markdown file")
    args = parser.parse_args()

    rnd = random.Random(args.seed)
    console = Console(width=160, record=True)
    console.print(machine())
    table = make_table(
        f"Load ratio: balanced vs load vs the optimum (tolerance {args.tolerance}, "
        f"max_load_moves {args.max_load_moves}, seed {args.seed})",
        [
            "buckets x nodes",
            "Zipf s",
            "balanced ratio",
            "balanced moves",
            "load ratio, 1 plan",
            "load moves, 1 plan",
            "load ratio at rest",
            "more plans / moves to rest",
            "steady plan moves",
            "optimum",
            "gap (rest / opt)",
            "load at rest, tolerance 1",
            "load plan ms",
        ],
        left=["buckets x nodes", "Zipf s"],
    )
    for buckets, nodes, exponent, hot in SCENARIOS:
        table.add_row(*run(make_scenario(buckets, nodes, exponent, hot, rnd), args))
    console.print(table)
    console.print(
        "optimum: a number alone = HiGHS MILP optimum (any number of moves, within 1e-4); "
        ">= = a lower bound (max of 1, the j heaviest buckets over the j largest shares, the "
        "solver's bound). ms: CPU time."
    )
    if args.record:
        record_section(
            args.record,
            "Load balancing (offline)",
            command_line(),
            [
                "Zipf costs, weights 1/2/4, from a balanced-by-count start; `hot`: the "
                "heaviest costs on one node's buckets.",
                "The machine is shared and noisy: plan times are indicative.",
            ],
            console.export_text(),
        )


if __name__ == "__main__":
    main()

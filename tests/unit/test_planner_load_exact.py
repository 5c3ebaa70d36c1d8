"""Strategy ``load`` against the exact optimum of a MILP (HiGHS), on small random instances.

The MILP, built here from the snapshot's JSON alone: a binary ``x[b, n]`` puts movable bucket
``b`` (not held by a suspect node, not pinned to a live node) on live node ``n``; each bucket on
exactly one node; ``pins_n + sum_b load_b x[b, n] <= t * share_n`` for every live node; minimise
``t``, the load ratio. Optionally under a move limit ``k``: the buckets that leave their live
holder, plus the orphans and pinned buckets that must move, at most ``k``.

What is asserted (the bound is proved in :mod:`allot.planner.strategies.load`):

1. The solver is never worse than the heuristic, with no move limit and under the heuristic's
   own number of moves (its plan is a solution of that MILP).
2. With a budget that never binds, the heuristic's ratio is at most
   ``max(tolerance * OPT, OPT + l_max / share_min)``: ``l_max`` the heaviest bucket not held by a
   suspect, ``share_min`` the smallest load share.

Tolerances: the solver's answer is re-evaluated exactly (the ratio of the assignment it
returns, summed with ``math.fsum``), so it is a true ratio; it may exceed the optimum by the
solver's feasibility tolerance (1e-7 on loads scaled to a total of 1), hence ``1e-6`` relative
in assertion 1. Assertion 2 allows ``1e-9`` relative for the heuristic's own float rounding.
"""

from __future__ import annotations

import math
from typing import Any

import highspy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allot.planner import plan_from_json

SOLVER_SLACK = 1e-6
ROUNDING = 1e-9
LOADS = [0.0, 0.1, 0.5, 1.0, 1.0, 2.0, 3.0, 5.0, 13.0, 40.0]
WEIGHTS = [0.5, 1.0, 1.0, 2.0, 3.0]

EXACT = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def instances(draw: st.DrawFn) -> dict[str, Any]:
    """<= 10 buckets, 1-4 live nodes of mixed weights, sometimes a suspect node, buckets on
    live nodes, the suspect, a departed node or nobody, loads on most buckets, a few pins."""
    count = draw(st.integers(1, 10))
    live = [f"n{index}" for index in range(1, draw(st.integers(1, 4)) + 1)]
    nodes: dict[str, Any] = {key: {"weight": draw(st.sampled_from(WEIGHTS))} for key in live}
    holders: list[str | None] = [*live, *live, None, "gone"]
    if draw(st.booleans()):
        nodes["s"] = {"state": "suspect"}
        holders.append("s")
    assignments: dict[str, list[int]] = {}
    for bucket in range(1, count + 1):
        holder = draw(st.sampled_from(holders))
        if holder is not None:
            assignments.setdefault(holder, []).append(bucket)
    load = {
        str(bucket): draw(st.sampled_from(LOADS))
        for bucket in range(1, count + 1)
        if draw(st.integers(0, 7))  # about one in eight unmeasured
    }
    pins = {
        str(bucket): draw(st.sampled_from([*live, "s", "gone"]))
        for bucket in range(1, count + 1)
        if not draw(st.integers(0, 9))
    }
    return {
        "bucket_count": count,
        "nodes": nodes,
        "assignments": assignments,
        "load": load,
        "pins": pins,
        "tolerance": draw(st.sampled_from([1.0, 1.05, 1.15, 1.5])),
        "max_load_moves": 1_000_000,
    }


class Instance:
    """The snapshot's numbers, read independently of the planner."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        count = snapshot["bucket_count"]
        nodes = snapshot["nodes"]
        self.live = sorted(
            key for key, info in nodes.items() if info.get("state", "live") == "live"
        )
        weights = {key: float(nodes[key]["weight"]) for key in self.live}
        measured = {int(bucket): float(value) for bucket, value in snapshot["load"].items()}
        mean = math.fsum(measured.values()) / len(measured) if measured else 1.0
        self.load = {bucket: measured.get(bucket, mean) for bucket in range(1, count + 1)}
        suspect = set(snapshot["assignments"].get("s", []) if "s" in nodes else [])
        self.holder = {
            bucket: key
            for key, buckets in snapshot["assignments"].items()
            if key in self.live
            for bucket in buckets
        }
        self.pinned = {
            int(bucket): node
            for bucket, node in snapshot["pins"].items()
            if node in self.live and int(bucket) not in suspect
        }
        self.movable = [
            bucket
            for bucket in range(1, count + 1)
            if bucket not in suspect and bucket not in self.pinned
        ]
        self.forced = sum(1 for b, node in self.pinned.items() if self.holder.get(b) != node)
        self.forced += sum(1 for bucket in self.movable if bucket not in self.holder)
        self.total = math.fsum(self.load[b] for b in range(1, count + 1) if b not in suspect)
        weight_sum = math.fsum(weights.values())
        self.share = {key: self.total * weights[key] / weight_sum for key in self.live}
        self.heaviest = max(
            (self.load[b] for b in range(1, count + 1) if b not in suspect), default=0.0
        )

    def ratio(self, owner: dict[int, str]) -> float:
        """The load ratio of the assignment ``owner`` (movable buckets) plus the pins."""
        held: dict[str, list[float]] = {key: [] for key in self.live}
        for bucket, node in [*owner.items(), *self.pinned.items()]:
            held[node].append(self.load[bucket])
        return max(math.fsum(loads) / self.share[key] for key, loads in held.items())

    def optimum(self, moves: int | None = None) -> float:
        """The smallest load ratio (re-evaluated exactly), at most ``moves`` moves if given."""
        if not self.movable:
            return self.ratio({})
        solver = highspy.Highs()  # type: ignore[no-untyped-call]  # its __init__ has no hints
        solver.setOptionValue("output_flag", False)
        solver.setOptionValue("mip_rel_gap", 0.0)
        solver.setOptionValue("mip_abs_gap", 0.0)
        scale = 1.0 / self.total  # loads and shares scaled to a total of 1
        place = {(bucket, key): solver.addBinary() for bucket in self.movable for key in self.live}
        ratio = solver.addVariable(lb=0.0)
        for bucket in self.movable:
            solver.addConstr(sum(place[bucket, key] for key in self.live) == 1)
        for key in self.live:
            pinned = sum(self.load[b] for b, node in self.pinned.items() if node == key)
            used = sum(self.load[b] * scale * place[b, key] for b in self.movable)
            solver.addConstr(used - ratio * (self.share[key] * scale) <= -pinned * scale)
        stay = [place[b, self.holder[b]] for b in self.movable if b in self.holder]
        if moves is not None and stay:
            solver.addConstr(len(stay) - sum(stay) <= moves - self.forced)
        solver.minimize(ratio)
        assert solver.getModelStatus() == highspy.HighsModelStatus.kOptimal
        values = solver.vals(place)
        owner = {b: next(k for k in self.live if values[b, k] > 0.5) for b in self.movable}
        return self.ratio(owner)


@EXACT
@given(snapshot=instances())
def test_the_solver_is_never_worse_and_the_heuristic_is_within_the_proved_bound(
    snapshot: dict[str, Any],
) -> None:
    instance = Instance(snapshot)
    result = plan_from_json(snapshot, "load")
    if instance.total <= 0:
        assert result["stats"]["load_ratio_after"] == 1
        return
    heuristic = result["stats"]["load_ratio_after"]

    best = instance.optimum()
    best_same_moves = instance.optimum(moves=result["stats"]["moves"])

    assert best <= heuristic * (1 + SOLVER_SLACK)
    assert best_same_moves <= heuristic * (1 + SOLVER_SLACK)
    bound = max(
        snapshot["tolerance"] * best,
        best + instance.heaviest / min(instance.share.values()),
    )
    assert heuristic <= bound * (1 + ROUNDING)

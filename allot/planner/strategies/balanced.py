"""``balanced``: the default strategy. Exactly balanced, with the fewest moves possible.

1. Quotas: every live node gets the floor of its weighted share, and the ``ceil`` slots go to
   nodes already holding more than their floor (:func:`allot.planner.balance.quotas`). No
   balanced assignment keeps more buckets in place, so the plan moves exactly ``M*`` buckets.
2. Nodes above their quota give up only their surplus, **highest bucket ids first** (a node
   keeps its lowest ids). Nodes below their quota receive.
3. Orphans (offline or unowned buckets) are placed first, in ascending id order, then the
   surplus moves, the donor with the largest surplus left first. Each bucket goes to the
   receiver missing the most buckets at that point (ties: the smaller node key), so a plan cut
   short by ``max_moves`` spreads its moves over the neediest nodes instead of filling one node
   at a time.

With pins, ``problem.quota`` and ``problem.held`` leave the pinned buckets out and the quotas
count them at their nodes (water-filling, :func:`allot.planner.balance.pinned_shares`), so the
same steps balance the unpinned buckets around the pins with the fewest moves.

Deterministic: every choice above breaks ties by node key or bucket id. Cost:
``O(B + N log N + L)`` for ``B`` buckets, ``N`` live nodes and ``L`` the largest number of
buckets one node gains or gives up: the "most left first" orders are built level by level
(:func:`most_left_first`) instead of with a priority queue per move.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Mapping

from allot.planner.model import Move
from allot.planner.problem import Problem
from allot.planner.strategies.base import Strategy


class BalancedStrategy(Strategy):
    """Weighted floor/ceil quotas reached with the minimum number of moves (see module doc)."""

    name = "balanced"
    summary = "exactly balanced (weighted), fewest moves possible; the default"

    def propose(self, problem: Problem) -> list[Move]:
        """Moves that reach the balanced quotas, orphans first; see the module docstring."""
        quota, held = problem.quota, problem.held
        missing = {key: q - len(held[key]) for key, q in quota.items() if len(held[key]) < q}
        extra = {key: len(held[key]) - q for key, q in quota.items() if len(held[key]) > q}
        receivers = most_left_first(missing)
        orphans, origin = problem.orphans, problem.origin
        moves = [
            Move(bucket, origin.get(bucket), target)
            for bucket, target in zip(orphans, receivers, strict=False)
        ]
        given = {key: reversed(held[key][quota[key] :]) for key in extra}  # highest ids first
        moves.extend(
            Move(next(given[donor]), donor, target)
            for donor, target in zip(most_left_first(extra), receivers[len(orphans) :], strict=True)
        )
        return moves


def most_left_first(amounts: Mapping[str, int]) -> list[str]:
    """Each key repeated ``amounts[key]`` times, in the order of a greedy that always serves the
    key with the most left (ties: the smaller key).

    That greedy serves level by level: every key with at least ``L`` left, in key order, then
    every key with at least ``L - 1``, and so on down to 1. Building the levels directly costs
    ``O(N log N + total + max(amounts))`` instead of a heap operation per item.
    """
    by_amount = sorted(amounts, key=lambda key: -amounts[key])
    order: list[str] = []
    active: list[str] = []  # keys with at least ``level`` left, in key order
    joined = 0
    top = amounts[by_amount[0]] if by_amount else 0
    for level in range(top, 0, -1):
        while joined < len(by_amount) and amounts[by_amount[joined]] >= level:
            insort(active, by_amount[joined])
            joined += 1
        order.extend(active)
    return order

"""What "balanced" means, exactly, and how far an assignment is from it (DESIGN.md).

For the live nodes ``n`` with weights ``w_n``, let ``B'`` be the buckets not held by suspect
nodes and ``s_n = B' * w_n / sum(w)`` the node's *share*. An assignment is **balanced** when
every live node holds ``floor(s_n)`` or ``ceil(s_n)`` buckets (and, for a whole plan, every bucket
has an owner). The fewest moves that reach a balanced assignment is::

    M* = B' - max over quotas q of sum_n min(held_n, q_n)

where a quota vector gives each node its floor, plus one for exactly ``B' - sum(floor)`` nodes
whose share is not whole. Giving those ``ceil`` slots to nodes that already hold more than their
floor attains the maximum (each such slot keeps one more bucket in place), which is what
:func:`quotas` does; :attr:`allot.planner.problem.Problem.min_moves` computes ``M*`` from them.

Arithmetic is exact: weights are finite floats, i.e. dyadic rationals, so they are scaled to
integers with a common power-of-two denominator and every share is ``floor + remainder /
denominator`` in integers. No rounding ever decides a quota.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Shares:
    """The exact shares of ``free`` buckets among weighted nodes.

    ``scaled`` holds the weights as integers in the same proportions and ``denominator`` is
    their sum, so node ``n``'s share is ``free * scaled[n] / denominator``, and
    ``floors[n], remainders[n] == divmod(free * scaled[n], denominator)``.
    """

    free: int
    scaled: Mapping[str, int]
    floors: Mapping[str, int]
    remainders: Mapping[str, int]
    denominator: int

    @property
    def ceil_slots(self) -> int:
        """How many nodes hold ``ceil`` rather than ``floor`` in a balanced assignment."""
        return self.free - sum(self.floors.values())

    def ceil(self, key: str) -> int:
        """``ceil(s_n)`` for node ``key``."""
        return self.floors[key] + (1 if self.remainders[key] else 0)


def shares(weights: Mapping[str, float], free: int) -> Shares:
    """The exact share of ``free`` buckets of each node in ``weights`` (finite floats > 0).

    Raises:
        ValueError: ``weights`` is empty (nobody to share with).
    """
    if not weights:
        raise ValueError("shares of no nodes")
    ratios = {key: float(weight).as_integer_ratio() for key, weight in weights.items()}
    common = max(q for _, q in ratios.values())  # every q is a power of two: max is the lcm
    scaled = {key: p * (common // q) for key, (p, q) in ratios.items()}
    total = sum(scaled.values())
    floors: dict[str, int] = {}
    remainders: dict[str, int] = {}
    for key, weight in scaled.items():
        floors[key], remainders[key] = divmod(free * weight, total)
    return Shares(free, scaled, floors, remainders, total)


def pinned_shares(weights: Mapping[str, float], free: int, pinned: Mapping[str, int]) -> Shares:
    """The shares of ``free`` buckets when node ``n`` must keep ``pinned[n]`` of them.

    Water-filling: a node whose pins exceed its share is *saturated*: it holds exactly its pins
    and drops out, and the others share what is left (``free`` minus the saturated nodes' pins)
    by weight; repeated until no node's pins exceed its share (each round only lowers the
    others' shares, so at most one round per node). The result covers the unsaturated nodes
    only; each of them has ``pinned[n] <= floor(s_n)``, so its floor/ceil quota can hold its
    pins. At least one node stays (the pins add up to at most ``free``). Without pins this is
    :func:`shares`.
    """
    rest = dict(weights)
    left = free
    while True:
        share = shares(rest, left)
        full = [
            key for key in rest if pinned.get(key, 0) * share.denominator > left * share.scaled[key]
        ]
        if not full:
            return share
        for key in full:
            left -= pinned[key]
            del rest[key]


def quotas(share: Shares, counts: Mapping[str, int]) -> dict[str, int]:
    """The balanced quota of each node that keeps the most buckets in place.

    Every node gets its floor; the ``ceil`` slots go to nodes whose share is not whole, in this
    order: nodes holding more than their floor first, by their surplus over the floor (most
    first); then the others. Within that, the larger fractional part of the share (largest
    remainder, as in Hamilton's apportionment), then the smaller node key. ``counts`` gives how
    many buckets each node holds now (missing: 0).
    """
    result = dict(share.floors)
    slots = share.ceil_slots
    if slots:
        candidates = [key for key, rest in share.remainders.items() if rest]
        floors, rests = share.floors, share.remainders
        candidates.sort(
            key=lambda key: (
                counts.get(key, 0) <= floors[key],
                min(floors[key] - counts.get(key, 0), 0),
                -rests[key],
                key,
            )
        )
        for key in candidates[:slots]:
            result[key] += 1
    return result


def is_balanced(share: Shares, counts: Mapping[str, int]) -> bool:
    """Whether every node holds ``floor(s_n)`` or ``ceil(s_n)`` buckets (``counts``, missing: 0).

    This checks the nodes only; whether every bucket has an owner is the caller's question.
    """
    return all(share.floors[key] <= counts.get(key, 0) <= share.ceil(key) for key in share.floors)


def spread(share: Shares, counts: Mapping[str, int]) -> float:
    """How unevenly the nodes are loaded: ``max_n d_n - min_n d_n`` with ``d_n = held_n - s_n``.

    ``d_n`` is how many buckets node ``n`` holds above (or below) its exact share. With equal
    weights every ``s_n`` is the same, so the spread is simply ``max - min`` of the bucket
    counts: 0 means perfectly even, which only happens when the buckets divide exactly; a
    balanced assignment has spread 0 or 1. With weights the spread is fractional, and a balanced
    assignment has spread < 2 (each ``d_n`` is in ``(-1, 1)``). The value is exact up to one
    final float division.
    """
    total = share.denominator
    deviations = [
        counts.get(key, 0) * total - share.free * weight for key, weight in share.scaled.items()
    ]
    return (max(deviations) - min(deviations)) / total

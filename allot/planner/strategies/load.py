"""``load``: balance the measured load of the buckets against the nodes' weights.

DESIGN.md, "Assignment by measured work"; the argument, with the proofs, is
``docs/load-balancing.md``. Node ``n``'s load share is ``w_n / sum(w)`` of ``T'``, the load not
held by suspects; the load ratio ``R`` is the largest ``load_n / share_n`` over the live nodes
(:mod:`allot.planner.loads`). Pinned buckets count in their node's load and never move.

- **Equal loads** (nothing measured, or every bucket the same): ``balanced``'s plan.
- **Membership** (phase 1): every orphan is placed and every empty node (no movable bucket,
  though its count share is at least one bucket beyond its pins) receives ``balanced``'s quota,
  the buckets chosen by load: donors by highest ratio, each giving the bucket closest to what
  the empty nodes still lack per bucket; placement heaviest first on the node with most room.
- **Load** (phase 2): while ``R > tolerance * LB`` (``LB``, :meth:`_State.floor`, a lower bound
  of the optimum, 1 unless one bucket outweighs a share) and within ``max_load_moves`` (a swap
  counts two): the move or swap from a node at ratio ``R`` that cuts ``R`` most per bucket, taken
  only if both nodes end below ``R``. A node whose count share is a bucket beyond its pins keeps
  one movable bucket (it swaps instead), so phase 1 never refills it.

Guarantees (a heuristic: the optimum is NP-hard): phase 1 moves at most ``balanced``'s ``M*``,
phase 2 at most ``max_load_moves``; phase 2 never raises ``R``; at rest, planning the result
again moves nothing (sums by ``math.fsum``, every step lowers the sorted ratios
lexicographically), and ``R <= max(tolerance * OPT, OPT + l_max / share_min)``
(``tests/unit/test_planner_load_exact.py`` checks it against a MILP solver).

Cost: ``O(B log B)`` for phase 1; per step of phase 2 ``O(N log N + N log b + 32 b log b)``
(``b`` the most buckets on one node): moves are sought with every node, swaps with the 32 nodes
of lowest joint ratio with the busiest one (:data:`SWAP_TARGETS`), skipping a node that cannot
beat the best step found so far.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, insort
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter

from allot.planner.loads import load_shares, ratio_of
from allot.planner.model import Move
from allot.planner.problem import Problem
from allot.planner.strategies.balanced import BalancedStrategy
from allot.planner.strategies.base import Strategy

_LOAD = itemgetter(0)

SWAP_TARGETS = 32
"""Swaps are sought with this many target nodes at most: those with the lowest joint ratio."""


class LoadStrategy(Strategy):
    """Balance measured load: membership moves chosen by load, then few moves for load."""

    name = "load"
    summary = (
        "balances measured load by weight: membership moves chosen by load, then at most "
        "max_load_moves per plan while the load ratio exceeds the tolerance"
    )

    def propose(self, problem: Problem) -> list[Move]:
        """Phase 1 then phase 2 of the module docstring; ``balanced`` for equal loads."""
        if problem.equal_loads:
            return BalancedStrategy().propose(problem)
        state = _State(problem)
        state.membership()
        state.rebalance()
        return state.moves()


class _State:
    """The assignment as the strategy changes it: movable buckets by load, node loads."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        loads = problem.loads
        self.loads = loads
        self.share = load_shares(problem.weights, problem.load_total)
        self.pinned = {key: [loads[b] for b in problem.pinned.get(key, ())] for key in problem.live}
        self.items = {
            key: sorted((loads[bucket], bucket) for bucket in problem.held[key])
            for key in problem.live
        }
        self.load = {key: self._sum(key) for key in problem.live}
        fill = problem.fill
        floors = fill.floors if fill is not None else {}
        self.keep = {
            key: 1 if floors.get(key, 0) - len(problem.pinned.get(key, ())) >= 1 else 0
            for key in problem.live
        }
        self.moved: dict[int, tuple[str | None, str]] = {}  # bucket -> (first source, target)

    # --- bookkeeping ------------------------------------------------------------------------

    def _sum(self, key: str) -> float:
        """Node ``key``'s load, exactly as a fresh plan would sum it (``math.fsum``)."""
        return math.fsum(chain(self.pinned[key], map(_LOAD, self.items[key])))

    def ratio(self, key: str) -> float:
        """Node ``key``'s current load ratio."""
        return ratio_of(self.load[key], self.share[key])

    def _record(self, bucket: int, source: str | None, target: str) -> None:
        """Note that ``bucket`` now goes to ``target`` (keeping the first source)."""
        first = self.moved[bucket][0] if bucket in self.moved else source
        self.moved[bucket] = (first, target)

    def moves(self) -> list[Move]:
        """The net moves, in the order first made; a bucket back on its holder is no move."""
        return [
            Move(bucket, source, target)
            for bucket, (source, target) in self.moved.items()
            if source != target
        ]

    # --- phase 1 ----------------------------------------------------------------------------

    def membership(self) -> None:
        """Place the orphans and serve the empty nodes (phase 1 of the module docstring)."""
        problem = self.problem
        empty = [key for key in problem.live if not self.items[key] and self.keep[key]]
        slots = {key: problem.quota[key] for key in empty}
        wanted = sum(slots.values())
        loads = self.loads
        pool = [(loads[bucket], bucket, problem.origin.get(bucket)) for bucket in problem.orphans]
        short = wanted - len(pool)
        if short > 0:
            lacking = math.fsum(self.share[key] - self.load[key] for key in empty)
            lacking -= math.fsum(load for load, _, _ in pool)
            pool.extend(self._donations(set(empty), short, lacking))
        if pool:
            self._place(pool, slots)
            self.load = {key: self._sum(key) for key in problem.live}

    def _donations(
        self, empty: set[str], count: int, lacking: float
    ) -> Iterator[tuple[float, int, str | None]]:
        """``count`` buckets given by the other nodes, the highest load ratio first, each the
        bucket closest to what the empty nodes still lack per bucket."""
        items, keep = self.items, self.keep
        donors = [
            (-self.ratio(key), key)
            for key in self.problem.live
            if key not in empty and len(items[key]) > keep[key]
        ]
        heapq.heapify(donors)
        while count > 0 and donors:
            _, key = heapq.heappop(donors)
            wanted = max(lacking, 0.0) / count
            bucket_list = items[key]
            index = _closest(bucket_list, wanted)
            load, bucket = bucket_list.pop(index)
            self.load[key] -= load
            lacking -= load
            count -= 1
            if len(bucket_list) > keep[key]:
                heapq.heappush(donors, (-self.ratio(key), key))
            yield load, bucket, key

    def _place(self, pool: list[tuple[float, int, str | None]], slots: dict[str, int]) -> None:
        """Place ``pool`` heaviest first on the node with the most room; the nodes of ``slots``
        take exactly that many, the others only what is left over."""
        pool.sort(key=lambda entry: (-entry[0], entry[1]))
        share, load = self.share, self.load
        served = [(load[key] - share[key], key) for key in slots]
        others = [(load[key] - share[key], key) for key in self.problem.live if key not in slots]
        heapq.heapify(served)
        heapq.heapify(others)
        left = dict(slots)
        open_slots = sum(left.values())
        remaining = len(pool)
        for bucket_load, bucket, source in pool:
            use_others = bool(others) and remaining > open_slots
            if served and (not use_others or served[0] <= others[0]):
                _, key = heapq.heappop(served)
                left[key] -= 1
                open_slots -= 1
                heap = served if left[key] else None
            else:
                _, key = heapq.heappop(others)
                heap = others
            load[key] += bucket_load
            insort(self.items[key], (bucket_load, bucket))
            if heap is not None:
                heapq.heappush(heap, (load[key] - share[key], key))
            remaining -= 1
            self._record(bucket, source, key)

    # --- phase 2 ----------------------------------------------------------------------------

    def floor(self) -> float:
        """A lower bound of the ratio any assignment with these pins reaches.

        The largest of: 1 (the ratios average to at most 1, weighted by share); a node's
        pinned load over its share; and, for every ``j`` up to the node count, the ``j``
        heaviest movable buckets over the ``j`` largest shares (they sit on at most ``j``
        nodes).
        """
        share = self.share
        bound = max(ratio_of(math.fsum(self.pinned[key]), share[key]) for key in share)
        largest = sorted(share.values(), reverse=True)
        heaviest = heapq.nlargest(len(largest), chain.from_iterable(self.items.values()))
        loads = shares = 0.0
        for (load, _), capacity in zip(heaviest, largest, strict=False):
            loads += load
            shares += capacity
            bound = max(bound, ratio_of(loads, shares))
        return max(1.0, bound)

    def rebalance(self) -> None:
        """Steps for load while the ratio exceeds the tolerance (phase 2 of the docstring)."""
        budget = self.problem.max_load_moves
        if budget <= 0:
            return
        threshold = self.problem.tolerance * self.floor()
        while budget > 0:
            order = sorted(self.problem.live, key=lambda key: (-self.ratio(key), key))
            top = self.ratio(order[0])
            if top <= threshold:
                return
            step = self._best_step(order, top, budget)
            if step is None:
                return
            budget -= self._take(step)

    def _best_step(self, order: list[str], top: float, budget: int) -> _Step | None:
        """The best move or swap from a node at the highest ratio ``top``, or ``None``.

        Moves first (two candidates per target node); then swaps, skipping a target whose
        best conceivable swap (both nodes at their joint ratio) cannot rank before the best
        step found so far.
        """
        ratio = {key: self.ratio(key) for key in order}
        head = order[:3]
        best: _Step | None = None
        for source in order:
            if ratio[source] < top:
                break
            targets = []
            for target in order:
                if target != source:
                    rest = next((ratio[key] for key in head if key not in (source, target)), 0.0)
                    targets.append((self._level(source, target), target, rest))
            if len(self.items[source]) > self.keep[source]:
                for _, target, rest in targets:
                    best = _better(best, self._best_move(source, target, top, rest))
            if budget < 2:
                continue
            targets.sort(key=itemgetter(0, 1))
            for level, target, rest in targets[:SWAP_TARGETS]:
                if not self.items[target]:
                    continue
                if best is not None and not best.could_lose_to(top, level, rest, 2):
                    continue
                best = _better(best, self._best_swap(source, target, top, rest))
        return best

    def _level(self, source: str, target: str) -> float:
        """The best ratio a transfer between the two nodes could give both: equal ratios."""
        joint = self.share[source] + self.share[target]
        return ratio_of(self.load[source] + self.load[target], joint)

    def _transfer(self, source: str, target: str) -> float:
        """The load to move from ``source`` to ``target`` that gives both the same ratio."""
        share, load = self.share, self.load
        joint = share[source] + share[target]
        if joint <= 0:
            return 0.0
        return (load[source] * share[target] - load[target] * share[source]) / joint

    def _pair(self, source: str, target: str, delta: float) -> float:
        """The higher ratio of the two nodes after moving load ``delta`` from source."""
        return max(
            ratio_of(self.load[source] - delta, self.share[source]),
            ratio_of(self.load[target] + delta, self.share[target]),
        )

    def _best_move(self, source: str, target: str, top: float, rest: float) -> _Step | None:
        """The best single bucket from ``source`` to ``target`` (around the ideal transfer)."""
        items = self.items[source]
        index = bisect_left(items, self._transfer(source, target), key=_LOAD)
        best: _Step | None = None
        for load, bucket in items[max(index - 1, 0) : index + 1]:
            if load <= 0:
                continue
            pair = self._pair(source, target, load)
            if pair < top:
                best = _better(
                    best, _Step(top - max(pair, rest), top - pair, 1, source, target, bucket)
                )
        return best

    def _best_swap(self, source: str, target: str, top: float, rest: float) -> _Step | None:
        """The best exchange of a bucket of ``source`` for a lighter one of ``target``."""
        ideal = self._transfer(source, target)
        theirs = self.items[target]
        best: _Step | None = None
        for load, bucket in self.items[source]:
            index = bisect_left(theirs, load - ideal, key=_LOAD)
            for other_load, other in theirs[max(index - 1, 0) : index + 1]:
                delta = load - other_load
                if delta <= 0:
                    continue
                pair = self._pair(source, target, delta)
                if pair < top:
                    cut = top - max(pair, rest)
                    best = _better(best, _Step(cut, top - pair, 2, source, target, bucket, other))
        return best

    def _take(self, step: _Step) -> int:
        """Apply ``step``; return how many buckets it moved."""
        loads = self.loads
        self._shift(step.bucket, loads[step.bucket], step.source, step.target)
        if step.other is not None:
            self._shift(step.other, loads[step.other], step.target, step.source)
        for key in (step.source, step.target):
            self.load[key] = self._sum(key)
        return step.cost

    def _shift(self, bucket: int, load: float, source: str, target: str) -> None:
        """Move one bucket between the sorted lists and record it."""
        items = self.items[source]
        del items[bisect_left(items, (load, bucket))]
        insort(self.items[target], (load, bucket))
        self._record(bucket, source, target)


@dataclass(frozen=True, slots=True)
class _Step:
    """A candidate step of phase 2: a move (``other`` is ``None``) or a swap.

    ``cut`` is how much it lowers the highest ratio overall, ``pair_cut`` how much it lowers
    the higher of its two nodes' ratios, ``cost`` the buckets it moves (1 or 2).
    """

    cut: float
    pair_cut: float
    cost: int
    source: str
    target: str
    bucket: int
    other: int | None = None

    @property
    def rank(self) -> tuple[float, float, int, str, str, int, int]:
        """Smaller ranks first: the most cut per bucket, then the most pair cut per bucket,
        then a move before a swap, then node keys and bucket ids."""
        cost = self.cost
        other = self.other or 0
        return (
            -self.cut / cost,
            -self.pair_cut / cost,
            cost,
            self.source,
            self.target,
            self.bucket,
            other,
        )

    def could_lose_to(self, top: float, level: float, rest: float, cost: int) -> bool:
        """Whether a step of ``cost`` buckets between nodes whose best joint ratio is ``level``
        (``rest``: the highest ratio elsewhere) could still rank before this one."""
        bound = ((top - max(level, rest)) / cost, (top - level) / cost)
        return bound >= (self.cut / self.cost, self.pair_cut / self.cost)


def _better(best: _Step | None, step: _Step | None) -> _Step | None:
    """The better ranked of two candidate steps."""
    if step is None:
        return best
    if best is None or step.rank < best.rank:
        return step
    return best


def _closest(items: list[tuple[float, int]], wanted: float) -> int:
    """The index in the sorted ``items`` of the load closest to ``wanted`` (ties: the lighter)."""
    index = bisect_left(items, wanted, key=_LOAD)
    if index == len(items):
        return index - 1
    if index > 0 and wanted - items[index - 1][0] <= items[index][0] - wanted:
        return index - 1
    return index

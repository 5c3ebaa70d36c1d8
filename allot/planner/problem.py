"""The planning problem: a snapshot sorted into what may move, what may not, and where to.

:class:`Problem` is what every strategy works from. It applies the node-state rules of DESIGN.md
once, so strategies cannot get them wrong:

- live nodes are the only ones that may receive buckets;
- suspect nodes keep exactly what they hold and receive nothing;
- offline nodes (state ``offline``, or listed in ``assignments`` but not in ``nodes``) hold
  nothing any more: their buckets, together with the buckets nobody holds, are the *orphans*
  that must be placed on live nodes.

Pins live here too, so that every strategy keeps them without knowing about them. A pin to a
live node is *active*: the bucket goes to that node (:attr:`Problem.pin_moves`, which the
planner adds in front of the strategy's moves) and is taken out of what a strategy may move
(:attr:`Problem.held` and :attr:`Problem.orphans` list *movable* buckets only). A pinned bucket
still counts toward its node's holdings: the balanced quotas are computed over the pinned and
unpinned buckets together (:func:`allot.planner.balance.pinned_shares`). A pin to a node that is
not live (suspect, offline or unknown), or of a bucket a suspect node holds, is ignored for this
plan and reported (:attr:`Problem.pins_ignored`); it takes effect again once it can.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from allot.planner.balance import Shares, is_balanced, pinned_shares, quotas, shares
from allot.planner.loads import all_equal, bucket_loads, load_of
from allot.planner.model import IgnoredPin, Move, NodeState, Snapshot


@dataclass(frozen=True, slots=True)
class Problem:
    """A snapshot classified for planning. Build one with :meth:`from_snapshot`.

    Attributes:
        bucket_count: bucket ids are ``1..bucket_count``.
        live: keys of the live nodes, sorted.
        weights: the weight of each live node.
        held: the *movable* buckets each live node holds now (sorted tuples; empty when it
            holds none): its buckets minus those with an active pin.
        holdings: every bucket each live node holds now (``held`` when no pin is active).
        suspects: the buckets each suspect node holds (sorted tuples), which no plan may move.
        orphans: the *movable* buckets held by offline nodes or by nobody, ascending.
        origin: for each orphan an offline node held, that node (unowned orphans are absent;
            pinned orphans included).
        new: live nodes with no entry at all in ``assignments`` (nodes that just joined).
        departed: offline nodes that still have an entry in ``assignments``, sorted.
        max_moves: the snapshot's move limit, ``None`` for none.
        share: the exact weighted share of ``free_count`` buckets of each live node (``None``
            when no node is live).
        quota: the balanced quota of *movable* buckets of each live node that keeps the most
            buckets in place (:func:`allot.planner.balance.quotas` over ``fill``, less the
            node's pinned buckets; empty when no node is live).
        fill: the shares the quotas come from: ``share`` without pins; with pins, the shares of
            the nodes whose pins do not exceed their share
            (:func:`allot.planner.balance.pinned_shares`), the others holding exactly their
            pins.
        pinned: for each live node with active pins, the buckets pinned to it (sorted).
        pin_moves: the moves that take pinned buckets to their nodes: orphans first, then by
            bucket.
        pins_ignored: the pins this plan cannot keep, by bucket.
        loads: the effective load of every bucket, indexed by id
            (:func:`allot.planner.loads.bucket_loads`; index 0 unused).
        equal_loads: every bucket has the same load (nothing measured, or all the same).
        load_total: ``T'``, the load of the buckets not held by suspect nodes.
        tolerance: the load ratio above which strategy ``load`` moves buckets for load.
        max_load_moves: at most this many moves for load alone per plan.
    """

    bucket_count: int
    live: tuple[str, ...]
    weights: Mapping[str, float]
    held: Mapping[str, tuple[int, ...]]
    holdings: Mapping[str, tuple[int, ...]]
    suspects: Mapping[str, tuple[int, ...]]
    orphans: tuple[int, ...]
    origin: Mapping[int, str]
    new: tuple[str, ...]
    departed: tuple[str, ...]
    max_moves: int | None
    share: Shares | None
    quota: Mapping[str, int]
    fill: Shares | None
    pinned: Mapping[str, tuple[int, ...]]
    pin_moves: tuple[Move, ...]
    pins_ignored: tuple[IgnoredPin, ...]
    loads: tuple[float, ...]
    equal_loads: bool
    load_total: float
    tolerance: float
    max_load_moves: int

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> Problem:
        """Classify ``snapshot``'s nodes, buckets and pins and compute the quotas.

        Pure; ``O(buckets + nodes log nodes)``.
        """
        live: list[str] = []
        weights: dict[str, float] = {}
        suspects: dict[str, tuple[int, ...]] = {}
        for key, info in snapshot.nodes.items():  # sorted by key in Snapshot
            if info.state is NodeState.LIVE:
                live.append(key)
                weights[key] = info.weight
            elif info.state is NodeState.SUSPECT:
                suspects[key] = tuple(snapshot.assignments.get(key, ()))
        holdings = {key: tuple(snapshot.assignments.get(key, ())) for key in live}
        origin: dict[int, str] = {}
        departed: list[str] = []
        for key, buckets in snapshot.assignments.items():  # sorted by key in Snapshot
            if key not in weights and key not in suspects:
                departed.append(key)
                origin.update(dict.fromkeys(buckets, key))
        listed = sum(len(buckets) for buckets in snapshot.assignments.values())
        orphan_set = set(origin)
        if listed < snapshot.bucket_count:  # some bucket has no holder at all
            owned = orphan_set.union(*holdings.values(), *suspects.values())
            orphan_set.update(set(range(1, snapshot.bucket_count + 1)) - owned)
        orphans = tuple(sorted(orphan_set))
        free = snapshot.bucket_count - sum(len(buckets) for buckets in suspects.values())
        share = shares(weights, free) if weights else None
        pins = _Pins.resolve(snapshot, weights, holdings, suspects, orphan_set, origin)
        held, fill, quota = holdings, share, {}
        if pins.pinned:
            held = {key: pins.movable(buckets) for key, buckets in holdings.items()}
            orphans = pins.movable(orphans)
            counts = {key: len(pins.pinned.get(key, ())) for key in live}
            fill = pinned_shares(weights, free, counts)
            total = quotas(fill, {key: len(held[key]) + counts[key] for key in live})
            quota = {key: total.get(key, counts[key]) - counts[key] for key in live}
        elif share is not None:
            quota = quotas(share, {key: len(buckets) for key, buckets in held.items()})
        loads = bucket_loads(snapshot.bucket_count, snapshot.load)
        equal = all_equal(loads)
        if equal:
            load_total = loads[1] * free if len(loads) > 1 else 0.0
        else:
            load_total = math.fsum(loads) - math.fsum(load_of(loads, b) for b in suspects.values())
        return cls(
            bucket_count=snapshot.bucket_count,
            live=tuple(live),
            weights=weights,
            held=held,
            holdings=holdings,
            suspects=suspects,
            orphans=orphans,
            origin=origin,
            new=tuple(key for key in live if key not in snapshot.assignments),
            departed=tuple(departed),
            max_moves=snapshot.max_moves,
            share=share,
            quota=quota,
            fill=fill,
            pinned=pins.pinned,
            pin_moves=pins.moves,
            pins_ignored=pins.ignored,
            loads=loads,
            equal_loads=equal,
            load_total=load_total,
            tolerance=snapshot.tolerance,
            max_load_moves=snapshot.max_load_moves,
        )

    @property
    def free_count(self) -> int:
        """``B'``: the number of buckets not held by suspect nodes (those the live nodes share)."""
        return self.bucket_count - sum(len(buckets) for buckets in self.suspects.values())

    @property
    def min_moves(self) -> int:
        """``M*``: the fewest moves to a balanced assignment (0 when no node is live).

        With active pins: the pin moves plus the fewest moves that balance the rest.
        """
        if not self.live:
            return 0
        movable = self.free_count - sum(len(buckets) for buckets in self.pinned.values())
        kept = sum(min(len(self.held[key]), q) for key, q in self.quota.items())
        return len(self.pin_moves) + movable - kept

    @property
    def all_orphans(self) -> frozenset[int]:
        """Every orphan, pinned or not (the buckets a plan must place first)."""
        pinned = (move.bucket for move in self.pin_moves if move.source not in self.weights)
        return frozenset(self.orphans).union(pinned)

    def counts(self) -> dict[str, int]:
        """How many buckets each live node holds now."""
        return {key: len(buckets) for key, buckets in self.holdings.items()}

    def is_balanced(self, counts: Mapping[str, int]) -> bool:
        """Whether ``counts`` (buckets per live node, pinned included) is balanced.

        Without pins: every live node holds the floor or the ceiling of its share
        (:func:`allot.planner.balance.is_balanced`). With pins: every node in ``fill`` holds the
        floor or the ceiling of its share there, and every other live node (its pins exceed its
        share) holds exactly its pinned buckets.
        """
        if self.fill is None:
            return False
        rest = (key for key in self.live if key not in self.fill.floors)
        return is_balanced(self.fill, counts) and all(
            counts.get(key, 0) == len(self.pinned.get(key, ())) for key in rest
        )


@dataclass(frozen=True, slots=True)
class _Pins:
    """The snapshot's pins sorted into active (``pinned``, ``moves``) and ``ignored``."""

    pinned: dict[str, tuple[int, ...]]
    moves: tuple[Move, ...]
    ignored: tuple[IgnoredPin, ...]
    bucket_set: frozenset[int]

    @classmethod
    def resolve(
        cls,
        snapshot: Snapshot,
        weights: Mapping[str, float],
        holdings: Mapping[str, tuple[int, ...]],
        suspects: Mapping[str, tuple[int, ...]],
        orphans: set[int],
        origin: Mapping[int, str],
    ) -> _Pins:
        """Sort ``snapshot.pins`` (by bucket) into active and ignored pins."""
        if not snapshot.pins:
            return cls({}, (), (), frozenset())
        holder = {bucket: key for key, buckets in holdings.items() for bucket in buckets}
        suspect_of = {bucket: key for key, buckets in suspects.items() for bucket in buckets}
        pinned: dict[str, list[int]] = {}
        placements: list[Move] = []
        transfers: list[Move] = []
        ignored: list[IgnoredPin] = []
        for bucket, node in snapshot.pins.items():  # sorted by bucket in Snapshot
            if node not in weights:
                ignored.append(IgnoredPin(bucket, node, _not_live(snapshot, node)))
            elif bucket in suspect_of:
                reason = f"suspect node {suspect_of[bucket]!r} holds it"
                ignored.append(IgnoredPin(bucket, node, reason))
            else:
                pinned.setdefault(node, []).append(bucket)
                if bucket in orphans:
                    placements.append(Move(bucket, origin.get(bucket), node))
                elif holder[bucket] != node:
                    transfers.append(Move(bucket, holder[bucket], node))
        active = {key: tuple(buckets) for key, buckets in sorted(pinned.items())}
        every = frozenset(bucket for buckets in active.values() for bucket in buckets)
        return cls(active, (*placements, *transfers), tuple(ignored), every)

    def movable(self, buckets: tuple[int, ...]) -> tuple[int, ...]:
        """``buckets`` without the actively pinned ones."""
        every = self.bucket_set
        return tuple(bucket for bucket in buckets if bucket not in every)


def _not_live(snapshot: Snapshot, node: str) -> str:
    """Why a pin to ``node`` (not live) is ignored: ``node suspect``, ``offline`` or unknown."""
    info = snapshot.nodes.get(node)
    if info is not None:
        return f"node {info.state.value}"
    if node in snapshot.assignments:
        return "node offline"
    return "node unknown"

"""The planning problem: a snapshot sorted into what may move, what may not, and where to.

:class:`Problem` is what every strategy works from. It applies the node-state rules of DESIGN.md
once, so strategies cannot get them wrong:

- live nodes are the only ones that may receive buckets;
- suspect nodes keep exactly what they hold and receive nothing;
- offline nodes (state ``offline``, or listed in ``assignments`` but not in ``nodes``) hold
  nothing any more: their buckets, together with the buckets nobody holds, are the *orphans*
  that must be placed on live nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from allot.planner.balance import Shares, quotas, shares
from allot.planner.model import NodeState, Snapshot


@dataclass(frozen=True, slots=True)
class Problem:
    """A snapshot classified for planning. Build one with :meth:`from_snapshot`.

    Attributes:
        bucket_count: bucket ids are ``1..bucket_count``.
        live: keys of the live nodes, sorted.
        weights: the weight of each live node.
        held: the buckets each live node holds now (sorted tuples; empty when it holds none).
        suspects: the buckets each suspect node holds (sorted tuples), which no plan may move.
        orphans: buckets held by offline nodes or by nobody, ascending.
        origin: for each orphan an offline node held, that node (unowned orphans are absent).
        new: live nodes with no entry at all in ``assignments`` (nodes that just joined).
        departed: offline nodes that still have an entry in ``assignments``, sorted.
        max_moves: the snapshot's move limit, ``None`` for none.
        share: the exact weighted share of ``free_count`` buckets of each live node (``None``
            when no node is live).
        quota: the balanced quota of each live node that keeps the most buckets in place
            (:func:`allot.planner.balance.quotas`; empty when no node is live).
    """

    bucket_count: int
    live: tuple[str, ...]
    weights: Mapping[str, float]
    held: Mapping[str, tuple[int, ...]]
    suspects: Mapping[str, tuple[int, ...]]
    orphans: tuple[int, ...]
    origin: Mapping[int, str]
    new: tuple[str, ...]
    departed: tuple[str, ...]
    max_moves: int | None
    share: Shares | None
    quota: Mapping[str, int]

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> Problem:
        """Classify ``snapshot``'s nodes and buckets and compute the quotas.

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
        held = {key: tuple(snapshot.assignments.get(key, ())) for key in live}
        origin: dict[int, str] = {}
        departed: list[str] = []
        for key, buckets in snapshot.assignments.items():  # sorted by key in Snapshot
            if key not in weights and key not in suspects:
                departed.append(key)
                origin.update(dict.fromkeys(buckets, key))
        listed = sum(len(buckets) for buckets in snapshot.assignments.values())
        orphans = set(origin)
        if listed < snapshot.bucket_count:  # some bucket has no holder at all
            owned = orphans.union(*held.values(), *suspects.values())
            orphans.update(set(range(1, snapshot.bucket_count + 1)) - owned)
        free = snapshot.bucket_count - sum(len(buckets) for buckets in suspects.values())
        share = shares(weights, free) if weights else None
        counts = {key: len(buckets) for key, buckets in held.items()}
        return cls(
            bucket_count=snapshot.bucket_count,
            live=tuple(live),
            weights=weights,
            held=held,
            suspects=suspects,
            orphans=tuple(sorted(orphans)),
            origin=origin,
            new=tuple(key for key in live if key not in snapshot.assignments),
            departed=tuple(departed),
            max_moves=snapshot.max_moves,
            share=share,
            quota=quotas(share, counts) if share is not None else {},
        )

    @property
    def free_count(self) -> int:
        """``B'``: the number of buckets not held by suspect nodes (those the live nodes share)."""
        return self.bucket_count - sum(len(buckets) for buckets in self.suspects.values())

    @property
    def min_moves(self) -> int:
        """``M*``: the fewest moves to a balanced assignment (0 when no node is live)."""
        kept = sum(min(len(self.held[key]), q) for key, q in self.quota.items())
        return self.free_count - kept if self.live else 0

    def counts(self) -> dict[str, int]:
        """How many buckets each live node holds now."""
        return {key: len(buckets) for key, buckets in self.held.items()}

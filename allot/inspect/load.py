"""How the measured work is spread over the nodes, as operators see it: each node's load (the
seconds of table work its buckets took over ``ALLOT_LOAD_WINDOW``), each live node's fair share
of the total and the ratio of the two, the cluster's load ratio and the heaviest buckets.

Pure: it takes what :func:`allot.zk.load.read_load` read and the assignment; ``allot status``,
``allot nodes``, the bucket map and the metrics show what it computes. The rules and the
arithmetic are the planner's (:mod:`allot.planner.loads`; DESIGN.md, "Assignment by measured
work"):

- a bucket nobody measured counts as the mean of the measured buckets;
- the total is the load of the buckets the live nodes share: every bucket but those a suspect
  node holds (no plan moves them), unowned buckets and an offline node's included;
- a live node's fair share is ``w_n / sum(w)`` of that total, its ratio ``load_n / share_n``;
- the load ratio is the largest ratio over the live nodes.

With nothing measured, or only zeros, there is no ratio (None) and every load is 0: no load
tells nothing (the planner then counts every bucket as 1, so its ``load_ratio_before`` is the
ratio of the bucket counts).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from allot.planner.loads import bucket_loads, load_of, load_shares

HEAVIEST = 5
"""How many of the heaviest buckets ``allot status`` lists."""


@dataclass(frozen=True)
class NodeLoad:
    """One node's ``load`` (seconds over the window, unmeasured buckets counted as the mean);
    ``share`` (seconds) and ``ratio`` for a live node only, ``ratio`` None while the share
    is 0."""

    load: float
    share: float | None = None
    ratio: float | None = None


@dataclass(frozen=True)
class LoadSpread:
    """The load of every bucket and node (see the module docstring for the rules).

    ``measured``: the seconds of the measured buckets as read; ``mean``: what an unmeasured
    bucket counts as (0 with nothing measured); ``nodes``: every node given, with its load;
    ``total``: the load the live nodes share; ``ratio``: the load ratio (None without live
    nodes or without load).
    """

    bucket_count: int
    measured: Mapping[int, float]
    mean: float
    nodes: Mapping[str, NodeLoad]
    total: float
    ratio: float | None

    def load_of(self, bucket: int) -> float:
        """The load ``bucket`` counts for: its measured seconds, else the mean."""
        return self.measured.get(bucket, self.mean)

    def heaviest(self, count: int = HEAVIEST) -> list[tuple[int, float]]:
        """The ``count`` measured buckets with the most load, heaviest first (ties: lower id
        first), as ``(bucket, seconds)``; unmeasured buckets are never listed."""
        return heapq.nsmallest(count, self.measured.items(), key=lambda item: (-item[1], item[0]))


def load_spread(
    bucket_count: int,
    measured: Mapping[int, float],
    held: Mapping[str, Iterable[int]],
    weights: Mapping[str, float],
    suspects: Collection[str] = (),
) -> LoadSpread:
    """Spread ``measured`` (seconds per bucket id) over the nodes.

    Args:
        bucket_count: bucket ids are ``1..bucket_count``; measurements of other ids are
            ignored.
        measured: seconds of table work per measured bucket (``>= 0``).
        held: the buckets each node holds (live, suspect or offline).
        weights: the weight (``> 0``) of every live node.
        suspects: the suspect nodes: their buckets are left out of the total.

    Returns:
        A :class:`LoadSpread` with an entry in ``nodes`` for every node of ``held`` or
        ``weights``. ``O(buckets + nodes)``.
    """
    kept = {
        bucket: float(seconds)
        for bucket, seconds in measured.items()
        if 1 <= bucket <= bucket_count
    }
    # the planner's own arithmetic (mean for the unmeasured, correctly rounded sums), except
    # that nothing measured is no load here, where the planner counts every bucket as 1
    loads = bucket_loads(bucket_count, kept) if kept else (0.0,) * (bucket_count + 1)
    mean = math.fsum(kept.values()) / len(kept) if kept else 0.0
    node_loads = {
        key: load_of(loads, (b for b in held.get(key, ()) if 1 <= b <= bucket_count))
        for key in sorted(set(held) | set(weights))
    }
    total = math.fsum(loads) - math.fsum(node_loads[key] for key in suspects if key in node_loads)
    total = max(total, 0.0)  # float rounding never makes it negative
    shares = load_shares(weights, total) if weights else {}
    nodes: dict[str, NodeLoad] = {}
    for key, load in node_loads.items():
        share = shares.get(key)
        if share is None:
            nodes[key] = NodeLoad(load)
        else:
            nodes[key] = NodeLoad(load, share, load / share if share > 0 else None)
    ratios = [node.ratio for node in nodes.values() if node.ratio is not None]
    return LoadSpread(
        bucket_count=bucket_count,
        measured=kept,
        mean=mean,
        nodes=nodes,
        total=total,
        ratio=max(ratios) if ratios else None,
    )


def rounded(value: float | None) -> float | None:
    """Seconds or a ratio to three decimals for JSON (None stays None): the precision
    ``allot status`` and the bucket map give."""
    return None if value is None else round(value, 3)

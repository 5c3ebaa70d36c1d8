"""What the buckets cost: effective bucket loads, load shares and the load ratio.

DESIGN.md, "Assignment by measured work". A bucket's *load* is the seconds of table work its runs
took over the measurement window. A bucket with no measurement counts as the mean of the
measured ones; with no measurement at all every bucket counts as 1 (equal loads: the load of a
node is then its bucket count).

For the live nodes ``n`` with weights ``w_n``, let ``T'`` be the load of the buckets not held by
suspect nodes (the load the live nodes share, orphans included). Node ``n``'s *load share* is
``T' * w_n / sum(w)`` and the **load ratio** of an assignment is the largest ``load_n /
share_n`` over the live nodes: 1.0 is perfect, 1.15 means the busiest node carries 15 % more
than its share. Conventions: a zero total load gives ratio 1.0 (nothing to balance); no live node
gives 0.0 (as the spreads do). Node loads are summed with :func:`math.fsum` (correctly rounded,
so the same buckets give the same load in any order, which keeps "plan again, move nothing"
exact).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence

EQUAL_LOAD = 1.0
"""The load of every bucket when nothing is measured."""


def bucket_loads(bucket_count: int, measured: Mapping[int, float] | None) -> tuple[float, ...]:
    """The effective load of every bucket, indexed by bucket id (index 0 is unused, 0.0).

    ``measured`` maps bucket ids to seconds (validated by the snapshot). Unmeasured buckets get
    the mean of the measured ones; with nothing measured, every bucket gets :data:`EQUAL_LOAD`.
    """
    if not measured:
        return (0.0, *([EQUAL_LOAD] * bucket_count))
    mean = math.fsum(measured.values()) / len(measured)
    loads = [mean] * (bucket_count + 1)
    loads[0] = 0.0
    for bucket, seconds in measured.items():
        loads[bucket] = seconds
    return tuple(loads)


def all_equal(loads: Sequence[float]) -> bool:
    """Whether every bucket (ids ``1..``) has the same load."""
    return len(loads) <= 2 or min(loads[1:]) == max(loads[1:])


def load_of(loads: Sequence[float], buckets: Iterable[int]) -> float:
    """The total load of ``buckets`` (correctly rounded)."""
    return math.fsum(loads[bucket] for bucket in buckets)


def load_shares(weights: Mapping[str, float], total: float) -> dict[str, float]:
    """Each node's load share ``total * w_n / sum(w)`` (``total`` is ``T'``)."""
    weight_sum = math.fsum(weights.values())
    return {key: total * weight / weight_sum for key, weight in weights.items()}


def ratio_of(load: float, share: float) -> float:
    """``load / share``; a share that underflowed to 0 gives 0 for no load, else infinity."""
    if share > 0:
        return load / share
    return 0.0 if load <= 0 else math.inf


def load_ratio(
    loads: Sequence[float],
    weights: Mapping[str, float],
    held: Mapping[str, Collection[int]],
    total: float,
    *,
    equal: bool = False,
) -> float:
    """The largest ``load_n / share_n`` over the nodes of ``weights``.

    ``held`` gives the buckets of each node (missing: none), ``total`` is ``T'``, the load the
    nodes share. 1.0 when ``total`` is 0, 0.0 when ``weights`` is empty. ``equal``: every
    bucket has the load ``loads[1]``, so a node's load is that times its bucket count (the
    same float :func:`load_of` sums: one correctly rounded product), without a pass over its
    buckets.
    """
    if not weights:
        return 0.0
    if total <= 0:
        return 1.0
    shares = load_shares(weights, total)
    if equal and len(loads) > 1:
        each = loads[1]
        return max(ratio_of(each * len(held.get(key, ())), shares[key]) for key in weights)
    return max(ratio_of(load_of(loads, held.get(key, ())), shares[key]) for key in weights)

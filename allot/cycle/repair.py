"""Making what ZooKeeper holds plannable, whatever a foreign writer left there.

Pure. The assignment subtree is shared with Amoro's layout, so anything may be found in it: a
bucket id out of range (``["1","5","999"]``), a bucket listed under two nodes (two assigners on
one root, a hand edit), ids a node lists twice. The planner refuses such a snapshot, and a
refused snapshot would stop every cycle, failover included (DESIGN.md: "what ZooKeeper holds
never stops a cycle"). :func:`repair_holdings` turns the stored lists into a valid assignment
and says what it dropped; the cycle plans from the repaired lists and, because the apply writes
every node whose list differs from what is stored, the next applied plan repairs ZooKeeper.

Which listing of a double-listed bucket survives, in order (deterministic, the same in every
cycle and on every worker):

1. the node holding the bucket's lease (it may be running the bucket's work right now);
2. a live node (a suspect or offline node is gone or going);
3. the node that sorts first by key.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Repair:
    """The result of :func:`repair_holdings`.

    ``held`` is a valid assignment (every id in range, each bucket under one node, lists
    sorted); ``problems`` says, per node, what was dropped from its stored list and why (empty
    when ZooKeeper held nothing to repair).
    """

    held: dict[str, list[int]]
    problems: dict[str, str] = field(default_factory=dict)


def repair_holdings(
    held: Mapping[str, Sequence[int]],
    bucket_count: int,
    live: Collection[str],
    lease_holders: Mapping[int, str] | None = None,
) -> Repair:
    """Drop out-of-range ids and resolve buckets listed under several nodes.

    Args:
        held: every readable node's stored bucket list.
        bucket_count: valid ids are ``1..bucket_count``.
        live: the live node keys.
        lease_holders: ``{bucket: node_key}`` of the buckets' leases, when known.
    """
    listed = sum(len(buckets) for buckets in held.values())
    distinct: set[int] = set().union(*held.values())
    all_in_range = not distinct or (min(distinct) >= 1 and max(distinct) <= bucket_count)
    if len(distinct) == listed and all_in_range:
        return Repair({key: sorted(buckets) for key, buckets in held.items()})  # nothing to do
    lease_holders = lease_holders or {}
    dropped: dict[str, list[str]] = {}
    owner: dict[int, str] = {}  # the first lister of every bucket
    listers: dict[int, list[str]] = {}  # every lister of the buckets listed more than once
    for key in sorted(held):
        in_range = {b for b in held[key] if 1 <= b <= bucket_count}
        if len(in_range) != len(set(held[key])):
            out_of_range = sorted({b for b in held[key] if not 1 <= b <= bucket_count})
            dropped.setdefault(key, []).append(
                f"bucket id(s) {format_ids(out_of_range)} out of range 1..{bucket_count}"
            )
        for bucket in in_range:
            first = owner.setdefault(bucket, key)
            if first != key:
                listers.setdefault(bucket, [first]).append(key)
    kept: dict[str, list[int]] = {key: [] for key in held}
    for bucket, key in owner.items():
        if bucket not in listers:
            kept[key].append(bucket)
    lost: dict[tuple[str, str], list[int]] = {}
    for bucket, keys in sorted(listers.items()):
        winner = min(keys, key=lambda k: (lease_holders.get(bucket) != k, k not in live, k))
        kept[winner].append(bucket)
        for key in keys:
            if key != winner:
                lost.setdefault((key, winner), []).append(bucket)
    for buckets in kept.values():
        buckets.sort()
    for (key, winner), buckets in sorted(lost.items()):
        dropped.setdefault(key, []).append(
            f"bucket(s) {format_ids(buckets)} also listed by {winner}"
        )
    return Repair(kept, {key: "; ".join(reasons) for key, reasons in sorted(dropped.items())})


def format_ids(buckets: Sequence[int]) -> str:
    """Bucket ids for a message: the first ten, then how many more."""
    shown = ", ".join(str(b) for b in buckets[:10])
    return shown if len(buckets) <= 10 else f"{shown} and {len(buckets) - 10} more"

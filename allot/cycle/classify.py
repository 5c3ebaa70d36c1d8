"""Which nodes are live, suspect or offline in one cycle, and the planner's snapshot.

Pure: :func:`allot.cycle.observe.observe` reads ZooKeeper and SQL, hands the facts here, and gets
back the classification of DESIGN.md ("Buckets, nodes, tables"; states are
:class:`~models.states.NodeState`):

- ``live``: its ephemeral membership znode exists.
- ``suspect``: it holds buckets, its membership znode is gone, and less than
  ``node_offline_timeout`` has passed since a cycle first saw it gone. It keeps its buckets
  and receives none.
- ``offline``: gone for longer, or gone and holding nothing (an empty or corrupt entry). Its
  entry is removed and its buckets are redistributed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from allot.planner import NodeInfo, NodeState, Snapshot
from allot.planner.model import DEFAULT_MAX_LOAD_MOVES, DEFAULT_TOLERANCE


@dataclass(frozen=True)
class Classification:
    """One cycle's view of the nodes.

    ``live`` maps live nodes to their weights; ``suspect`` maps suspect nodes to the seconds
    left in their grace period; ``offline`` lists nodes whose entries go; ``departed_at``
    holds, for every node that is not live but still has an entry, when it was first seen gone
    (``newly_departed``: first seen gone by this cycle); ``joined`` lists live nodes with no
    entry yet.
    """

    live: Mapping[str, float]
    suspect: Mapping[str, float]
    offline: tuple[str, ...]
    departed_at: Mapping[str, dt.datetime]
    newly_departed: tuple[str, ...]
    joined: tuple[str, ...]

    @property
    def next_deadline(self) -> float | None:
        """Seconds until the first suspect node turns offline (None: no suspect node)."""
        return min(self.suspect.values(), default=None)

    def state_of(self, key: str) -> NodeState:
        """The state of node ``key``: live, suspect, or else offline (whether its entry goes
        now or it has none)."""
        if key in self.live:
            return NodeState.LIVE
        if key in self.suspect:
            return NodeState.SUSPECT
        return NodeState.OFFLINE


def classify(
    live: Mapping[str, float],
    held: Mapping[str, Sequence[int]],
    entries: Collection[str],
    departed: Mapping[str, dt.datetime],
    now: dt.datetime,
    offline_timeout: float,
) -> Classification:
    """Classify the nodes of one cycle.

    Args:
        live: live node keys and their weights (from membership).
        held: the buckets of every readable assignment entry.
        entries: every node key with an assignment entry, readable or corrupt.
        departed: when each departed node was first seen gone (from earlier cycles).
        now: the cycle's clock.
        offline_timeout: the grace period in seconds.
    """
    suspect: dict[str, float] = {}
    offline: list[str] = []
    departed_at: dict[str, dt.datetime] = {}
    newly: list[str] = []
    for key in sorted(entries):
        if key in live:
            continue
        if not held.get(key):
            offline.append(key)
            continue
        first_seen_gone = departed.get(key)
        if first_seen_gone is None:
            first_seen_gone = now
            newly.append(key)
        departed_at[key] = first_seen_gone
        left = offline_timeout - (now - first_seen_gone).total_seconds()
        if left > 0:
            suspect[key] = left
        else:
            offline.append(key)
    return Classification(
        live=dict(live),
        suspect=suspect,
        offline=tuple(offline),
        departed_at=departed_at,
        newly_departed=tuple(newly),
        joined=tuple(sorted(key for key in live if key not in entries)),
    )


def planner_snapshot(
    classification: Classification,
    held: Mapping[str, Sequence[int]],
    bucket_count: int,
    max_moves: int | None = None,
    *,
    load: Mapping[int, float] | None = None,
    pins: Mapping[int, str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_load_moves: int = DEFAULT_MAX_LOAD_MOVES,
) -> Snapshot:
    """The planner's snapshot for ``classification`` (offline nodes' buckets become orphans),
    with the measured ``load`` and the ``pins`` (:mod:`allot.cycle.measured`)."""
    nodes = {key: NodeInfo(weight, NodeState.LIVE) for key, weight in classification.live.items()}
    nodes |= {key: NodeInfo(state=NodeState.SUSPECT) for key in classification.suspect}
    nodes |= {key: NodeInfo(state=NodeState.OFFLINE) for key in classification.offline}
    return Snapshot(
        bucket_count=bucket_count,
        nodes=nodes,
        assignments={key: tuple(buckets) for key, buckets in held.items() if buckets},
        max_moves=max_moves,
        load=load,
        pins=pins or {},
        tolerance=tolerance,
        max_load_moves=max_load_moves,
    )

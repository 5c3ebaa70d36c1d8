"""``amoro``: Apache Amoro's bucket assignment (``AmsAssignService``), for comparison.

What is reproduced, step by step, from Amoro's master-slave ``AmsAssignService.doAssign``:

- A *node change* is a live node with no entry in ``assignments`` (a "new" node) or an offline
  node that still has one. Amoro ignores weights: every live node counts as 1, with
  ``target, remainder = divmod(B', live nodes)``.
- On a node change:

  1. each bucket of an offline node goes to the live node holding the fewest buckets at that
     moment (new nodes included);
  2. each new node, in key order, gets ``target`` buckets, plus one while
     ``(existing nodes above target) + (new nodes served before it) < remainder``; what it
     lacks is collected round-robin, one bucket per turn, from the existing (not new) live
     nodes sorted by bucket count, most first, taking each node's first bucket in its list,
     whether or not that node is above its target;
  3. buckets still without an owner go, one by one, to the least-loaded live node.

- With no node change, when ``max - min > 1`` among the live nodes: the nodes sorted by count
  (most first) get ``target + 1`` for the first ``remainder`` of them and ``target`` for the
  rest; each gives up the buckets at the end of its list beyond that, and those go one by one
  to the least-loaded node.

Differences from Amoro, so that all strategies are compared on the same rules:

- suspect nodes keep their buckets. Amoro's final "unassigned buckets" step would hand a
  suspect node's buckets to live nodes while it still holds them (a double owner); here
  ``B'`` excludes them and they never move;
- buckets nobody holds are placed on the least-loaded node in every case (Amoro only does so
  during a node change);
- ties (equal counts) go to the smaller node key, where Amoro uses ZooKeeper's child order;
  bucket lists are in ascending id order (Amoro appends to the stored list), so "first
  bucket" means the lowest id and "end of the list" the highest;
- offline buckets are placed in ascending id order (Amoro: node by node);
- pins (Amoro has none): a node's pinned buckets count toward its bucket count in every step
  above, but are never taken from it (they are not in its list).
"""

from __future__ import annotations

import heapq

from allot.planner.model import Move
from allot.planner.problem import Problem
from allot.planner.strategies.base import Strategy


class AmoroStrategy(Strategy):
    """Apache Amoro's assignment (unweighted, round-robin take-over); see the module doc."""

    name = "amoro"
    summary = "Apache Amoro's assignment: least-loaded placement, round-robin take-over"

    def propose(self, problem: Problem) -> list[Move]:
        """Run Amoro's steps on ``problem`` and return the resulting moves, orphans first."""
        lists = {key: list(problem.held[key]) for key in problem.live}
        pins = {key: len(problem.pinned.get(key, ())) for key in problem.live}
        target, remainder = divmod(problem.free_count, len(problem.live))
        unowned = [bucket for bucket in problem.orphans if bucket not in problem.origin]
        if problem.new or problem.departed:
            _place(lists, pins, [bucket for bucket in problem.orphans if bucket in problem.origin])
            _serve_new_nodes(lists, pins, problem.new, target, remainder)
        elif _unbalanced(lists, pins):
            _place(lists, pins, _excess(lists, pins, target, remainder))
        _place(lists, pins, unowned)
        return _diff(problem, lists)


def _place(lists: dict[str, list[int]], pins: dict[str, int], buckets: list[int]) -> None:
    """Give each bucket, in order, to the node holding the fewest (ties: smaller key)."""
    if not buckets:
        return
    loads = [(len(bucket_list) + pins[key], key) for key, bucket_list in lists.items()]
    heapq.heapify(loads)
    for bucket in buckets:
        count, key = loads[0]
        lists[key].append(bucket)
        heapq.heapreplace(loads, (count + 1, key))


def _serve_new_nodes(
    lists: dict[str, list[int]],
    pins: dict[str, int],
    new: tuple[str, ...],
    target: int,
    remainder: int,
) -> None:
    """Amoro's ``balanceBucketsForNewNodes``: new nodes take from existing ones round-robin."""
    existing = [key for key in lists if key not in new]
    extra_taken = sum(1 for key in existing if len(lists[key]) + pins[key] > target)
    for index, key in enumerate(new):
        wanted = target + (1 if extra_taken + index < remainder else 0)
        needed = wanted - len(lists[key]) - pins[key]
        if needed > 0:
            lists[key].extend(_collect(lists, pins, existing, needed))


def _collect(
    lists: dict[str, list[int]], pins: dict[str, int], existing: list[str], needed: int
) -> list[int]:
    """Amoro's ``collectBucketsFromExistingNodes``: one first bucket per node per turn."""
    ring = sorted(existing, key=lambda key: -len(lists[key]) - pins[key])  # stable: ties by key
    taken: list[int] = []
    index = 0
    while len(taken) < needed and ring:
        source = ring[index % len(ring)]
        if lists[source]:
            taken.append(lists[source].pop(0))
            index += 1
        else:
            ring.remove(source)
            if ring:
                index %= len(ring)
    return taken


def _unbalanced(lists: dict[str, list[int]], pins: dict[str, int]) -> bool:
    """Amoro's ``isUnbalanced``: more than one node and ``max - min > 1``."""
    counts = [len(bucket_list) + pins[key] for key, bucket_list in lists.items()]
    return len(counts) > 1 and max(counts) - min(counts) > 1


def _excess(
    lists: dict[str, list[int]], pins: dict[str, int], target: int, remainder: int
) -> list[int]:
    """Amoro's ``rebalanceExistingAssignments``, first pass: strip each node to its target."""
    excess: list[int] = []
    for rank, key in enumerate(sorted(lists, key=lambda key: -len(lists[key]) - pins[key])):
        keep = target + (1 if rank < remainder else 0)
        while lists[key] and len(lists[key]) + pins[key] > keep:
            excess.append(lists[key].pop())
    return excess


def _diff(problem: Problem, lists: dict[str, list[int]]) -> list[Move]:
    """The moves from ``problem``'s holders to ``lists``: orphans first, then by bucket id."""
    before = {bucket: key for key, buckets in problem.held.items() for bucket in buckets}
    before.update(problem.origin)
    moves = [
        Move(bucket, before.get(bucket), key)
        for key, bucket_list in lists.items()
        for bucket in bucket_list
        if before.get(bucket) != key
    ]
    orphans = set(problem.orphans)
    moves.sort(key=lambda move: (move.bucket not in orphans, move.bucket))
    return moves

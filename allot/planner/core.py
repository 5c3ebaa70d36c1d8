"""The planner: a snapshot in, a plan out. Pure: no I/O, no clock, no randomness.

:func:`plan` runs the parts every strategy shares: classify the snapshot
(:class:`~allot.planner.problem.Problem`), ask the strategy for moves, check them, put the pin
moves in front (pins are kept the same way for every strategy: the strategy never sees a pinned
bucket as movable), apply ``max_moves`` (buckets of offline nodes and unowned buckets first,
then the others, at most ``max_moves`` in all), build the new assignment and the statistics.
:func:`plan_from_json` is the same behind the JSON contract of DESIGN.md.

Same snapshot, same plan: nodes are handled in key order and buckets in id order everywhere, so
no result depends on the order of keys or bucket lists in the input.

No live node: nothing can move. The plan then has no moves, keeps the suspect nodes' buckets,
lists the orphans (buckets of offline nodes and unowned buckets) in ``stats.unplaced``, reports
``min_moves``, both spreads and both load ratios as 0, ignores every pin, and says why in
``stats.warnings``. It is not an error: the assignment cycle must survive a moment when every
worker is down.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from typing import Any

from allot.planner.balance import spread
from allot.planner.loads import load_ratio
from allot.planner.model import IgnoredPin, Move, Plan, PlanStats, Snapshot
from allot.planner.parse import snapshot_from_json
from allot.planner.problem import Problem
from allot.planner.strategies import DEFAULT_STRATEGY, get_strategy


def plan(snapshot: Snapshot, strategy: str = DEFAULT_STRATEGY) -> Plan:
    """Plan the moves that take ``snapshot`` to a new assignment, with the named strategy.

    With the default strategy (``balanced``) the result is balanced (every live node holds the
    floor or the ceiling of its weighted share of the buckets not held by suspects) and moves
    exactly ``stats.min_moves`` buckets, unless ``snapshot.max_moves`` is smaller.

    Pins, with every strategy: a bucket pinned to a live node ends on that node (unless
    ``max_moves`` cuts the plan first) and is never moved by the strategy; a pin to a node that
    is not live, or of a bucket a suspect node holds, is ignored and listed in
    ``stats.pins_ignored`` and ``stats.warnings``. With ``balanced`` and pins, "balanced" means
    :meth:`~allot.planner.problem.Problem.is_balanced`: a node whose pins exceed its share holds
    exactly its pins, every other live node the floor or ceiling of its share of the rest
    (water-filling); the plan moves the pinned buckets plus the fewest unpinned buckets that
    reach that (``stats.min_moves``).

    Raises:
        ConfigurationError: ``strategy`` is not a known strategy name.
    """
    chosen = get_strategy(strategy)
    problem = Problem.from_snapshot(snapshot)
    share = problem.share
    if share is None:
        return _without_live_nodes(problem, chosen.name)
    before = problem.counts()
    proposed = chosen.propose(problem)
    _check(problem, proposed, chosen.name)
    if problem.pin_moves:
        proposed = [*problem.pin_moves, *proposed]
    moves = _limit(problem, proposed)
    assignments = _apply(problem, moves)
    after = {key: len(assignments[key]) for key in problem.live}
    placed = {move.bucket for move in moves}
    unplaced = tuple(sorted(bucket for bucket in problem.all_orphans if bucket not in placed))
    loads, weights, total = problem.loads, problem.weights, problem.load_total
    stats = PlanStats(
        moves=len(moves),
        min_moves=problem.min_moves,
        spread_before=spread(share, before),
        spread_after=spread(share, after),
        strategy=chosen.name,
        balanced=not unplaced and problem.is_balanced(after),
        unplaced=unplaced,
        warnings=_warnings(problem, proposed, moves, unplaced),
        load_ratio_before=load_ratio(
            loads, weights, problem.holdings, total, equal=problem.equal_loads
        ),
        load_ratio_after=load_ratio(loads, weights, assignments, total, equal=problem.equal_loads),
        pins_ignored=problem.pins_ignored,
    )
    ordered = tuple(sorted(moves, key=lambda move: move.bucket))
    return Plan(assignments=assignments, moves=ordered, stats=stats)


def plan_from_json(snapshot: Mapping[str, Any], strategy: str = DEFAULT_STRATEGY) -> dict[str, Any]:
    """The planner contract of DESIGN.md: the snapshot's JSON object in, the plan's JSON out.

    The plan is ``{"assignments": {...}, "moves": [...], "stats": {...}}``; ``stats`` has
    ``moves``, ``min_moves``, ``spread_before``, ``spread_after``, ``strategy``, ``balanced``,
    ``unplaced`` and ``warnings`` (see :class:`~allot.planner.model.PlanStats`).

    Raises:
        InvalidSnapshot: the snapshot breaks the contract; the one-line message names the
            problem (see :func:`~allot.planner.parse.snapshot_from_json`).
        ConfigurationError: ``strategy`` is not a known strategy name.
    """
    return plan(snapshot_from_json(snapshot), strategy).to_json()


def _without_live_nodes(problem: Problem, strategy: str) -> Plan:
    """The plan when no node is live: nothing moves, the orphans stay unplaced."""
    message = "no live node: nothing can move"
    if problem.all_orphans:
        message += f"; {len(problem.all_orphans)} bucket(s) stay unplaced until a node is live"
    orphans = tuple(sorted(problem.all_orphans))
    stats = PlanStats(
        moves=0,
        min_moves=0,
        spread_before=0,
        spread_after=0,
        strategy=strategy,
        balanced=not orphans,
        unplaced=orphans,
        warnings=(message, *_pin_warnings(problem.pins_ignored)),
        load_ratio_before=0,
        load_ratio_after=0,
        pins_ignored=problem.pins_ignored,
    )
    return Plan(assignments=dict(problem.suspects), moves=(), stats=stats)


def _check(problem: Problem, proposed: list[Move], strategy: str) -> None:
    """Raise ``RuntimeError`` if a strategy broke the rules of ``Strategy.propose``."""
    orphans = set(problem.orphans)
    origin, held, live = problem.origin, problem.held, problem.weights
    buckets = {move.bucket for move in proposed}
    valid = len(buckets) == len(proposed)  # no bucket moves twice
    for move in proposed if valid else ():
        bucket, source, target = move
        if bucket in orphans:
            ok = source == origin.get(bucket)
        else:
            ok = source is not None and source in held and _contains(held[source], bucket)
        if not ok or target not in live or target == source:
            valid = False
            break
    if not valid:
        raise RuntimeError(f"strategy {strategy!r} proposed invalid moves: {proposed[:5]}")


def _contains(ordered: tuple[int, ...], bucket: int) -> bool:
    """Whether the sorted tuple ``ordered`` contains ``bucket`` (binary search)."""
    index = bisect_left(ordered, bucket)
    return index < len(ordered) and ordered[index] == bucket


def _limit(problem: Problem, proposed: list[Move]) -> list[Move]:
    """At most ``max_moves`` of the proposal: orphan placements first, then the others."""
    limit = problem.max_moves
    if limit is None or len(proposed) <= limit:
        return proposed
    orphans = problem.all_orphans
    first = [move for move in proposed if move.bucket in orphans]
    then = [move for move in proposed if move.bucket not in orphans]
    return (first + then)[:limit]


def _apply(problem: Problem, moves: list[Move]) -> dict[str, tuple[int, ...]]:
    """The assignment of every live and suspect node (sorted by key) after ``moves``."""
    gained: dict[str, list[int]] = {}
    lost: dict[str, set[int]] = {}
    for move in moves:
        gained.setdefault(move.target, []).append(move.bucket)
        if move.source is not None and move.source in problem.holdings:
            lost.setdefault(move.source, set()).add(move.bucket)
    result: dict[str, tuple[int, ...]] = {}
    for key in sorted([*problem.live, *problem.suspects]):
        buckets = problem.suspects.get(key)
        if buckets is None:
            buckets = problem.holdings[key]
            if key in lost:
                buckets = tuple(bucket for bucket in buckets if bucket not in lost[key])
            if key in gained:
                buckets = tuple(sorted((*buckets, *gained[key])))
        result[key] = buckets
    return result


def _warnings(
    problem: Problem, proposed: list[Move], moves: list[Move], unplaced: tuple[int, ...]
) -> tuple[str, ...]:
    """Sentences for the operator: a plan cut short by ``max_moves``, buckets left unplaced,
    pins ignored."""
    notes: list[str] = []
    if len(moves) < len(proposed):
        notes.append(
            f"max_moves={problem.max_moves} cut the plan short: {len(moves)} of "
            f"{len(proposed)} moves made (the minimum is {problem.min_moves}); "
            "plan again to continue"
        )
    if unplaced:
        notes.append(f"{len(unplaced)} bucket(s) stay unplaced: {_ids(unplaced)}")
    notes.extend(_pin_warnings(problem.pins_ignored))
    return tuple(notes)


def _pin_warnings(ignored: tuple[IgnoredPin, ...], shown: int = 5) -> tuple[str, ...]:
    """One sentence for the pins a plan ignores, if any: ``2 pin(s) ignored: bucket 3 -> c@h
    (node offline), ...``."""
    if not ignored:
        return ()
    text = ", ".join(f"bucket {pin.bucket} -> {pin.node} ({pin.reason})" for pin in ignored[:shown])
    more = "" if len(ignored) <= shown else f", ... ({len(ignored)} in all)"
    return (f"{len(ignored)} pin(s) ignored until they can be kept: {text}{more}",)


def _ids(buckets: tuple[int, ...], shown: int = 10) -> str:
    """``1, 2, 3`` or ``1, 2, ... (25 in all)`` for long lists."""
    text = ", ".join(map(str, buckets[:shown]))
    return text if len(buckets) <= shown else f"{text}, ... ({len(buckets)} in all)"

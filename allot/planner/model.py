"""The planner's typed values: a validated :class:`Snapshot` in, a :class:`Plan` out.

Constructing a :class:`Snapshot` validates it, so every snapshot that exists is one the planner
can plan; :func:`allot.planner.parse.snapshot_from_json` builds one from the JSON form. A
:class:`Plan` knows how to turn itself back into the JSON of the planner contract
(:meth:`Plan.to_json`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, pairwise
from typing import Any, NamedTuple

from allot.errors import InvalidNodeKey, InvalidSnapshot
from allot.names import validate_node_key

# The node states are part of the SQL data contract, defined once there; re-exported here.
from models.states import NodeState as NodeState

MAX_BUCKET_COUNT = 1_000_000
"""The largest ``bucket_count`` a snapshot may have (the same bound as ``ALLOT_BUCKET_COUNT``)."""

DEFAULT_TOLERANCE = 1.15
"""The load ratio above which strategy ``load`` moves buckets for load alone."""

DEFAULT_MAX_LOAD_MOVES = 10
"""At most this many moves for load alone per plan (``ALLOT_MAX_LOAD_MOVES``)."""


def check_weight(weight: object, where: str) -> float:
    """Return ``weight`` as a float if it is a finite number > 0.

    ``where`` names the node in the error message.

    Raises:
        InvalidSnapshot: the weight is not a number (booleans are not numbers here), is not
            finite, or is <= 0.
    """
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise InvalidSnapshot(
            f"invalid snapshot: {where} has weight {weight!r}; weights must be numbers > 0"
        )
    value = float(weight)
    if not math.isfinite(value) or value <= 0:
        raise InvalidSnapshot(
            f"invalid snapshot: {where} has weight {weight!r}; weights must be finite and > 0"
        )
    return value


def check_node_key(key: object, where: str) -> str:
    """Return ``key`` if it is a valid node key; ``where`` says where it was found.

    Raises:
        InvalidSnapshot: the key breaks :func:`allot.names.validate_node_key`.
    """
    try:
        return validate_node_key(key)  # type: ignore[arg-type]
    except InvalidNodeKey as exc:
        raise InvalidSnapshot(f"invalid snapshot: {exc} (in {where})") from None


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node as the snapshot describes it: its capacity ``weight`` (> 0) and its ``state``.

    Raises:
        InvalidSnapshot: on construction, if the weight is not a finite number > 0 or the state
            is not a :class:`NodeState`.
    """

    weight: float = 1.0
    state: NodeState = NodeState.LIVE

    def __post_init__(self) -> None:
        weight = self.weight
        if type(weight) is not float or not 0 < weight < math.inf:
            object.__setattr__(self, "weight", check_weight(weight, "a node"))
        if not isinstance(self.state, NodeState):
            raise InvalidSnapshot(
                f"invalid snapshot: unknown node state {self.state!r} "
                "(expected live, suspect or offline)"
            )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the planner plans from: the bucket count, the nodes, who holds what, a move limit.

    ``nodes`` maps node keys to :class:`NodeInfo`. ``assignments`` maps node keys to the bucket
    ids they hold (ids are ``1..bucket_count``); a key found in ``assignments`` but not in
    ``nodes`` is an offline node. Buckets nobody lists are unowned. ``max_moves`` (``None``: no
    limit) caps the moves of a plan. Construction validates everything and stores the bucket
    lists as sorted tuples, so two snapshots that differ only in order are equal.

    Measured work (DESIGN.md, "Assignment by measured work"), all optional:

    - ``load``: seconds of work per bucket (finite, ``>= 0``). A bucket without an entry counts
      as the mean of the measured ones; ``None`` or an empty mapping means equal loads.
    - ``pins``: bucket -> node key. Every strategy keeps a pinned bucket on its node while that
      node is live; a pin to a node that is not live is ignored and reported in the plan.
    - ``tolerance``: the load ratio (``>= 1``) above which strategy ``load`` moves buckets for
      load alone.
    - ``max_load_moves``: at most this many such moves per plan (``>= 0``).

    ``load`` and ``pins`` are stored as dicts sorted by bucket, ``load`` values as floats.

    Raises:
        InvalidSnapshot: on construction: ``bucket_count`` is not an integer in
            ``1..MAX_BUCKET_COUNT``; a node key is invalid; a bucket id is not an integer, is
            out of range, or is listed twice (by one node or by two); ``max_moves`` is negative
            or not an integer; a load is not a finite number ``>= 0`` or names a bucket out of
            range; a pin names a bucket out of range or an invalid node key; ``tolerance`` is
            not a finite number ``>= 1``; ``max_load_moves`` is not an integer ``>= 0``.
    """

    bucket_count: int
    nodes: Mapping[str, NodeInfo] = field(default_factory=dict)
    assignments: Mapping[str, Sequence[int]] = field(default_factory=dict)
    max_moves: int | None = None
    load: Mapping[int, float] | None = None
    pins: Mapping[int, str] = field(default_factory=dict)
    tolerance: float = DEFAULT_TOLERANCE
    max_load_moves: int = DEFAULT_MAX_LOAD_MOVES

    def __post_init__(self) -> None:
        count = self.bucket_count
        if isinstance(count, bool) or not isinstance(count, int):
            raise InvalidSnapshot(
                f"invalid snapshot: bucket_count must be an integer, got {count!r}"
            )
        if not 1 <= count <= MAX_BUCKET_COUNT:
            raise InvalidSnapshot(
                f"invalid snapshot: bucket_count must be in 1..{MAX_BUCKET_COUNT}, got {count}"
            )
        limit = self.max_moves
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise InvalidSnapshot(
                f"invalid snapshot: max_moves must be null or an integer >= 0, got {limit!r}"
            )
        nodes: dict[str, NodeInfo] = {}
        for key in sorted(self.nodes, key=str):
            info = self.nodes[key]
            check_node_key(key, "nodes")
            if not isinstance(info, NodeInfo):
                raise InvalidSnapshot(f"invalid snapshot: node {key!r} is not a NodeInfo")
            nodes[key] = info
        assignments = _checked_assignments(self.assignments, count, nodes)
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "assignments", assignments)
        if self.load is not None:
            object.__setattr__(self, "load", _checked_load(self.load, count))
        object.__setattr__(self, "pins", _checked_pins(self.pins, count))
        object.__setattr__(self, "tolerance", _checked_tolerance(self.tolerance))
        moves = self.max_load_moves
        if isinstance(moves, bool) or not isinstance(moves, int) or moves < 0:
            raise InvalidSnapshot(
                f"invalid snapshot: max_load_moves must be an integer >= 0, got {moves!r}"
            )


def _checked_bucket(bucket: object, count: int, where: str) -> int:
    """``bucket`` if it is an integer id in ``1..count``; ``where`` names the field."""
    if isinstance(bucket, bool) or not isinstance(bucket, int):
        raise InvalidSnapshot(
            f"invalid snapshot: {where} names bucket {bucket!r}; bucket ids are integers"
        )
    if not 1 <= bucket <= count:
        raise InvalidSnapshot(
            f"invalid snapshot: {where} names bucket {bucket}, out of range 1..{count}"
        )
    return bucket


def _checked_load(raw: Mapping[int, float], count: int) -> dict[int, float]:
    """Validate the measured loads; return them as floats in a dict sorted by bucket."""
    if not isinstance(raw, Mapping):
        raise InvalidSnapshot(
            f"invalid snapshot: load must map bucket ids to seconds, got {type(raw).__name__}"
        )
    result: dict[int, float] = {}
    for bucket in sorted(raw, key=_sort_key):
        _checked_bucket(bucket, count, "load")
        value = raw[bucket]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidSnapshot(
                f"invalid snapshot: load of bucket {bucket} is {value!r}; "
                "loads must be numbers >= 0"
            )
        seconds = float(value)
        if not 0 <= seconds < math.inf:  # also refuses NaN
            raise InvalidSnapshot(
                f"invalid snapshot: load of bucket {bucket} is {value!r}; "
                "loads must be finite and >= 0"
            )
        result[bucket] = seconds
    return result


def _checked_pins(raw: Mapping[int, str], count: int) -> dict[int, str]:
    """Validate the pins; return them in a dict sorted by bucket."""
    if not isinstance(raw, Mapping):
        raise InvalidSnapshot(
            f"invalid snapshot: pins must map bucket ids to node keys, got {type(raw).__name__}"
        )
    result: dict[int, str] = {}
    for bucket in sorted(raw, key=_sort_key):
        _checked_bucket(bucket, count, "pins")
        result[bucket] = check_node_key(raw[bucket], f"the pin of bucket {bucket}")
    return result


def _checked_tolerance(value: object) -> float:
    """``value`` as a float if it is a finite number ``>= 1``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSnapshot(f"invalid snapshot: tolerance must be a number >= 1, got {value!r}")
    tolerance = float(value)
    if not 1 <= tolerance < math.inf:
        raise InvalidSnapshot(
            f"invalid snapshot: tolerance must be a finite number >= 1, got {value!r}"
        )
    return tolerance


def _sort_key(bucket: object) -> tuple[bool, str, int]:
    """Sort valid ids numerically and anything else after them, so errors are deterministic."""
    if isinstance(bucket, int) and not isinstance(bucket, bool):
        return (False, "", bucket)
    return (True, repr(bucket), 0)


def _checked_assignments(
    raw: Mapping[str, Sequence[int]], count: int, nodes: Mapping[str, NodeInfo]
) -> dict[str, tuple[int, ...]]:
    """Validate every bucket list and return them as sorted tuples, keys sorted.

    The common case (all valid) is checked in bulk; only a snapshot with a problem takes the
    slower path node by node, so the message names the first node at fault in key order.
    """
    keys = sorted(raw, key=str)
    lists: list[Sequence[int]] = []
    for key in keys:
        if key not in nodes:
            check_node_key(key, "assignments")
        buckets = raw[key]
        if type(buckets) not in (list, tuple):
            buckets = _checked_buckets(key, buckets, count)
        lists.append(buckets)
    every = list(chain.from_iterable(lists))
    valid = (
        set(map(type, every)) <= {int}
        and (not every or (min(every) >= 1 and max(every) <= count))
        and len(set(every)) == len(every)
    )
    if not valid:
        checked = {key: _checked_buckets(key, b, count) for key, b in zip(keys, lists, strict=True)}
        _check_no_duplicates(checked)
    return {key: tuple(sorted(buckets)) for key, buckets in zip(keys, lists, strict=True)}


def _checked_buckets(key: str, buckets: Sequence[int], count: int) -> tuple[int, ...]:
    """Validate one node's bucket list and return it as a sorted tuple."""
    if type(buckets) not in (list, tuple) and (
        isinstance(buckets, str | bytes) or not isinstance(buckets, Sequence)
    ):
        raise InvalidSnapshot(
            f"invalid snapshot: the buckets of node {key!r} must be a list of bucket ids, "
            f"got {type(buckets).__name__}"
        )
    if not set(map(type, buckets)) <= {int}:
        bad = next(b for b in buckets if type(b) is not int)
        raise InvalidSnapshot(
            f"invalid snapshot: node {key!r} lists bucket {bad!r}; bucket ids are integers"
        )
    ordered = tuple(sorted(buckets))
    if ordered and (ordered[0] < 1 or ordered[-1] > count):
        bad_id = ordered[0] if ordered[0] < 1 else ordered[-1]
        raise InvalidSnapshot(
            f"invalid snapshot: bucket {bad_id} of node {key!r} is out of range 1..{count}"
        )
    return ordered


def _check_no_duplicates(assignments: Mapping[str, tuple[int, ...]]) -> None:
    """Raise :class:`InvalidSnapshot` naming the first bucket listed twice, if any."""
    total = sum(len(buckets) for buckets in assignments.values())
    if len(set().union(*assignments.values())) == total:
        return
    owner: dict[int, str] = {}
    for key, buckets in assignments.items():  # keys are sorted: the message is deterministic
        for bucket in buckets:
            first = owner.setdefault(bucket, key)
            if first != key:
                raise InvalidSnapshot(
                    f"invalid snapshot: bucket {bucket} is listed twice "
                    f"(by nodes {first!r} and {key!r})"
                )
        if len(set(buckets)) != len(buckets):
            twice = next(a for a, b in pairwise(buckets) if a == b)
            raise InvalidSnapshot(
                f"invalid snapshot: bucket {twice} is listed twice by node {key!r}"
            )


class Move(NamedTuple):
    """One bucket changing hands: from ``source`` (``None``: nobody held it) to ``target``.

    A named tuple rather than a dataclass: plans can hold tens of thousands of moves and a
    tuple is several times cheaper to create.
    """

    bucket: int
    source: str | None
    target: str

    def to_json(self) -> dict[str, Any]:
        """The contract's JSON form: ``{"bucket": 6, "from": "c@h", "to": "a@h"}``."""
        return {"bucket": self.bucket, "from": self.source, "to": self.target}


class IgnoredPin(NamedTuple):
    """A pin the plan could not keep: ``bucket`` pinned to ``node``, and why (one phrase)."""

    bucket: int
    node: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        """``{"bucket": 3, "node": "c@h", "reason": "node offline"}``."""
        return {"bucket": self.bucket, "node": self.node, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class PlanStats:
    """Numbers that describe a plan.

    - ``moves``: how many buckets the plan moves.
    - ``min_moves``: the fewest moves any balanced plan needs (``M*`` of DESIGN.md), whatever
      the strategy and ``max_moves``; 0 when no node is live.
    - ``spread_before`` / ``spread_after``: how unevenly the live nodes are loaded before and
      after the plan; see :func:`allot.planner.balance.spread`. 0 when no node is live.
    - ``strategy``: the strategy that made the plan.
    - ``balanced``: every live node holds the floor or the ceiling of its share after the plan
      and no bucket is left unplaced.
    - ``unplaced``: buckets nobody owns after the plan (no live node, or ``max_moves`` stopped
      the plan first), ascending.
    - ``warnings``: one sentence per thing an operator should know (no live node, a plan cut
      short by ``max_moves``, pins ignored).
    - ``load_ratio_before`` / ``load_ratio_after``: the load ratio of the live nodes before and
      after the plan (:func:`allot.planner.loads.load_ratio`: the largest ``load_n /
      share_n``, with the snapshot's loads or equal loads when it has none; 1.0 for a zero
      total load, 0 when no node is live). Every strategy reports them.
    - ``pins_ignored``: the pins the plan could not keep (the node is not live, or a suspect
      node holds the bucket), by bucket.
    """

    moves: int
    min_moves: int
    spread_before: float
    spread_after: float
    strategy: str
    balanced: bool
    unplaced: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()
    load_ratio_before: float = 1.0
    load_ratio_after: float = 1.0
    pins_ignored: tuple[IgnoredPin, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON form; whole-number spreads and ratios are written as integers (``1``, not
        ``1.0``)."""
        return {
            "moves": self.moves,
            "min_moves": self.min_moves,
            "spread_before": _number(self.spread_before),
            "spread_after": _number(self.spread_after),
            "strategy": self.strategy,
            "balanced": self.balanced,
            "unplaced": list(self.unplaced),
            "warnings": list(self.warnings),
            "load_ratio_before": _number(self.load_ratio_before),
            "load_ratio_after": _number(self.load_ratio_after),
            "pins_ignored": [pin.to_json() for pin in self.pins_ignored],
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's answer.

    ``assignments`` maps every live and suspect node (sorted by key; never an offline node) to
    the sorted tuple of buckets it holds after the plan. ``moves`` are sorted by bucket.
    """

    assignments: Mapping[str, tuple[int, ...]]
    moves: tuple[Move, ...]
    stats: PlanStats

    def to_json(self) -> dict[str, Any]:
        """The plan as the JSON object of the planner contract (DESIGN.md)."""
        return {
            "assignments": {key: list(buckets) for key, buckets in self.assignments.items()},
            "moves": [move.to_json() for move in self.moves],
            "stats": self.stats.to_json(),
        }


def _number(value: float) -> int | float:
    """``value`` as an int when it is whole (``0`` rather than ``0.0``), else unchanged."""
    return int(value) if float(value).is_integer() else value

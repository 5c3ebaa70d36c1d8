"""Reading the JSON form of a snapshot (DESIGN.md, "Planner contract") into a :class:`Snapshot`.

The JSON form::

    {"bucket_count": 100,
     "nodes": {"a@h": {"weight": 1.0, "state": "live"}, "c@h": {"state": "offline"}},
     "assignments": {"a@h": [1, 2, 3], "c@h": [6]},
     "max_moves": null,
     "load": {"1": 12.5, "6": 0.25},
     "pins": {"3": "a@h"},
     "tolerance": 1.15,
     "max_load_moves": 10}

``bucket_count`` is required. ``nodes`` and ``assignments`` default to empty objects,
``max_moves`` to null (no limit), a node's ``weight`` to 1.0 and its ``state`` to ``"live"``.
``load`` (seconds per bucket) defaults to null (equal loads), ``pins`` to an empty object,
``tolerance`` to 1.15 and ``max_load_moves`` to 10. JSON object keys are strings, so the bucket
keys of ``load`` and ``pins`` are decimal strings (``"12"``, not ``"012"`` or ``"+12"``).
Unknown fields are refused rather than ignored, so a typo such as ``"max_move"`` cannot silently
lift a limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from allot.errors import InvalidSnapshot
from allot.planner.model import (
    DEFAULT_MAX_LOAD_MOVES,
    DEFAULT_TOLERANCE,
    NodeInfo,
    NodeState,
    Snapshot,
    check_weight,
)

SNAPSHOT_FIELDS = (
    "bucket_count",
    "nodes",
    "assignments",
    "max_moves",
    "load",
    "pins",
    "tolerance",
    "max_load_moves",
)
NODE_FIELDS = ("weight", "state")
_NODE_FIELD_SET = frozenset(NODE_FIELDS)
_STATES = {state.value: state for state in NodeState}


def snapshot_from_json(data: object) -> Snapshot:
    """Build a validated :class:`Snapshot` from the snapshot's JSON object (already decoded).

    Raises:
        InvalidSnapshot: a field is missing, unknown or of the wrong JSON type, a node has an
            unknown state or a weight that is not a number > 0, a node key is invalid, a
            bucket id is out of range or listed twice, a load is negative or not finite, a
            ``load`` or ``pins`` key is not a bucket id in range, a pin names an invalid node
            key, ``tolerance`` is below 1 or ``max_load_moves`` below 0. The message is one
            line and names the field, node or bucket at fault.
    """
    if not isinstance(data, Mapping):
        raise InvalidSnapshot(f"invalid snapshot: expected a JSON object, got {_json_type(data)}")
    _refuse_unknown(data, SNAPSHOT_FIELDS, "the snapshot")
    if "bucket_count" not in data:
        raise InvalidSnapshot("invalid snapshot: bucket_count is missing")
    nodes = _object(data.get("nodes", {}), "nodes")
    assignments = _object(data.get("assignments", {}), "assignments")
    for key in sorted(assignments, key=str):
        buckets = assignments[key]
        if not isinstance(buckets, list):
            raise InvalidSnapshot(
                f"invalid snapshot: assignments of node {key!r} must be a list of bucket ids, "
                f"got {_json_type(buckets)}"
            )
    known: dict[tuple[object, ...], NodeInfo] = {}  # NodeInfo is immutable: share equal ones
    return Snapshot(
        bucket_count=data["bucket_count"],
        nodes={key: _node(key, nodes[key], known) for key in sorted(nodes, key=str)},
        assignments=assignments,
        max_moves=data.get("max_moves"),
        load=_load(data.get("load")),
        pins=_by_bucket(_object(data.get("pins", {}), "pins"), "pins"),
        tolerance=data.get("tolerance", DEFAULT_TOLERANCE),
        max_load_moves=data.get("max_load_moves", DEFAULT_MAX_LOAD_MOVES),
    )


def _load(value: object) -> dict[int, Any] | None:
    """The ``load`` field with integer bucket keys (``None`` when absent or null)."""
    if value is None:
        return None
    return _by_bucket(_object(value, "load"), "load")


def _by_bucket(entries: Mapping[str, Any], where: str) -> dict[int, Any]:
    """``entries`` with its decimal-string keys turned into bucket ids (checked by Snapshot)."""
    result: dict[int, Any] = {}
    for key, value in entries.items():
        bucket = _bucket_key(key)
        if bucket is None:
            raise InvalidSnapshot(
                f"invalid snapshot: {where} has key {key!r}; "
                'keys must be bucket ids written in decimal, such as "12"'
            )
        result[bucket] = value
    return result


def _bucket_key(key: object) -> int | None:
    """The bucket id a JSON key spells in canonical decimal (``"12"``), else ``None``."""
    if not isinstance(key, str) or not key.isascii() or not key.isdigit():
        return None
    bucket = int(key)
    return bucket if str(bucket) == key else None


def _node(key: str, data: object, known: dict[tuple[object, ...], NodeInfo]) -> NodeInfo:
    """Parse one entry of ``nodes``, reusing an equal entry already parsed from ``known``."""
    if type(data) is dict and data.keys() <= _NODE_FIELD_SET:
        state, weight = data.get("state", "live"), data.get("weight", 1.0)
        info = known.get((type(state), state, type(weight), weight))
        if info is not None:
            return info
    where = f"node {key!r}"
    entry = _object(data, where)
    _refuse_unknown(entry, NODE_FIELDS, where)
    state, weight = entry.get("state", "live"), entry.get("weight", 1.0)
    if not isinstance(state, str) or state not in _STATES:
        raise InvalidSnapshot(
            f"invalid snapshot: {where} has unknown state {state!r} "
            "(expected live, suspect or offline)"
        )
    info = NodeInfo(weight=check_weight(weight, where), state=_STATES[state])
    known[(type(state), state, type(weight), weight)] = info
    return info


def _object(value: object, where: str) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an :class:`InvalidSnapshot` naming ``where``."""
    if not isinstance(value, Mapping):
        raise InvalidSnapshot(
            f"invalid snapshot: {where} must be a JSON object, got {_json_type(value)}"
        )
    return value


def _refuse_unknown(entry: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    """Raise :class:`InvalidSnapshot` for the first field of ``entry`` not in ``known``."""
    if entry.keys() <= set(known):
        return
    unknown = sorted(str(name) for name in entry if name not in known)
    if unknown:
        raise InvalidSnapshot(
            f"invalid snapshot: unknown field {unknown[0]!r} in {where} "
            f"(expected {', '.join(known)})"
        )


def _json_type(value: object) -> str:
    """The JSON name of ``value``'s type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__

"""Reading the JSON form of a snapshot (DESIGN.md, "Planner contract") into a :class:`Snapshot`.

The JSON form::

    {"bucket_count": 100,
     "nodes": {"a@h": {"weight": 1.0, "state": "live"}, "c@h": {"state": "offline"}},
     "assignments": {"a@h": [1, 2, 3], "c@h": [6]},
     "max_moves": null}

``bucket_count`` is required. ``nodes`` and ``assignments`` default to empty objects,
``max_moves`` to null (no limit), a node's ``weight`` to 1.0 and its ``state`` to ``"live"``.
Unknown fields are refused rather than ignored, so a typo such as ``"max_move"`` cannot silently
lift a limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from allot.errors import InvalidSnapshot
from allot.planner.model import NodeInfo, NodeState, Snapshot, check_weight

SNAPSHOT_FIELDS = ("bucket_count", "nodes", "assignments", "max_moves")
NODE_FIELDS = ("weight", "state")
_NODE_FIELD_SET = frozenset(NODE_FIELDS)
_STATES = {state.value: state for state in NodeState}


def snapshot_from_json(data: object) -> Snapshot:
    """Build a validated :class:`Snapshot` from the snapshot's JSON object (already decoded).

    Raises:
        InvalidSnapshot: a field is missing, unknown or of the wrong JSON type, a node has an
            unknown state or a weight that is not a number > 0, a node key is invalid, or a
            bucket id is out of range or listed twice. The message is one line and names the
            field, node or bucket at fault.
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
    )


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

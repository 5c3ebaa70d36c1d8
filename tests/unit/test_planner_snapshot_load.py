"""The snapshot's measured-work fields: ``load``, ``pins``, ``tolerance``, ``max_load_moves``.

Given a snapshot (JSON or typed) with these fields, When it is read, Then they are validated,
normalised (sorted by bucket, loads as floats) and default as DESIGN.md says.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from allot.errors import InvalidSnapshot
from allot.planner import NodeInfo, Snapshot, snapshot_from_json


def test_the_fields_default_to_equal_loads_no_pins_and_the_design_tolerance() -> None:
    snapshot = snapshot_from_json({"bucket_count": 3})

    assert snapshot.load is None
    assert snapshot.pins == {}
    assert snapshot.tolerance == 1.15
    assert snapshot.max_load_moves == 10


def test_json_bucket_keys_become_ids_sorted_and_loads_floats() -> None:
    snapshot = snapshot_from_json(
        {
            "bucket_count": 12,
            "nodes": {"a@h": {}},
            "load": {"10": 3, "2": 0.5},
            "pins": {"12": "a@h", "1": "b@h"},
            "tolerance": 1,
            "max_load_moves": 0,
        }
    )

    assert list(snapshot.load or {}) == [2, 10]
    assert snapshot.load == {2: 0.5, 10: 3.0}
    assert all(type(value) is float for value in (snapshot.load or {}).values())
    assert list(snapshot.pins.items()) == [(1, "b@h"), (12, "a@h")]
    assert snapshot.tolerance == 1.0
    assert snapshot.max_load_moves == 0


def test_a_null_load_means_no_measurement() -> None:
    assert snapshot_from_json({"bucket_count": 3, "load": None}).load is None


def test_a_pin_may_name_a_node_the_snapshot_does_not_know() -> None:
    # Validated as a node key only: a pin to an unknown node is ignored by the planner and
    # reported in the plan, not refused (the node may come back).
    snapshot = snapshot_from_json({"bucket_count": 3, "pins": {"2": "elsewhere@h"}})

    assert snapshot.pins == {2: "elsewhere@h"}


BAD_TYPED: list[tuple[str, dict[str, Any], str]] = [
    ("load key a string", {"load": {"1": 1.0}}, "load names bucket '1'; bucket ids are integers"),
    ("load key a boolean", {"load": {True: 1.0}}, "load names bucket True"),
    ("load key out of range", {"load": {5: 1.0}}, "load names bucket 5, out of range 1..4"),
    ("load negative", {"load": {1: -1}}, "load of bucket 1 is -1; loads must be finite"),
    ("load NaN", {"load": {1: math.nan}}, "load of bucket 1 is nan"),
    ("load not a mapping", {"load": [1.0]}, "load must map bucket ids to seconds"),
    ("pins not a mapping", {"pins": ["a"]}, "pins must map bucket ids to node keys"),
    ("pin out of range", {"pins": {0: "a"}}, "pins names bucket 0, out of range 1..4"),
    ("pin invalid key", {"pins": {1: ""}}, "invalid node key ''"),
    ("tolerance below one", {"tolerance": 0.5}, "tolerance must be a finite number >= 1"),
    ("tolerance boolean", {"tolerance": True}, "tolerance must be a number >= 1, got True"),
    ("max_load_moves None", {"max_load_moves": None}, "max_load_moves must be an integer >= 0"),
]


@pytest.mark.parametrize(
    ("fields", "message"),
    [pytest.param(fields, message, id=name) for name, fields, message in BAD_TYPED],
)
def test_constructing_a_snapshot_with_bad_load_fields_raises_one_line(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidSnapshot) as raised:
        Snapshot(bucket_count=4, nodes={"a": NodeInfo()}, **fields)

    text = str(raised.value)
    assert message in text
    assert text.startswith("invalid snapshot: ")
    assert "\n" not in text

"""The planner (default strategy) on hand-picked cases, its errors, and ``allot plan``.

Each test reads as Given (a snapshot) / When (plan it) / Then (what the plan must say).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from allot.errors import ConfigurationError, InvalidSnapshot
from allot.planner import (
    Move,
    NodeInfo,
    NodeState,
    Snapshot,
    plan,
    plan_from_json,
    snapshot_from_json,
    strategy_names,
)
from tests.unit.snapshots import DESIGN_SNAPSHOT


def live(*keys: str, weight: float = 1.0) -> dict[str, Any]:
    """A ``nodes`` object with every key live at ``weight``."""
    return {key: {"weight": weight, "state": "live"} for key in keys}


def counts(result: dict[str, Any]) -> dict[str, int]:
    """How many buckets each node holds in a plan's JSON."""
    return {key: len(buckets) for key, buckets in result["assignments"].items()}


# --- the DESIGN.md example ---------------------------------------------------------------------


def test_the_design_example_gives_the_design_plan() -> None:
    """DESIGN.md's example plan. Its snapshot says bucket_count 100, but the plan it shows only
    adds up for 6 buckets (with 100, buckets 7..100 are unowned and must be placed too), so the
    example is checked with 6 and the 100-bucket reading is checked below."""
    result = plan_from_json(DESIGN_SNAPSHOT)

    assert result["assignments"] == {"a@h": [1, 2, 3, 6], "b@h": [4, 5]}
    assert result["moves"] == [{"bucket": 6, "from": "c@h", "to": "a@h"}]
    stats = {key: result["stats"][key] for key in ("moves", "min_moves")}
    assert stats == {"moves": 1, "min_moves": 1}
    assert result["stats"]["spread_before"] == 0
    assert result["stats"]["spread_after"] == 0
    assert result["stats"]["balanced"] is True
    assert result["stats"]["strategy"] == "balanced"
    assert list(result) == ["assignments", "moves", "stats"]


def test_the_design_snapshot_with_100_buckets_also_places_the_unowned_ones() -> None:
    result = plan_from_json({**DESIGN_SNAPSHOT, "bucket_count": 100})

    assert result["assignments"]["a@h"] == [1, 2, 3, *range(6, 101)]
    assert result["assignments"]["b@h"] == [4, 5]
    assert result["stats"]["moves"] == result["stats"]["min_moves"] == 95
    assert {move["from"] for move in result["moves"]} == {"c@h", None}


# --- node states --------------------------------------------------------------------------------


def test_no_live_node_moves_nothing_and_says_so() -> None:
    snapshot = {
        "bucket_count": 5,
        "nodes": {"s": {"state": "suspect"}, "o": {"state": "offline"}},
        "assignments": {"s": [1, 2], "o": [3], "gone": [4]},
    }

    result = plan_from_json(snapshot)

    assert result["moves"] == []
    assert result["assignments"] == {"s": [1, 2]}
    assert result["stats"]["unplaced"] == [3, 4, 5]
    assert result["stats"]["moves"] == result["stats"]["min_moves"] == 0
    assert result["stats"]["balanced"] is False
    assert any("no live node" in warning for warning in result["stats"]["warnings"])


def test_no_node_at_all_leaves_every_bucket_unplaced() -> None:
    result = plan_from_json({"bucket_count": 3})

    assert result["assignments"] == {}
    assert result["moves"] == []
    assert result["stats"]["unplaced"] == [1, 2, 3]
    assert "no live node" in result["stats"]["warnings"][0]


def test_a_node_listed_only_in_assignments_is_offline() -> None:
    snapshot = {"bucket_count": 4, "nodes": live("a", "b"), "assignments": {"ghost": [1, 2, 3, 4]}}

    result = plan_from_json(snapshot)

    assert "ghost" not in result["assignments"]
    assert counts(result) == {"a": 2, "b": 2}
    assert all(move["from"] == "ghost" for move in result["moves"])


def test_suspect_nodes_keep_their_buckets_and_receive_none() -> None:
    snapshot = {
        "bucket_count": 10,
        "nodes": {"a": {}, "b": {}, "s": {"state": "suspect", "weight": 5}},
        "assignments": {"a": [1, 2, 3, 4, 5, 6], "s": [7, 8]},
    }

    result = plan_from_json(snapshot)

    assert result["assignments"]["s"] == [7, 8]
    assert counts(result) == {"a": 4, "b": 4, "s": 2}  # B' = 8 shared by a and b only
    assert all(move["to"] != "s" and move["from"] != "s" for move in result["moves"])


def test_suspect_nodes_holding_everything_leave_live_nodes_empty() -> None:
    snapshot = {
        "bucket_count": 4,
        "nodes": {"a": {}, "s": {"state": "suspect"}},
        "assignments": {"s": [1, 2, 3, 4]},
    }

    result = plan_from_json(snapshot)

    assert result["assignments"] == {"a": [], "s": [1, 2, 3, 4]}
    assert result["moves"] == []
    assert result["stats"]["min_moves"] == 0
    assert result["stats"]["balanced"] is True


def test_weight_defaults_to_one_and_state_to_live() -> None:
    snapshot = snapshot_from_json({"bucket_count": 2, "nodes": {"a": {}}})

    assert snapshot.nodes["a"] == NodeInfo(weight=1.0, state=NodeState.LIVE)


# --- sizes and weights -------------------------------------------------------------------------


def test_one_bucket_goes_to_the_only_live_node() -> None:
    result = plan_from_json({"bucket_count": 1, "nodes": live("a")})

    assert result["assignments"] == {"a": [1]}
    assert result["moves"] == [{"bucket": 1, "from": None, "to": "a"}]


def test_one_bucket_already_held_by_a_live_node_stays() -> None:
    result = plan_from_json({"bucket_count": 1, "nodes": live("a", "b"), "assignments": {"b": [1]}})

    assert result["moves"] == []
    assert result["assignments"] == {"a": [], "b": [1]}
    assert result["stats"]["spread_after"] == 1


def test_more_nodes_than_buckets_gives_at_most_one_each() -> None:
    snapshot = {
        "bucket_count": 3,
        "nodes": live("a", "b", "c", "d", "e"),
        "assignments": {"e": [1, 2, 3]},
    }

    result = plan_from_json(snapshot)

    assert result["assignments"] == {"a": [3], "b": [2], "c": [], "d": [], "e": [1]}
    assert result["stats"]["moves"] == result["stats"]["min_moves"] == 2


def test_all_nodes_new_share_every_bucket() -> None:
    result = plan_from_json({"bucket_count": 10, "nodes": live("a", "b", "c")})

    assert counts(result) == {"a": 4, "b": 3, "c": 3}
    assert result["stats"]["moves"] == result["stats"]["min_moves"] == 10
    assert all(move["from"] is None for move in result["moves"])
    assert result["stats"]["spread_after"] == 1


def test_weights_half_and_four_split_nine_buckets_exactly() -> None:
    snapshot = {
        "bucket_count": 9,
        "nodes": {"a": {"weight": 0.5}, "b": {"weight": 4}},
        "assignments": {"a": list(range(1, 10))},
    }

    result = plan_from_json(snapshot)

    assert result["assignments"] == {"a": [1], "b": list(range(2, 10))}
    assert result["stats"]["moves"] == result["stats"]["min_moves"] == 8
    assert result["stats"]["spread_after"] == 0


def test_the_ceil_slot_goes_to_the_node_that_already_holds_more() -> None:
    """Shares 1.11 and 8.89 of 10: giving a (which holds all 10) the ceiling keeps 2 in place and
    moves 8; giving it to b would move 9."""
    snapshot = {
        "bucket_count": 10,
        "nodes": {"a": {"weight": 0.5}, "b": {"weight": 4.0}},
        "assignments": {"a": list(range(1, 11))},
    }

    result = plan_from_json(snapshot)

    assert counts(result) == {"a": 2, "b": 8}
    assert result["stats"]["moves"] == result["stats"]["min_moves"] == 8
    assert result["stats"]["spread_after"] == pytest.approx(2 - 10 / 9 - (8 - 80 / 9))


def test_donors_give_up_their_highest_bucket_ids() -> None:
    snapshot = {
        "bucket_count": 6,
        "nodes": live("a", "b"),
        "assignments": {"a": [1, 2, 3, 4, 5, 6]},
    }

    result = plan_from_json(snapshot)

    assert result["assignments"] == {"a": [1, 2, 3], "b": [4, 5, 6]}


def test_spread_is_max_minus_min_count_with_equal_weights() -> None:
    snapshot = {
        "bucket_count": 8,
        "nodes": live("a", "b"),
        "assignments": {"a": [1, 2, 3, 4, 5, 6, 7], "b": [8]},
    }

    result = plan_from_json(snapshot)

    assert result["stats"]["spread_before"] == 6
    assert result["stats"]["spread_after"] == 0
    assert isinstance(result["stats"]["spread_before"], int)


def test_a_balanced_snapshot_needs_no_move() -> None:
    snapshot = {
        "bucket_count": 5,
        "nodes": live("a", "b"),
        "assignments": {"a": [1, 2], "b": [3, 4, 5]},
    }

    result = plan_from_json(snapshot)

    assert result["moves"] == []
    assert result["stats"]["min_moves"] == 0


def test_planning_the_result_again_moves_nothing() -> None:
    snapshot = {
        "bucket_count": 37,
        "nodes": {"a": {"weight": 1.5}, "b": {}, "c": {"weight": 3}, "d": {"state": "offline"}},
        "assignments": {"a": list(range(1, 20)), "d": list(range(20, 30))},
    }
    first = plan_from_json(snapshot)

    second = plan_from_json({**snapshot, "assignments": first["assignments"]})

    assert second["moves"] == []
    assert second["assignments"] == first["assignments"]


# --- max_moves ---------------------------------------------------------------------------------


def test_max_moves_zero_moves_nothing_and_leaves_orphans_unplaced() -> None:
    snapshot = {
        "bucket_count": 6,
        "nodes": live("a", "b"),
        "assignments": {"a": [1, 2, 3, 4], "gone": [5]},
        "max_moves": 0,
    }

    result = plan_from_json(snapshot)

    assert result["moves"] == []
    assert result["stats"]["unplaced"] == [5, 6]
    assert result["stats"]["min_moves"] == 3
    assert result["stats"]["balanced"] is False
    assert any("max_moves=0" in warning for warning in result["stats"]["warnings"])


def test_max_moves_one_places_the_lowest_orphan_first() -> None:
    snapshot = {
        "bucket_count": 6,
        "nodes": live("a", "b"),
        "assignments": {"a": [1, 2, 3, 4], "gone": [6]},
        "max_moves": 1,
    }

    result = plan_from_json(snapshot)

    assert result["moves"] == [{"bucket": 5, "from": None, "to": "b"}]
    assert result["stats"]["unplaced"] == [6]


def test_max_moves_one_without_orphans_moves_from_the_fullest_node() -> None:
    snapshot = {
        "bucket_count": 9,
        "nodes": live("a", "b", "c"),
        "assignments": {"a": [1, 2, 3, 4, 5], "b": [6, 7, 8, 9]},
        "max_moves": 1,
    }

    result = plan_from_json(snapshot)

    assert result["moves"] == [{"bucket": 5, "from": "a", "to": "c"}]


def test_a_plan_cut_by_max_moves_can_be_finished_by_planning_again() -> None:
    snapshot: dict[str, Any] = {
        "bucket_count": 20,
        "nodes": live("a", "b", "c"),
        "assignments": {"a": list(range(1, 15))},
        "max_moves": 4,
    }
    first = plan_from_json(snapshot)

    second = plan_from_json({**snapshot, "assignments": first["assignments"], "max_moves": None})

    assert first["stats"]["moves"] == 4
    assert (
        second["stats"]["moves"] == second["stats"]["min_moves"] == first["stats"]["min_moves"] - 4
    )


# --- determinism -------------------------------------------------------------------------------


def test_the_same_snapshot_gives_the_same_plan_whatever_its_order() -> None:
    snapshot: dict[str, Any] = {
        "bucket_count": 50,
        "nodes": {"a": {"weight": 2}, "b": {}, "c": {"state": "suspect"}, "d": {}},
        "assignments": {"a": [9, 1, 30, 4], "c": [7, 6], "x": [50, 10, 11, 12], "b": [40, 2]},
    }
    reordered = {
        "max_moves": None,
        "assignments": {
            key: list(reversed(value)) for key, value in reversed(snapshot["assignments"].items())
        },
        "nodes": dict(reversed(snapshot["nodes"].items())),
        "bucket_count": 50,
    }

    first, again, other = (
        plan_from_json(snapshot),
        plan_from_json(snapshot),
        plan_from_json(reordered),
    )

    assert json.dumps(first) == json.dumps(again) == json.dumps(other)


# --- the typed API -----------------------------------------------------------------------------


def test_the_typed_api_returns_typed_moves() -> None:
    snapshot = Snapshot(
        bucket_count=4,
        nodes={"a": NodeInfo(), "b": NodeInfo(weight=1.0)},
        assignments={"a": [4, 3, 2, 1]},
    )

    result = plan(snapshot)

    assert snapshot.assignments["a"] == (1, 2, 3, 4)
    assert result.moves == (Move(3, "a", "b"), Move(4, "a", "b"))
    assert result.assignments == {"a": (1, 2), "b": (3, 4)}
    assert result.stats.moves == result.stats.min_moves == 2


def test_constructing_an_invalid_snapshot_raises() -> None:
    with pytest.raises(InvalidSnapshot, match="weight"):
        NodeInfo(weight=0)
    with pytest.raises(InvalidSnapshot, match="out of range"):
        Snapshot(bucket_count=2, assignments={"a": [3]})


def test_an_unknown_strategy_names_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError) as raised:
        plan_from_json(DESIGN_SNAPSHOT, "magic")

    assert "'magic'" in str(raised.value)
    for name in strategy_names():
        assert name in str(raised.value)

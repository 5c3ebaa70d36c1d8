"""Pins on hand-picked cases: kept on live nodes by every strategy, counted in the quotas,
ignored and reported otherwise.

Each test reads as Given (a snapshot with pins) / When (plan it) / Then (what the plan must say).
"""

from __future__ import annotations

from typing import Any

import pytest

from allot.planner import plan_from_json, strategy_names


def owner(result: dict[str, Any], bucket: int) -> str:
    return str(next(key for key, buckets in result["assignments"].items() if bucket in buckets))


@pytest.mark.parametrize("strategy", strategy_names())
def test_a_pinned_bucket_moves_to_its_live_node_and_stays_there(strategy: str) -> None:
    snapshot = {
        "bucket_count": 12,
        "nodes": {"a": {}, "b": {}, "c": {}},
        "assignments": {"a": [1, 2, 3, 4], "b": [5, 6, 7, 8], "c": [9, 10, 11, 12]},
        "pins": {"1": "c", "5": "c", "9": "c"},
    }

    result = plan_from_json(snapshot, strategy)
    again = plan_from_json({**snapshot, "assignments": result["assignments"]}, strategy)

    assert [owner(result, bucket) for bucket in (1, 5, 9)] == ["c", "c", "c"]
    assert {"bucket": 1, "from": "a", "to": "c"} in result["moves"]
    assert all(move["bucket"] not in (1, 5, 9) for move in again["moves"])
    assert result["stats"]["pins_ignored"] == []


def test_balanced_counts_pinned_buckets_in_their_nodes_quota() -> None:
    snapshot = {
        "bucket_count": 12,
        "nodes": {"a": {}, "b": {}, "c": {}},
        "assignments": {"a": [1, 2, 3, 4], "b": [5, 6, 7, 8], "c": [9, 10, 11, 12]},
        "pins": {"1": "c", "5": "c"},
    }

    result = plan_from_json(snapshot, "balanced")

    # c keeps its share of 4 buckets, two of them pinned: it gives two of its own away
    counts = {key: len(buckets) for key, buckets in result["assignments"].items()}
    assert counts == {"a": 4, "b": 4, "c": 4}
    assert result["stats"]["moves"] == result["stats"]["min_moves"] == 4
    assert result["stats"]["balanced"] is True


def test_a_node_pinned_beyond_its_share_holds_only_its_pins() -> None:
    snapshot = {
        "bucket_count": 9,
        "nodes": {"a": {}, "b": {}, "c": {}},
        "assignments": {"a": [1, 2, 3], "b": [4, 5, 6], "c": [7, 8, 9]},
        "pins": {"4": "a", "5": "a", "7": "a", "8": "a"},
    }

    result = plan_from_json(snapshot, "balanced")

    # a's share is 3, its pins 4: it holds exactly them; b and c share the other 5
    assert result["assignments"]["a"] == [4, 5, 7, 8]
    assert sorted(len(result["assignments"][key]) for key in "bc") == [2, 3]
    assert result["stats"]["balanced"] is True
    assert result["stats"]["moves"] == result["stats"]["min_moves"]


@pytest.mark.parametrize(
    ("node", "reason"),
    [
        ("s", "node suspect"),
        ("o", "node offline"),
        ("gone", "node offline"),  # listed in assignments only
        ("nobody", "node unknown"),
    ],
)
@pytest.mark.parametrize("strategy", strategy_names())
def test_a_pin_to_a_node_that_is_not_live_is_ignored_and_reported(
    strategy: str, node: str, reason: str
) -> None:
    snapshot = {
        "bucket_count": 4,
        "nodes": {"a": {}, "b": {}, "s": {"state": "suspect"}, "o": {"state": "offline"}},
        "assignments": {"a": [1, 2], "b": [3], "gone": [4]},
        "pins": {"2": node},
    }

    result = plan_from_json(snapshot, strategy)
    unpinned = plan_from_json({**snapshot, "pins": {}}, strategy)

    assert result["assignments"] == unpinned["assignments"]
    assert result["stats"]["pins_ignored"] == [{"bucket": 2, "node": node, "reason": reason}]
    assert (
        f"1 pin(s) ignored until they can be kept: bucket 2 -> {node} ({reason})"
        in (result["stats"]["warnings"])
    )


def test_a_pin_of_a_bucket_a_suspect_holds_waits() -> None:
    snapshot = {
        "bucket_count": 3,
        "nodes": {"a": {}, "s": {"state": "suspect"}},
        "assignments": {"a": [1, 2], "s": [3]},
        "pins": {"3": "a"},
    }

    result = plan_from_json(snapshot)

    assert result["assignments"]["s"] == [3]
    assert result["stats"]["pins_ignored"] == [
        {"bucket": 3, "node": "a", "reason": "suspect node 's' holds it"}
    ]


def test_with_no_live_node_every_pin_is_reported() -> None:
    snapshot = {"bucket_count": 2, "assignments": {"x": [1]}, "pins": {"1": "x", "2": "y"}}

    stats = plan_from_json(snapshot)["stats"]

    assert [pin["bucket"] for pin in stats["pins_ignored"]] == [1, 2]
    assert stats["warnings"][0].startswith("no live node")
    assert stats["warnings"][1].startswith("2 pin(s) ignored")


def test_max_moves_places_a_pinned_orphan_first() -> None:
    snapshot = {
        "bucket_count": 4,
        "nodes": {"a": {}, "b": {}},
        "assignments": {"a": [1, 2, 3]},  # 4 is unowned
        "pins": {"4": "b", "1": "b"},
        "max_moves": 1,
    }

    result = plan_from_json(snapshot)

    assert result["moves"] == [{"bucket": 4, "from": None, "to": "b"}]


def test_without_pins_the_plan_is_unchanged_by_an_empty_pins_object() -> None:
    snapshot = {
        "bucket_count": 7,
        "nodes": {"a": {}, "b": {"weight": 2.0}},
        "assignments": {"a": [1, 2, 3, 4, 5]},
    }

    for strategy in strategy_names():
        assert plan_from_json({**snapshot, "pins": {}}, strategy) == plan_from_json(
            snapshot, strategy
        )


def test_amoro_counts_pinned_buckets_toward_holdings() -> None:
    snapshot = {
        "bucket_count": 6,
        "nodes": {"a": {}, "b": {}},
        "assignments": {"a": [1, 2, 3], "b": [4, 5, 6]},
        "pins": {"4": "a"},
    }

    result = plan_from_json(snapshot, "amoro")

    # a holds 4 after the pin (three of its own and 4): one of its own goes to b
    assert sorted(len(buckets) for buckets in result["assignments"].values()) == [3, 3]
    assert 4 in result["assignments"]["a"]

"""The comparison strategies (``amoro``, ``hrw``) and the strategy registry.

They obey the same rules as the default (every bucket owned once, suspects untouched,
deterministic) but make no promise of balance or minimality; the tests pin what each one does.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allot.errors import ConfigurationError
from allot.planner import Move, plan_from_json, strategy_names
from allot.planner.strategies import DEFAULT_STRATEGY, Strategy, get_strategy
from allot.planner.strategies.hrw import owner_of
from tests.unit.snapshots import live_keys, snapshots, state_of, suspect_buckets

OTHERS = ["amoro", "hrw"]


# --- shared rules, on random snapshots ----------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(snapshots(limit=False), st.sampled_from(OTHERS))
def test_every_strategy_owns_each_bucket_once_and_keeps_suspects(
    snapshot: dict[str, Any], strategy: str
) -> None:
    result = plan_from_json(snapshot, strategy)
    every = [bucket for buckets in result["assignments"].values() for bucket in buckets]

    assert len(every) == len(set(every))
    if live_keys(snapshot):
        assert sorted(every) == list(range(1, snapshot["bucket_count"] + 1))
    for key, buckets in suspect_buckets(snapshot).items():
        assert result["assignments"][key] == buckets
    assert all(state_of(snapshot, move["to"]) == "live" for move in result["moves"])
    assert result["stats"]["min_moves"] == plan_from_json(snapshot)["stats"]["min_moves"]
    if result["stats"]["balanced"]:  # nothing reaches balance in fewer than the minimum
        assert result["stats"]["moves"] >= result["stats"]["min_moves"]


@settings(max_examples=200, deadline=None)
@given(snapshots(limit=False), st.sampled_from(OTHERS))
def test_every_strategy_is_deterministic(snapshot: dict[str, Any], strategy: str) -> None:
    reordered = {
        **snapshot,
        "nodes": dict(reversed(snapshot["nodes"].items())),
        "assignments": {k: v[::-1] for k, v in reversed(snapshot["assignments"].items())},
    }

    first = json.dumps(plan_from_json(snapshot, strategy))

    assert json.dumps(plan_from_json(snapshot, strategy)) == first
    assert json.dumps(plan_from_json(reordered, strategy)) == first


@pytest.mark.parametrize("strategy", OTHERS)
def test_max_moves_applies_to_every_strategy_orphans_first(strategy: str) -> None:
    snapshot = {
        "bucket_count": 12,
        "nodes": {"a": {}, "b": {}, "c": {}},
        "assignments": {"a": list(range(1, 10)), "gone": [10, 11]},
        "max_moves": 2,
    }

    result = plan_from_json(snapshot, strategy)

    assert [move["bucket"] for move in result["moves"]] == [10, 11]
    assert result["stats"]["unplaced"] == [12]


# --- amoro --------------------------------------------------------------------------------------


def test_amoro_gives_offline_buckets_to_the_least_loaded_node() -> None:
    snapshot = {
        "bucket_count": 9,
        "nodes": {"a": {}, "b": {}, "c": {"state": "offline"}},
        "assignments": {"a": [1, 2, 3, 4], "b": [5], "c": [6, 7, 8, 9]},
    }

    result = plan_from_json(snapshot, "amoro")

    assert result["assignments"] == {"a": [1, 2, 3, 4, 9], "b": [5, 6, 7, 8]}  # ties: key


def test_amoro_new_node_takes_first_buckets_round_robin_from_the_fullest() -> None:
    snapshot = {
        "bucket_count": 12,
        "nodes": {"a": {}, "b": {}, "c": {}},
        "assignments": {"a": [1, 2, 3, 4, 5, 6], "b": [7, 8, 9, 10, 11, 12]},
    }

    result = plan_from_json(snapshot, "amoro")

    assert result["assignments"] == {"a": [3, 4, 5, 6], "b": [9, 10, 11, 12], "c": [1, 2, 7, 8]}
    assert result["stats"]["moves"] == result["stats"]["min_moves"] == 4


def test_amoro_takes_from_nodes_already_at_target_and_stays_unbalanced() -> None:
    """Amoro's round-robin also takes from nodes below target: b drops to 1 while a keeps 4."""
    snapshot = {
        "bucket_count": 8,
        "nodes": {"a": {}, "b": {}, "c": {}},
        "assignments": {"a": [1, 2, 3, 4, 5, 6], "b": [7, 8]},
    }

    result = plan_from_json(snapshot, "amoro")

    assert result["assignments"] == {"a": [3, 4, 5, 6], "b": [8], "c": [1, 2, 7]}
    assert result["stats"]["balanced"] is False
    assert plan_from_json(snapshot)["stats"]["balanced"] is True


def test_amoro_rebalances_without_node_change_from_the_end_of_lists() -> None:
    snapshot = {
        "bucket_count": 6,
        "nodes": {"a": {}, "b": {}},
        "assignments": {"a": [1, 2, 3, 4, 5], "b": [6]},
    }

    result = plan_from_json(snapshot, "amoro")

    assert result["assignments"] == {"a": [1, 2, 3], "b": [4, 5, 6]}


def test_amoro_ignores_weights() -> None:
    snapshot = {"bucket_count": 8, "nodes": {"a": {"weight": 3.0}, "b": {}}}

    result = plan_from_json(snapshot, "amoro")

    assert [len(b) for b in result["assignments"].values()] == [4, 4]
    assert result["stats"]["balanced"] is False  # weighted shares are 6 and 2


# --- hrw ----------------------------------------------------------------------------------------


def test_hrw_owners_are_pinned_so_the_hash_never_changes_silently() -> None:
    weights = {"a@h": 1.0, "b@h": 2.0, "c@h": 0.5}

    assert [owner_of(bucket, weights) for bucket in range(1, 9)] == [
        "c@h",
        "a@h",
        "b@h",
        "b@h",
        "b@h",
        "a@h",
        "a@h",
        "c@h",
    ]
    assert [owner_of(bucket, {"a": 1.0, "b": 1.0}) for bucket in (1, 2, 3)] == ["a", "a", "b"]


def test_hrw_a_join_only_moves_buckets_to_the_new_node() -> None:
    nodes: dict[str, Any] = {key: {} for key in ("a", "b", "c")}
    start = plan_from_json({"bucket_count": 200, "nodes": nodes}, "hrw")["assignments"]

    joined = plan_from_json(
        {"bucket_count": 200, "nodes": {**nodes, "d": {}}, "assignments": start}, "hrw"
    )

    assert {move["to"] for move in joined["moves"]} == {"d"}
    assert 20 < joined["stats"]["moves"] < 80  # about 200 / 4


def test_hrw_a_departure_only_moves_the_departed_nodes_buckets() -> None:
    nodes: dict[str, Any] = {key: {} for key in ("a", "b", "c", "d")}
    start = plan_from_json({"bucket_count": 200, "nodes": nodes}, "hrw")["assignments"]

    left = plan_from_json(
        {"bucket_count": 200, "nodes": {**nodes, "d": {"state": "offline"}}, "assignments": start},
        "hrw",
    )

    assert {move["from"] for move in left["moves"]} == {"d"}
    assert left["stats"]["moves"] == len(start["d"])


def test_hrw_weights_shift_the_share() -> None:
    result = plan_from_json({"bucket_count": 2000, "nodes": {"a": {"weight": 3.0}, "b": {}}}, "hrw")

    share = len(result["assignments"]["a"]) / 2000
    assert 0.70 < share < 0.80  # 3 / 4 in expectation


# --- the registry -------------------------------------------------------------------------------


def test_the_registry_lists_the_default_first() -> None:
    assert strategy_names() == ("balanced", "amoro", "hrw", "load")
    assert DEFAULT_STRATEGY == "balanced"
    assert all(get_strategy(name).name == name for name in strategy_names())


def test_an_unknown_strategy_is_a_configuration_error_listing_the_names() -> None:
    with pytest.raises(ConfigurationError, match="choose one of balanced, amoro, hrw, load"):
        get_strategy("round-robin")


def test_a_strategy_that_breaks_the_rules_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    class Thief(Strategy):
        name = "thief"
        summary = "moves a suspect node's bucket"

        def propose(self, problem: Any) -> list[Move]:
            return [Move(2, "s", problem.live[0])]

    from allot.planner import strategies

    monkeypatch.setitem(strategies._REGISTRY, "thief", Thief())
    snapshot = {
        "bucket_count": 2,
        "nodes": {"a": {}, "s": {"state": "suspect"}},
        "assignments": {"a": [1], "s": [2]},
    }

    with pytest.raises(RuntimeError, match="invalid move"):
        plan_from_json(snapshot, "thief")


def test_strategies_compare_on_the_same_minimum() -> None:
    snapshot = {
        "bucket_count": 30,
        "nodes": {"a": {}, "b": {}, "c": {}, "d": {"state": "offline"}},
        "assignments": {
            "a": list(range(1, 11)),
            "b": list(range(11, 21)),
            "d": list(range(21, 31)),
        },
    }

    stats = {name: plan_from_json(snapshot, name)["stats"] for name in strategy_names()}

    assert {s["min_moves"] for s in stats.values()} == {10}
    assert stats["balanced"]["moves"] == 10
    assert Counter(s["strategy"] for s in stats.values()) == Counter(strategy_names())

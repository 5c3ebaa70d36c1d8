"""Properties of pins (every strategy) and of strategy ``load`` on random snapshots (hypothesis).

The expectations are computed here from the snapshot's JSON, independently of the planner's
code: which pins can be kept (the node is live and no suspect node holds the bucket), who owns
what, and ``balanced``'s plan as the reference for equal loads.

Profile ``planner-load``: 300 examples per property, snapshots of <= 64 buckets and <= 8 nodes
(:func:`tests.unit.snapshots.load_snapshots`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allot.errors import InvalidSnapshot
from allot.planner import plan_from_json, strategy_names
from tests.unit.snapshots import (
    live_keys,
    load_snapshots,
    snapshots,
    state_of,
    suspect_buckets,
)

settings.register_profile(
    "planner-load",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROPERTIES = settings(settings.get_profile("planner-load"))


def kept_pins(snapshot: dict[str, Any]) -> dict[int, str]:
    """The pins a plan must keep: to a live node, of a bucket no suspect node holds."""
    live = set(live_keys(snapshot))
    held_by_suspects = {b for buckets in suspect_buckets(snapshot).values() for b in buckets}
    return {
        int(bucket): node
        for bucket, node in snapshot.get("pins", {}).items()
        if node in live and int(bucket) not in held_by_suspects
    }


def owners(result: dict[str, Any]) -> dict[int, list[str]]:
    """Every node listing each bucket in a plan's assignments."""
    found: dict[int, list[str]] = {}
    for key, buckets in result["assignments"].items():
        for bucket in buckets:
            found.setdefault(bucket, []).append(key)
    return found


def apply(snapshot: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The snapshot after the plan: same nodes, pins and loads, the plan's assignments."""
    return {**snapshot, "assignments": result["assignments"], "max_moves": None}


@PROPERTIES
@pytest.mark.parametrize("strategy", strategy_names())
@given(snapshot=load_snapshots())
def test_pins_to_live_nodes_are_kept_the_others_reported_and_every_bucket_owned_once(
    strategy: str, snapshot: dict[str, Any]
) -> None:
    result = plan_from_json(snapshot, strategy)

    found = owners(result)
    assert all(len(keys) == 1 for keys in found.values())
    if live_keys(snapshot):
        assert sorted(found) == list(range(1, snapshot["bucket_count"] + 1))
    kept = kept_pins(snapshot)
    assert {bucket: found[bucket][0] for bucket in kept} == kept
    ignored = {
        (int(bucket), node)
        for bucket, node in snapshot.get("pins", {}).items()
        if int(bucket) not in kept
    }
    reported = {(pin["bucket"], pin["node"]) for pin in result["stats"]["pins_ignored"]}
    assert reported == ignored
    for pin in result["stats"]["pins_ignored"]:
        node = pin["node"]
        if state_of(snapshot, node) == "live":
            assert pin["reason"].startswith("suspect node")
        elif node in snapshot["nodes"] or node in snapshot["assignments"]:
            assert pin["reason"] == f"node {state_of(snapshot, node)}"
        else:
            assert pin["reason"] == "node unknown"
    assert any("pin(s) ignored" in line for line in result["stats"]["warnings"]) == bool(ignored)


@PROPERTIES
@given(
    snapshot=snapshots(),
    mode=st.sampled_from(["absent", "null", "empty", "some", "all"]),
    seconds=st.sampled_from([0.0, 0.5, 7.0]),
)
def test_equal_loads_give_balanceds_plan(
    snapshot: dict[str, Any], mode: str, seconds: float
) -> None:
    """No measurement, or every bucket measured (or counted as the mean) at the same value."""
    count = snapshot["bucket_count"]
    if mode == "null":
        snapshot["load"] = None
    elif mode == "empty":
        snapshot["load"] = {}
    elif mode == "some":
        snapshot["load"] = {str(bucket): seconds for bucket in range(1, count + 1, 3)}
    elif mode == "all":
        snapshot["load"] = {str(bucket): seconds for bucket in range(1, count + 1)}

    by_load = plan_from_json(snapshot, "load")
    by_count = plan_from_json(snapshot, "balanced")

    assert by_load["stats"].pop("strategy") == "load"
    assert by_count["stats"].pop("strategy") == "balanced"
    assert json.dumps(by_load) == json.dumps(by_count)


@PROPERTIES
@given(snapshot=load_snapshots())
def test_load_moves_at_most_max_load_moves_beyond_balanceds_minimum(
    snapshot: dict[str, Any],
) -> None:
    """Membership moves never exceed ``balanced``'s minimum (pin moves included), and the moves
    for load alone never exceed the budget."""
    result = plan_from_json(snapshot, "load")

    stats = result["stats"]
    assert stats["moves"] == len(result["moves"])
    assert stats["moves"] <= stats["min_moves"] + snapshot["max_load_moves"]


@settings(PROPERTIES, max_examples=1_500)  # the rare cases (a node emptied, refilled) need many
@given(snapshot=load_snapshots())
def test_a_plan_at_rest_replans_to_nothing(snapshot: dict[str, Any]) -> None:
    """With a budget that never binds, the plan ends at rest: planning its result again moves
    nothing, and the ratio it reports is the ratio the next plan starts from."""
    snapshot["max_load_moves"] = 1_000_000

    first = plan_from_json(snapshot, "load")
    again = plan_from_json(apply(snapshot, first), "load")

    if live_keys(snapshot):
        assert again["moves"] == []
        assert again["assignments"] == first["assignments"]
        assert again["stats"]["load_ratio_before"] == first["stats"]["load_ratio_after"]


@PROPERTIES
@given(snapshot=load_snapshots())
def test_plans_cut_by_the_budget_come_to_rest_and_stay(snapshot: dict[str, Any]) -> None:
    """Planning each plan's result again, with the snapshot's budget, reaches a plan that moves
    nothing, after which it keeps moving nothing; the highest ratio never rises on the way
    once membership is settled (every step of a plan lowers it or leaves it)."""
    current = plan_from_json(snapshot, "load")
    if not live_keys(snapshot):
        return
    ratios = []
    for _ in range(200):
        if not current["moves"]:
            break
        current = plan_from_json(apply(snapshot, current), "load")
        ratios.append(current["stats"]["load_ratio_after"])
    assert current["moves"] == []
    assert plan_from_json(apply(snapshot, current), "load")["moves"] == []
    assert ratios == sorted(ratios, reverse=True)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 70) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


@PROPERTIES
@given(
    field=st.sampled_from(["load", "pins", "tolerance", "max_load_moves"]),
    value=JSON_VALUES
    | st.dictionaries(st.sampled_from(["1", "2", "0", "65", "01", "x", "-1"]), JSON_VALUES),
)
def test_any_value_of_a_load_field_plans_or_fails_with_one_line(field: str, value: Any) -> None:
    snapshot = {"bucket_count": 64, "nodes": {"a@h": {}}, field: value}

    try:
        result = plan_from_json(snapshot, "load")
    except InvalidSnapshot as error:
        message = str(error)
        assert message.startswith("invalid snapshot: ")
        assert "\n" not in message
        assert field in message or "bucket" in message or "node key" in message
    else:
        assert result["stats"]["strategy"] == "load"


@PROPERTIES
@given(snapshot=load_snapshots())
def test_every_strategy_reports_the_load_ratio_of_the_live_nodes(snapshot: dict[str, Any]) -> None:
    """``load_ratio_after`` is the largest ``load_n / share_n`` of the plan's assignment, with
    unmeasured buckets at the mean (all at 1 when nothing is measured); 1 for a zero load."""
    measured = {int(bucket): value for bucket, value in (snapshot.get("load") or {}).items()}
    mean = math.fsum(measured.values()) / len(measured) if measured else 1.0
    load = [measured.get(bucket, mean) for bucket in range(snapshot["bucket_count"] + 1)]
    live = live_keys(snapshot)
    weights = {key: float(snapshot["nodes"][key].get("weight", 1.0)) for key in live}
    suspects = {b for buckets in suspect_buckets(snapshot).values() for b in buckets}
    total = math.fsum(load[b] for b in range(1, len(load)) if b not in suspects)

    for strategy in strategy_names():
        result = plan_from_json(snapshot, strategy)
        ratio = result["stats"]["load_ratio_after"]
        if not live:
            assert ratio == 0
        elif total == 0:
            assert ratio == 1
        else:
            expected = max(
                math.fsum(load[b] for b in result["assignments"][key])
                / (total * weights[key] / math.fsum(weights.values()))
                for key in live
            )
            assert ratio == pytest.approx(expected, rel=1e-12)

"""Strategy ``load`` and the load-ratio statistics on hand-picked cases, and ``allot plan``.

Each test reads as Given (a snapshot with measured loads) / When (plan it) / Then (what the plan
must say). Loads are seconds per bucket; with equal weights every live node's share is the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from allot.planner import plan_from_json, strategy_names
from allot.planner.loads import load_ratio
from tests.cli import allot


def loads(**by_bucket: float) -> dict[str, float]:
    """``loads(b1=4, b2=1)`` -> ``{"1": 4, "2": 1}``."""
    return {name[1:]: value for name, value in by_bucket.items()}


def node_loads(result: dict[str, Any], load: dict[str, float]) -> dict[str, float]:
    return {
        key: sum(load[str(bucket)] for bucket in buckets)
        for key, buckets in result["assignments"].items()
    }


# Three equal nodes; a holds two buckets of 4 s, b and c two of 1 s each: total 12, share 4.
HOT: dict[str, Any] = {
    "bucket_count": 6,
    "nodes": {"a": {}, "b": {}, "c": {}},
    "assignments": {"a": [1, 2], "b": [3, 4], "c": [5, 6]},
    "load": loads(b1=4, b2=4, b3=1, b4=1, b5=1, b6=1),
}


def test_load_moves_work_off_the_busiest_node_until_the_ratio_is_under_the_tolerance() -> None:
    result = plan_from_json(HOT, "load")

    assert result["stats"]["load_ratio_before"] == 2  # a carries 8 of a share of 4
    assert result["stats"]["load_ratio_after"] == 1
    assert node_loads(result, HOT["load"]) == {"a": 4, "b": 4, "c": 4}
    assert result["stats"]["moves"] == 3  # the fewest: a must shed 4, the others gain 2 each
    assert result["stats"]["min_moves"] == 0  # balanced by count already: balanced moves nothing
    assert plan_from_json(HOT, "balanced")["moves"] == []


def test_load_stops_as_soon_as_the_ratio_is_within_the_tolerance() -> None:
    result = plan_from_json({**HOT, "tolerance": 1.3}, "load")

    assert result["stats"]["moves"] == 2
    assert result["stats"]["load_ratio_after"] == 1.25


def test_max_load_moves_caps_the_moves_for_load() -> None:
    result = plan_from_json({**HOT, "max_load_moves": 1}, "load")

    assert result["stats"]["moves"] == 1
    assert result["stats"]["load_ratio_after"] == 1.5


def test_max_load_moves_zero_moves_nothing_for_load() -> None:
    result = plan_from_json({**HOT, "max_load_moves": 0}, "load")

    assert result["moves"] == []
    assert result["stats"]["load_ratio_after"] == 2


def test_at_or_under_the_tolerance_nothing_moves() -> None:
    snapshot = {**HOT, "load": loads(b1=2.2, b2=2.2, b3=1.8, b4=1.8, b5=1.8, b6=1.8)}

    result = plan_from_json(snapshot, "load")

    assert result["moves"] == []
    assert result["stats"]["load_ratio_after"] == pytest.approx(4.4 / (11.6 / 3))  # 1.138


def test_the_plan_of_a_cut_plan_continues_and_then_stays_at_rest() -> None:
    first = plan_from_json({**HOT, "max_load_moves": 1}, "load")
    second = plan_from_json({**HOT, "assignments": first["assignments"]}, "load")
    third = plan_from_json({**HOT, "assignments": second["assignments"]}, "load")

    assert second["stats"]["moves"] == 2
    assert second["stats"]["load_ratio_after"] == 1
    assert third["moves"] == []


def test_a_node_whose_share_is_a_bucket_keeps_one_so_the_next_plan_need_not_refill_it() -> None:
    snapshot = {
        "bucket_count": 5,
        "nodes": {"a": {"weight": 4.0}, "c": {"weight": 1.0}},
        "assignments": {"a": [1, 2, 3, 4], "c": [5]},
        "load": loads(b1=0, b2=0, b3=0, b4=0, b5=1),
    }

    result = plan_from_json(snapshot, "load")
    again = plan_from_json({**snapshot, "assignments": result["assignments"]}, "load")

    # c's share is one bucket: it swaps its heavy bucket for an idle one rather than giving it
    # away and being refilled by the next plan as an empty node
    assert result["assignments"] == {"a": [1, 2, 3, 5], "c": [4]}
    assert result["stats"]["load_ratio_after"] == 1.25  # the optimum: 1 s on a share of 0.8
    assert again["moves"] == []


def test_a_swap_counts_two_moves_against_max_load_moves() -> None:
    snapshot = {
        "bucket_count": 6,
        "nodes": {"a": {"weight": 4.0}, "c": {}, "d": {}},
        "assignments": {"a": [1, 2, 3, 4], "c": [5], "d": [6]},
        "load": loads(b1=0, b2=0, b3=0, b4=0, b5=1, b6=1),
        "max_load_moves": 3,
    }

    result = plan_from_json(snapshot, "load")
    unlimited = plan_from_json({**snapshot, "max_load_moves": 4}, "load")

    # c and d each keep one bucket (a share of one): each sheds its busy bucket by a swap
    assert result["stats"]["moves"] == 2
    assert result["stats"]["load_ratio_after"] == 3  # d still carries 1 s on a share of 1/3
    assert unlimited["stats"]["moves"] == 4
    assert unlimited["stats"]["load_ratio_after"] == 1.5  # the optimum: both on a


def test_orphans_are_placed_heaviest_first_on_the_node_with_the_most_room() -> None:
    snapshot = {
        "bucket_count": 4,
        "nodes": {"a": {}, "b": {}, "c": {"state": "offline"}},
        "assignments": {"a": [1], "b": [2], "c": [3, 4]},
        "load": loads(b1=1, b2=2, b3=2, b4=5),
        "tolerance": 2.0,  # membership moves only
    }

    result = plan_from_json(snapshot, "load")

    # shares 5 and 5: bucket 4 (5 s) goes to a (room 4, b has 3), then bucket 3 to b
    assert result["assignments"] == {"a": [1, 4], "b": [2, 3]}
    assert result["stats"]["moves"] == result["stats"]["min_moves"] == 2


def test_a_new_node_receives_balanceds_count_then_load_evens_out() -> None:
    snapshot = {
        "bucket_count": 6,
        "nodes": {"a": {}, "b": {}},
        "assignments": {"a": [1, 2, 3, 4, 5, 6]},  # b is new
        "load": loads(b1=5, b2=1, b3=1, b4=1, b5=1, b6=1),
    }

    result = plan_from_json(snapshot, "load")

    assert result["stats"]["min_moves"] == 3  # balanced would move 3
    assert result["assignments"] == {"a": [1], "b": [2, 3, 4, 5, 6]}
    assert result["stats"]["load_ratio_after"] == 1
    assert result["stats"]["moves"] == 5  # 3 for the new node, 2 for load


def test_a_heavy_bucket_on_a_small_node_moves_to_the_big_one() -> None:
    snapshot = {
        "bucket_count": 4,
        "nodes": {"small": {"weight": 1.0}, "big": {"weight": 3.0}},
        "assignments": {"small": [1, 2], "big": [3, 4]},
        "load": loads(b1=6, b2=1, b3=1, b4=0),
    }

    result = plan_from_json(snapshot, "load")

    # total 8, shares 2 and 6: bucket 1 (6 s) goes to big (ratio 7/6, above 1.15), then
    # bucket 3 (1 s) comes back: 2 and 6, ratio 1
    assert result["stats"]["load_ratio_before"] == pytest.approx(7 / 2)
    assert result["assignments"] == {"big": [1, 4], "small": [2, 3]}
    assert result["stats"]["load_ratio_after"] == 1
    assert result["stats"]["moves"] == 2


def test_unmeasured_buckets_count_as_the_mean() -> None:
    snapshot = {
        "bucket_count": 4,
        "nodes": {"a": {}, "b": {}},
        "assignments": {"a": [1, 2], "b": [3, 4]},
        "load": loads(b1=3, b3=1),  # 2 and 4 count as 2 each
    }

    result = plan_from_json(snapshot, "balanced")

    assert result["stats"]["load_ratio_before"] == pytest.approx(5 / 4)


def test_a_zero_total_load_has_ratio_one() -> None:
    snapshot = {**HOT, "load": loads(b1=0, b2=0, b3=0, b4=0, b5=0, b6=0)}

    for strategy in strategy_names():
        stats = plan_from_json(snapshot, strategy)["stats"]
        assert (stats["load_ratio_before"], stats["load_ratio_after"]) == (1, 1)


def test_without_loads_the_ratio_is_the_bucket_count_over_its_share() -> None:
    snapshot = {"bucket_count": 6, "nodes": {"a": {}, "b": {}}, "assignments": {"a": [1, 2, 3, 4]}}

    stats = plan_from_json(snapshot, "balanced")["stats"]

    assert stats["load_ratio_before"] == pytest.approx(4 / 3)
    assert stats["load_ratio_after"] == 1


def test_suspect_nodes_keep_their_load_out_of_the_shares() -> None:
    snapshot = {
        "bucket_count": 4,
        "nodes": {"a": {}, "b": {}, "s": {"state": "suspect"}},
        "assignments": {"a": [1], "b": [2], "s": [3, 4]},
        "load": loads(b1=1, b2=3, b3=100, b4=100),
        "tolerance": 1.0,
    }

    result = plan_from_json(snapshot, "load")

    assert result["assignments"]["s"] == [3, 4]
    assert result["stats"]["load_ratio_before"] == pytest.approx(3 / 2)  # shares: 2 and 2


def test_no_live_node_reports_ratio_zero() -> None:
    stats = plan_from_json({"bucket_count": 2, "load": loads(b1=1)}, "load")["stats"]

    assert (stats["load_ratio_before"], stats["load_ratio_after"]) == (0, 0)


# --- allot plan -------------------------------------------------------------------------------


def test_cli_plan_takes_strategy_load(tmp_path: Path) -> None:
    from allot.cli import app

    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(HOT))

    result = CliRunner().invoke(app, ["plan", "-i", str(path), "--strategy", "load"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == plan_from_json(HOT, "load")


def test_cli_plan_takes_load_from_allot_strategy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from allot.cli import app

    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(HOT))
    monkeypatch.setenv("ALLOT_STRATEGY", "load")

    result = CliRunner().invoke(app, ["plan", "-i", str(path)])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stats"]["strategy"] == "load"
    assert json.loads(result.stdout)["stats"]["load_ratio_after"] == 1


def test_cli_plan_refuses_a_negative_load_in_one_line() -> None:
    result = allot("plan", "-i", "-", "-s", "load", input=json.dumps({**HOT, "load": {"1": -2}}))

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: invalid snapshot: load of bucket 1 is -2; loads must be finite and >= 0"
    ]


@given(
    each=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False),
    counts=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=8),
    weights=st.lists(st.floats(min_value=0.1, max_value=10), min_size=8, max_size=8),
)
def test_the_ratio_of_equal_loads_from_counts_is_the_ratio_summed_bucket_by_bucket(
    each: float, counts: list[int], weights: list[float]
) -> None:
    # Given buckets of one load dealt to nodes in runs of the given sizes
    buckets = sum(counts)
    loads = (0.0, *([each] * buckets))
    held, start = {}, 1
    for index, count in enumerate(counts):
        held[f"n{index}@h"] = list(range(start, start + count))
        start += count
    node_weights = {key: weights[index] for index, key in enumerate(held)}
    total = each * buckets
    # Then counting buckets gives exactly the float that summing their loads gives
    summed = load_ratio(loads, node_weights, held, total)
    assert load_ratio(loads, node_weights, held, total, equal=True) == summed

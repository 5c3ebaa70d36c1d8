"""Properties of the default planner on random snapshots (hypothesis).

The checks here are written independently of the planner's code: shares are computed with
``fractions.Fraction`` and the minimum number of moves by brute force over every valid quota
vector (``M* = B' - max over quotas of sum_n min(held_n, q_n)``, DESIGN.md). Nothing from
``allot.planner.balance`` or ``allot.planner.problem`` is imported.

Five properties x 2,000 examples = 10,000 generated snapshots per run (profile
``planner-properties``), sized small (<= 64 buckets, <= 8 nodes) so the brute force stays cheap.
"""

from __future__ import annotations

import itertools
import json
import random
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allot.planner import plan_from_json
from tests.unit.snapshots import live_keys, snapshots, state_of, suspect_buckets

settings.register_profile(
    "planner-properties",
    max_examples=2_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROPERTIES = settings(settings.get_profile("planner-properties"))

# --- an independent model of the contract -------------------------------------------------------


def orphans(snapshot: dict[str, Any]) -> set[int]:
    """Buckets held by offline nodes or by nobody."""
    kept = {
        bucket
        for key, buckets in snapshot["assignments"].items()
        if state_of(snapshot, key) in ("live", "suspect")
        for bucket in buckets
    }
    return set(range(1, snapshot["bucket_count"] + 1)) - kept


def exact_shares(snapshot: dict[str, Any]) -> dict[str, Fraction]:
    """``s_n = B' * w_n / sum(w)`` in exact rationals."""
    keys = live_keys(snapshot)
    weights = {key: Fraction(snapshot["nodes"][key].get("weight", 1.0)) for key in keys}
    free = snapshot["bucket_count"] - sum(len(b) for b in suspect_buckets(snapshot).values())
    total = sum(weights.values())
    return {key: free * weight / total for key, weight in weights.items()}


def floor_ceil(share: Fraction) -> tuple[int, int]:
    return share.numerator // share.denominator, -(-share.numerator // share.denominator)


def brute_force_minimum(snapshot: dict[str, Any]) -> int:
    """``B' - max over every valid quota vector of sum_n min(held_n, q_n)``, by enumeration."""
    share = exact_shares(snapshot)
    held = {key: len(snapshot["assignments"].get(key, [])) for key in share}
    floors = {key: floor_ceil(value)[0] for key, value in share.items()}
    free = sum(share.values())
    assert free.denominator == 1
    slots = int(free) - sum(floors.values())
    fractional = [key for key, value in share.items() if value.denominator != 1]
    best = -1
    for chosen in itertools.combinations(fractional, slots):
        kept = sum(min(held[key], floors[key] + (key in chosen)) for key in share)
        best = max(best, kept)
    return int(free) - best


def apply(snapshot: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The snapshot after the plan: same nodes, the plan's assignments, no limit."""
    return {**snapshot, "assignments": result["assignments"], "max_moves": None}


def owner_map(assignments: dict[str, list[int]]) -> dict[int, str]:
    return {bucket: key for key, buckets in assignments.items() for bucket in buckets}


# --- properties ---------------------------------------------------------------------------------


@PROPERTIES
@given(snapshots())
def test_every_bucket_has_one_owner_and_suspects_keep_theirs(snapshot: dict[str, Any]) -> None:
    result = plan_from_json(snapshot)
    assignments = result["assignments"]
    every = [bucket for buckets in assignments.values() for bucket in buckets]
    placed = set(every) | set(result["stats"]["unplaced"])

    assert len(every) == len(set(every))  # nobody shares a bucket
    assert not set(every) & set(result["stats"]["unplaced"])
    assert placed == set(range(1, snapshot["bucket_count"] + 1))
    assert sorted(assignments) == sorted(live_keys(snapshot) + list(suspect_buckets(snapshot)))
    assert all(buckets == sorted(buckets) for buckets in assignments.values())
    for key, buckets in suspect_buckets(snapshot).items():
        assert assignments[key] == buckets
    if live_keys(snapshot) and snapshot["max_moves"] is None:
        assert result["stats"]["unplaced"] == []
    if not live_keys(snapshot):
        assert result["moves"] == []
        assert set(result["stats"]["unplaced"]) == orphans(snapshot)
    # the moves are exactly the difference between before and after
    before, after = owner_map(snapshot["assignments"]), owner_map(assignments)
    changed = {b for b in after if before.get(b) != after[b]}
    assert [move["bucket"] for move in result["moves"]] == sorted(changed)
    for move in result["moves"]:
        assert move["from"] == before.get(move["bucket"])
        assert move["to"] == after[move["bucket"]]
        assert state_of(snapshot, move["to"]) == "live"


@PROPERTIES
@given(snapshots(limit=False))
def test_live_nodes_hold_the_floor_or_ceiling_of_their_share(snapshot: dict[str, Any]) -> None:
    result = plan_from_json(snapshot)

    if not live_keys(snapshot):
        assert result["stats"]["balanced"] is not bool(orphans(snapshot))
        return
    for key, share in exact_shares(snapshot).items():
        low, high = floor_ceil(share)
        assert low <= len(result["assignments"][key]) <= high, (key, share)
    assert result["stats"]["balanced"] is True
    assert result["stats"]["spread_after"] <= 2  # < 2 exactly; a float division may round up
    if len({snapshot["nodes"][key].get("weight", 1.0) for key in live_keys(snapshot)}) == 1:
        assert result["stats"]["spread_after"] in (0, 1)


@PROPERTIES
@given(snapshots(limit=False))
def test_moves_equal_the_brute_force_minimum(snapshot: dict[str, Any]) -> None:
    result = plan_from_json(snapshot)

    if live_keys(snapshot):
        minimum = brute_force_minimum(snapshot)
        assert result["stats"]["min_moves"] == minimum
        assert result["stats"]["moves"] == minimum
        assert len(result["moves"]) == minimum


@PROPERTIES
@given(snapshots(), st.integers(0, 2**32))
def test_same_snapshot_same_plan_and_a_second_plan_moves_nothing(
    snapshot: dict[str, Any], seed: int
) -> None:
    rnd = random.Random(seed)  # shuffles the input's order; the plan must not change
    shuffled_assignments = {}
    for key in rnd.sample(list(snapshot["assignments"]), len(snapshot["assignments"])):
        buckets = list(snapshot["assignments"][key])
        rnd.shuffle(buckets)
        shuffled_assignments[key] = buckets
    nodes = dict(rnd.sample(list(snapshot["nodes"].items()), len(snapshot["nodes"])))
    shuffled = {**snapshot, "nodes": nodes, "assignments": shuffled_assignments}

    first = plan_from_json(snapshot)

    assert json.dumps(plan_from_json(snapshot)) == json.dumps(first)
    assert json.dumps(plan_from_json(shuffled)) == json.dumps(first)
    if snapshot["max_moves"] is None and live_keys(snapshot):
        again = plan_from_json(apply(snapshot, first))
        assert again["moves"] == []
        assert again["assignments"] == first["assignments"]


@PROPERTIES
@given(snapshots(), st.integers(0, 70))
def test_max_moves_caps_the_plan_and_places_orphans_first(
    snapshot: dict[str, Any], limit: int
) -> None:
    snapshot = {**snapshot, "max_moves": limit}
    missing = orphans(snapshot)

    result = plan_from_json(snapshot)

    moved = [move["bucket"] for move in result["moves"]]
    assert len(moved) <= limit
    if not live_keys(snapshot):
        return
    minimum = brute_force_minimum(snapshot)
    assert len(moved) == min(limit, minimum)
    assert result["stats"]["min_moves"] == minimum
    if limit < len(missing):
        assert set(moved) <= missing  # only orphans move while some stay unplaced
        assert moved == sorted(missing)[:limit]  # the lowest ids first
    else:
        assert missing <= set(moved)
    # what the limit held back is still exactly the minimum left to do
    rest = plan_from_json(apply(snapshot, result))
    assert rest["stats"]["min_moves"] == minimum - len(moved)

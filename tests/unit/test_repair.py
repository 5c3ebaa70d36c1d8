"""What a foreign writer leaves in ZooKeeper becomes a plannable assignment (allot.cycle.repair)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from allot.cycle.repair import repair_holdings
from allot.planner import NodeInfo, NodeState, Snapshot


def test_nothing_to_repair_changes_nothing() -> None:
    # Given a valid assignment
    held = {"a@h": [1, 3], "b@h": [2]}
    # When it is repaired
    result = repair_holdings(held, 3, live={"a@h", "b@h"})
    # Then it comes back as it was, with no problem
    assert result.held == held
    assert result.problems == {}


def test_an_out_of_range_id_is_dropped_and_reported() -> None:
    # Given a node listing bucket 999 of 100 (the fault probe's ["1","5","999"])
    result = repair_holdings({"a@h": [1, 5, 999]}, 100, live={"a@h"})
    # Then the node keeps its valid buckets and the report names the bad id
    assert result.held == {"a@h": [1, 5]}
    assert result.problems == {"a@h": "bucket id(s) 999 out of range 1..100"}


def test_a_double_listing_keeps_the_live_node() -> None:
    # Given bucket 11 under a gone node and a live one
    held = {"a@h": [11, 12], "b@h": [11, 13]}
    # When only b is live
    result = repair_holdings(held, 20, live={"b@h"})
    # Then b keeps it, a loses it, and a's loss is reported
    assert result.held == {"a@h": [12], "b@h": [11, 13]}
    assert result.problems == {"a@h": "bucket(s) 11 also listed by b@h"}


def test_a_double_listing_keeps_the_lease_holder_over_the_live_node() -> None:
    held = {"a@h": [11], "b@h": [11]}
    result = repair_holdings(held, 20, live={"a@h", "b@h"}, lease_holders={11: "b@h"})
    assert result.held == {"a@h": [], "b@h": [11]}


def test_between_equals_the_first_key_wins() -> None:
    held = {"b@h": [4], "a@h": [4]}
    result = repair_holdings(held, 5, live={"a@h", "b@h"})
    assert result.held == {"a@h": [4], "b@h": []}
    assert set(result.problems) == {"b@h"}


holdings = st.dictionaries(
    st.sampled_from(["a@h", "b@h", "c@h", "d@h"]),
    st.lists(st.integers(min_value=1, max_value=40), max_size=12, unique=True),
    max_size=4,
)


@settings(max_examples=500, deadline=None)
@given(held=holdings, count=st.integers(1, 30), live=st.sets(st.sampled_from(["a@h", "b@h"])))
def test_the_planner_accepts_every_repaired_assignment(
    held: dict[str, list[int]], count: int, live: set[str]
) -> None:
    # Given anything a foreign writer may list (ids beyond the count, buckets under two nodes)
    result = repair_holdings(held, count, live=live)
    # Then the planner's own validation accepts the repaired lists
    nodes = {key: NodeInfo(state=NodeState.LIVE) for key in result.held}
    Snapshot(bucket_count=count, nodes=nodes, assignments=result.held)
    # And every valid listed bucket is still held by exactly one of its listers
    listed = {b for buckets in held.values() for b in buckets if b <= count}
    kept = [b for buckets in result.held.values() for b in buckets]
    assert sorted(kept) == sorted(listed)
    # And a node's list changed exactly when a problem is reported for it
    changed = {key for key in held if sorted(held[key]) != result.held[key]}
    assert changed == set(result.problems)

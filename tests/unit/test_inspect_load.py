"""How ``allot status``, ``allot nodes``, the bucket map and the metrics spread the measured
load over the nodes (:mod:`allot.inspect.load`): the planner's rules, without servers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from allot.inspect.load import NodeLoad, load_spread
from allot.planner import NodeInfo, NodeState, Snapshot, plan


def test_each_live_node_gets_its_load_its_weighted_share_and_their_ratio() -> None:
    # Given every bucket measured: a (weight 1) holds 60 s, b (weight 2) 30 s
    measured = {1: 40.0, 2: 20.0, 3: 10.0, 4: 20.0}

    spread = load_spread(4, measured, {"a@h": [1, 2], "b@h": [3, 4]}, {"a@h": 1.0, "b@h": 2.0})

    # Then the shares are a third and two thirds of 90 s, and a carries twice its share
    assert spread.total == 90.0
    assert spread.nodes == {
        "a@h": NodeLoad(60.0, 30.0, 2.0),
        "b@h": NodeLoad(30.0, 60.0, 0.5),
    }
    assert spread.ratio == 2.0


def test_an_unmeasured_bucket_counts_as_the_mean_of_the_measured_ones() -> None:
    # Given buckets 1 and 2 measured (mean 6 s), buckets 3 and 4 not
    spread = load_spread(4, {1: 10.0, 2: 2.0}, {"a@h": [1, 3], "b@h": [2, 4]}, {"a@h": 1, "b@h": 1})

    assert spread.mean == 6.0
    assert spread.load_of(3) == 6.0
    assert (spread.nodes["a@h"].load, spread.nodes["a@h"].share) == (16.0, 12.0)
    assert (spread.nodes["b@h"].load, spread.nodes["b@h"].share) == (8.0, 12.0)
    assert spread.nodes["a@h"].ratio == pytest.approx(16 / 12)
    assert spread.ratio == pytest.approx(16 / 12)
    assert spread.total == 24.0


def test_a_suspects_buckets_are_left_out_of_the_share_and_it_gets_none() -> None:
    # Given s, suspect, holds bucket 3 (30 s); a and b share the rest; bucket 4 has no owner
    measured = {1: 10.0, 2: 10.0, 3: 30.0, 4: 20.0}
    held = {"a@h": [1], "b@h": [2], "s@h": [3]}

    spread = load_spread(4, measured, held, {"a@h": 1.0, "b@h": 1.0}, suspects=["s@h"])

    # Then the live nodes share 40 s (the unowned bucket's included), s only has a load
    assert spread.total == 40.0
    assert spread.nodes["s@h"] == NodeLoad(30.0)
    assert spread.nodes["a@h"] == NodeLoad(10.0, 20.0, 0.5)
    assert spread.ratio == 0.5


def test_with_nothing_measured_there_is_no_ratio() -> None:
    for measured in ({}, {1: 0.0, 2: 0.0}):
        spread = load_spread(3, measured, {"a@h": [1, 2, 3]}, {"a@h": 1.0, "b@h": 1.0})

        assert spread.ratio is None
        assert spread.total == 0.0
        assert spread.nodes == {"a@h": NodeLoad(0.0, 0.0, None), "b@h": NodeLoad(0.0, 0.0, None)}


def test_without_live_nodes_there_is_no_ratio_and_no_share() -> None:
    spread = load_spread(2, {1: 5.0}, {"gone@h": [1, 2]}, {})

    assert spread.ratio is None
    assert spread.nodes == {"gone@h": NodeLoad(10.0)}


def test_a_measurement_of_a_bucket_out_of_range_is_ignored() -> None:
    spread = load_spread(2, {1: 4.0, 2: 2.0, 3: 1000.0}, {"a@h": [1, 2]}, {"a@h": 1.0})

    assert dict(spread.measured) == {1: 4.0, 2: 2.0}
    assert spread.total == 6.0


def test_the_heaviest_buckets_are_measured_ones_heaviest_first_ties_to_the_lower_id() -> None:
    measured = {7: 5.0, 3: 9.0, 5: 5.0, 1: 1.0, 2: 0.5, 9: 2.0}

    spread = load_spread(10, measured, {}, {})

    assert spread.heaviest() == [(3, 9.0), (5, 5.0), (7, 5.0), (9, 2.0), (1, 1.0)]
    assert spread.heaviest(2) == [(3, 9.0), (5, 5.0)]
    assert load_spread(10, {}, {}, {}).heaviest() == []  # the mean is never listed


Cluster = tuple[int, dict[int, float], dict[str, list[int]], dict[str, float]]


@st.composite
def clusters(draw: st.DrawFn) -> Cluster:
    """Every bucket held by one of 1-5 live nodes, some buckets measured."""
    count = draw(st.integers(1, 40))
    keys = [f"n{index}@h" for index in range(draw(st.integers(1, 5)))]
    weights = {key: draw(st.floats(0.1, 10)) for key in keys}
    held: dict[str, list[int]] = {key: [] for key in keys}
    for bucket in range(1, count + 1):
        held[draw(st.sampled_from(keys))].append(bucket)
    seconds = st.one_of(st.just(0.0), st.floats(1e-6, 3600))  # published to the microsecond
    measured = draw(st.dictionaries(st.integers(1, count), seconds))
    return count, measured, held, weights


@given(clusters())
def test_when_live_nodes_hold_every_bucket_shares_add_up_and_the_ratio_is_at_least_one(
    cluster: Cluster,
) -> None:
    count, measured, held, weights = cluster

    spread = load_spread(count, measured, held, weights)

    loads = sum(node.load for node in spread.nodes.values())
    shares = sum(node.share or 0.0 for node in spread.nodes.values())
    assert loads == pytest.approx(spread.total, abs=1e-6)
    assert shares == pytest.approx(spread.total, abs=1e-6)
    if spread.total > 0:
        assert spread.ratio is not None
        assert spread.ratio >= 1 - 1e-9
    else:
        assert spread.ratio is None


@given(clusters(), st.booleans())
def test_the_ratio_shown_is_the_planners_load_ratio_before_its_plan(
    cluster: Cluster, with_suspect: bool
) -> None:
    # Given a cluster with measured load (and maybe a suspect holding the first node's buckets)
    count, measured, held, weights = cluster
    nodes = {key: NodeInfo(weight) for key, weight in weights.items()}
    suspects = []
    if with_suspect and len(weights) > 1:
        first = sorted(weights)[0]
        nodes[first] = NodeInfo(state=NodeState.SUSPECT)
        suspects.append(first)
    live = {key: w for key, w in weights.items() if key not in suspects}

    spread = load_spread(count, measured, held, live, suspects)
    planned = plan(Snapshot(count, nodes, held, load=measured or None)).stats

    if spread.ratio is not None:
        assert spread.ratio == pytest.approx(planned.load_ratio_before, rel=1e-9)

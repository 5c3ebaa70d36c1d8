"""The assignment cycle with pins and measured load (strategy ``load``), on real ZooKeeper and
real SQL: the pins read every cycle, the nodes' published load read under ``load`` only."""

from __future__ import annotations

import pytest

from allot.zk.load import publish_load
from allot.zk.paths import ZkPaths
from allot.zk.pins import set_pin
from tests.integration.conftest import Cluster, sizes

NODES = ("a@h", "b@h", "c@h")


@pytest.fixture
def three(cluster: Cluster) -> Cluster:
    """Three live nodes holding 34/33/33 buckets after a first cycle."""
    for key in NODES:
        cluster.join(key)
    assert cluster.cycle().run().outcome == "applied"
    return cluster


def use_strategy(cluster: Cluster, strategy: str) -> None:
    cluster.settings = cluster.settings.model_copy(update={"strategy": strategy})


def publish(cluster: Cluster, loads: dict[str, dict[int, float]]) -> None:
    """Each node publishes the seconds its runs took per bucket, from its own session."""
    paths = ZkPaths(cluster.settings.zk_root)
    for key, buckets in loads.items():
        publish_load(cluster.nodes[key], paths, key, 60, buckets)


def owner(assignment: dict[str, list[int]], bucket: int) -> str:
    return next(key for key, owned in assignment.items() if bucket in owned)


def test_strategy_load_moves_heavy_buckets_off_an_overloaded_node(three: Cluster) -> None:
    # Given a@h's first six buckets take ten times the work of any other bucket
    before = three.assert_consistent()
    heavy = sorted(before["a@h"])[:6]
    publish(
        three,
        {key: {b: (10.0 if b in heavy else 1.0) for b in owned} for key, owned in before.items()},
    )

    # When a cycle runs under strategy load
    use_strategy(three, "load")
    report = three.cycle().run("beat")

    # Then it moves a few buckets off a@h and brings the ratio under the tolerance
    after = three.assert_consistent()
    assert report.outcome == "applied"
    assert report.load_ratio_before is not None
    assert report.load_ratio_after is not None
    assert report.load_ratio_before > 1.15
    assert report.load_ratio_after <= 1.15
    assert 0 < report.moves <= three.settings.max_load_moves
    assert report.moves_by_node["a@h"]["out"] == report.moves
    assert sum(1 for b in heavy if b in after["a@h"]) < 6

    # And planning its own result again moves nothing
    again = three.cycle().run("beat")
    assert (again.outcome, again.moves) == ("unchanged", 0)
    assert three.assert_consistent() == after


def test_balanced_ignores_the_measured_load(three: Cluster) -> None:
    before = three.assert_consistent()
    heavy = sorted(before["a@h"])[:6]
    publish(three, {"a@h": dict.fromkeys(heavy, 10.0)})
    # a corrupt load entry: read (and reported) only under strategy load
    three.client.create(ZkPaths(three.settings.zk_root).load_of("x@h"), b"{corrupt")

    report = three.cycle().run("beat")

    assert (report.outcome, report.moves) == ("unchanged", 0)
    assert report.load_ratio_before is None
    assert not any("load/x@h" in warning for warning in report.warnings)

    use_strategy(three, "load")
    loaded = three.cycle().run("beat")
    assert any("load/x@h" in warning for warning in loaded.warnings)


def test_a_pin_moves_its_bucket_to_its_node_and_keeps_it_there(three: Cluster) -> None:
    # Given bucket b of a@h pinned to c@h
    before = three.assert_consistent()
    bucket = sorted(before["a@h"])[0]
    set_pin(three.client, ZkPaths(three.settings.zk_root), bucket, "c@h")

    # When a cycle runs, then the bucket is on c@h
    report = three.cycle().run("beat")
    after = three.assert_consistent()
    assert report.outcome == "applied"
    assert owner(after, bucket) == "c@h"
    assert report.pins_ignored == []

    # And it stays there when a node joins and buckets move to it
    three.join("d@h")
    joined = three.cycle().run("membership")
    assert joined.moves > 0
    assert owner(three.assert_consistent(), bucket) == "c@h"


def test_a_pin_to_a_node_that_is_not_live_is_reported_and_ignored(three: Cluster) -> None:
    before = three.assert_consistent()
    bucket = sorted(before["b@h"])[0]
    set_pin(three.client, ZkPaths(three.settings.zk_root), bucket, "gone@h")

    report = three.cycle().run("beat")

    assert [(pin["bucket"], pin["node"]) for pin in report.pins_ignored] == [(bucket, "gone@h")]
    assert (report.outcome, report.moves) == ("unchanged", 0)
    assert three.assert_consistent() == before


def test_corrupt_pins_are_reported_and_never_block_a_cycle(three: Cluster) -> None:
    before = three.assert_consistent()
    three.client.create(ZkPaths(three.settings.zk_root).pins, b"{not json")
    three.leave("c@h")
    assert three.cycle().run("membership").suspect == ["c@h"]
    three.clock.advance(three.settings.node_offline_timeout)

    report = three.cycle().run("grace")

    assert report.outcome == "applied"
    assert report.moves == len(before["c@h"])
    assert any("pins are not JSON" in warning for warning in report.warnings)
    assert sizes(three.assert_consistent()) == {"a@h": 50, "b@h": 50}

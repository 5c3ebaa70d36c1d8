"""The nodes' published bucket load and the pins, on a real ZooKeeper."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kazoo.client import KazooClient

from allot.zk.load import LoadPublisher, publish_load, read_load
from allot.zk.paths import ZkPaths
from allot.zk.pins import read_pins, remove_pin, set_pin


@pytest.fixture
def paths(zk_root: str) -> ZkPaths:
    return ZkPaths(zk_root)


def test_load_published_by_two_nodes_is_summed_per_bucket(
    zk_connect: Callable[[], KazooClient], paths: ZkPaths
) -> None:
    a, b, reader = zk_connect(), zk_connect(), zk_connect()
    publish_load(a, paths, "a@h", 60, {1: 2.5, 2: 1.0})
    publish_load(b, paths, "b@h", 60, {2: 0.5, 3: 4.0})

    load = read_load(reader, paths)

    assert load.by_bucket == {1: 2.5, 2: 1.5, 3: 4.0}
    assert sorted(load.by_node) == ["a@h", "b@h"]
    assert load.node_total("b@h") == 4.5
    assert load.problems == ()
    assert a.exists(paths.load_of("a@h")).ephemeralOwner == a.client_id[0]


def test_load_of_a_node_whose_session_ended_is_gone(
    zk_connect: Callable[[], KazooClient], paths: ZkPaths
) -> None:
    a, reader = zk_connect(), zk_connect()
    publish_load(a, paths, "a@h", 60, {1: 2.5})
    a.stop()

    assert read_load(reader, paths).by_bucket == {}


def test_corrupt_and_foreign_load_entries_are_reported_not_raised(
    zk: KazooClient, paths: ZkPaths
) -> None:
    publish_load(zk, paths, "good@h", 60, {1: 1.0})
    zk.create(paths.load_of("bad@h"), b"{not json")
    zk.create(
        paths.load_of("odd@h"), b'{"window":60,"at":1,"buckets":{"x":1,"200":2,"3":-1,"4":2}}'
    )

    load = read_load(zk, paths, bucket_count=100)

    assert load.by_bucket == {1: 1.0, 4: 2.0}
    assert len(load.problems) == 4
    assert any("bad@h" in line and "not JSON" in line for line in load.problems)
    assert any("out of range" in line for line in load.problems)


def test_nothing_published_reads_as_no_load(zk: KazooClient, paths: ZkPaths) -> None:
    assert read_load(zk, paths).by_bucket == {}


def test_publisher_writes_only_when_the_load_changed(zk: KazooClient, paths: ZkPaths) -> None:
    publisher = LoadPublisher(zk, paths, "a@h")

    assert publisher.publish(60, {1: 1.0}) is True
    assert publisher.publish(60, {1: 1.0}) is False
    assert zk.exists(paths.load_of("a@h")).version == 0
    assert publisher.publish(60, {1: 2.0}) is True
    assert read_load(zk, paths).by_bucket == {1: 2.0}


def test_publisher_replaces_a_previous_sessions_znode(
    zk_connect: Callable[[], KazooClient], paths: ZkPaths
) -> None:
    old, new = zk_connect(), zk_connect()
    publish_load(old, paths, "a@h", 60, {1: 9.0})

    LoadPublisher(new, paths, "a@h").publish(60, {2: 1.0})
    old.stop()

    assert read_load(new, paths).by_bucket == {2: 1.0}
    assert new.exists(paths.load_of("a@h")).ephemeralOwner == new.client_id[0]


def test_pins_set_and_removed_with_version_checks(zk: KazooClient, paths: ZkPaths) -> None:
    assert read_pins(zk, paths).by_bucket == {}
    assert read_pins(zk, paths).version == -1

    set_pin(zk, paths, 7, "a@h")
    set_pin(zk, paths, 3, "b@h")
    set_pin(zk, paths, 7, "c@h")
    pins = read_pins(zk, paths)

    assert pins.by_bucket == {3: "b@h", 7: "c@h"}
    assert pins.version == 2
    assert zk.get(paths.pins)[0] == b'{"3":"b@h","7":"c@h"}'

    remove_pin(zk, paths, 7)
    remove_pin(zk, paths, 99)  # no pin: nothing written
    assert read_pins(zk, paths).by_bucket == {3: "b@h"}
    assert read_pins(zk, paths).version == 3


def test_corrupt_pins_read_as_none_and_are_replaced_by_the_next_pin(
    zk: KazooClient, paths: ZkPaths
) -> None:
    zk.create(paths.pins, b"[1, 2", makepath=True)

    pins = read_pins(zk, paths)
    assert pins.by_bucket == {}
    assert pins.problem is not None
    assert "not JSON" in pins.problem

    set_pin(zk, paths, 5, "a@h")
    assert read_pins(zk, paths).by_bucket == {5: "a@h"}
    assert read_pins(zk, paths).problem is None


def test_invalid_pin_entries_are_left_out_and_reported(zk: KazooClient, paths: ZkPaths) -> None:
    zk.create(paths.pins, b'{"1":"a@h","0":"b@h","2":"bad/key","300":"c@h","4":5}', makepath=True)

    pins = read_pins(zk, paths, bucket_count=100)

    assert pins.by_bucket == {1: "a@h"}
    assert pins.problem is not None
    assert "out of range" in pins.problem

"""The assignment against a three-server ZooKeeper ensemble whose leader is killed mid-work.

Nodes are real ZooKeeper sessions spread over the three servers; cycles run in a loop in a
thread while an observer reads the assignment every 20 ms. The leader is killed (SIGKILL):
sessions move to the surviving servers, nothing is lost, no bucket is ever listed twice.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from sqlalchemy import Engine

from allot.cycle import AssignmentCycle
from allot.settings import Settings
from allot.testing.ensemble import Ensemble, start_ensemble
from allot.testing.polling import wait_for
from allot.zk.client import connect
from allot.zk.codec import MemberInfo
from allot.zk.members import read_members
from allot.zk.paths import ZkPaths
from allot.zk.registration import NodeRegistration
from allot.zk.store import AssignmentStore
from models.engine import session_factory
from tests.integration.conftest import sizes

SESSION = 10.0


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    servers = start_ensemble(tmp_path_factory.mktemp("ensemble"))
    yield servers
    servers.stop()


class Watch:
    """Cycles in a loop and an observer of double listings, each on its own session."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.outcomes: list[str] = []
        self.doubles: list[str] = []
        self.reads = 0
        self.cycler = connect(settings)
        self.reader = connect(settings)
        self.cycle = AssignmentCycle(self.cycler, session_factory(engine), settings)
        self.threads = [threading.Thread(target=self._cycles), threading.Thread(target=self._look)]

    def _cycles(self) -> None:
        while not self.stop.wait(0.02):
            try:
                self.outcomes.append(str(self.cycle.run("beat").outcome))
            except Exception as exc:  # the server under the session died: retried next loop
                self.outcomes.append(type(exc).__name__)

    def _look(self) -> None:
        store = AssignmentStore(self.reader, ZkPaths(self.settings.zk_root))
        while not self.stop.wait(0.02):
            try:
                held = store.read_all().buckets_by_node()
            except Exception:  # noqa: S112 - the reader's server may be the one killed
                continue
            self.reads += 1
            owners: dict[int, str] = {}
            for key, buckets in held.items():
                for bucket in buckets:
                    if bucket in owners:
                        self.doubles.append(f"bucket {bucket}: {owners[bucket]} and {key}")
                    owners[bucket] = key

    def __enter__(self) -> Watch:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        for client in (self.cycler, self.reader):
            client.stop()
            client.close()


def test_killing_the_leader_mid_cycles_loses_nothing(
    ensemble: Ensemble, zk_root: str, migrated: Engine, tmp_path: Path
) -> None:
    # Given three nodes on a three-server ensemble and a balanced assignment
    settings = Settings(
        zk_hosts=ensemble.hosts,
        zk_root=zk_root,
        zk_session_timeout=SESSION,
        database_url=migrated.url.render_as_string(hide_password=False),
        node_offline_timeout=30.0,
    )
    paths = ZkPaths(zk_root)
    nodes: dict[str, KazooClient] = {}

    def join(key: str) -> None:
        client = connect(settings)
        NodeRegistration(client, paths, MemberInfo(key, "host", 1, 1.0, 0)).register()
        nodes[key] = client

    for key in ("a@h", "b@h", "c@h"):
        join(key)
    store = AssignmentStore(nodes["a@h"], paths)
    try:
        with Watch(settings, migrated) as watch:
            wait_for(
                lambda: len(store.read_all().buckets_by_node()) == 3, "three nodes assigned", 30
            )
            before = store.read_all().version.epoch
            # When the leader is killed while cycles run
            wait_for(lambda: len(watch.outcomes) >= 5, "five cycles", 30)
            leader = ensemble.leader()
            ensemble.kill(leader)
            at_kill = len(watch.outcomes)
            new_leader = ensemble.leader()
            # And a fourth node joins afterwards
            join("d@h")
            # Then the cycles go on and give d its share
            wait_for(
                lambda: sizes(store.read_all().buckets_by_node()).get("d@h") == 25,
                "d@h to hold 25 buckets",
                60,
            )
            wait_for(lambda: len(watch.outcomes) >= at_kill + 10, "ten cycles after the kill", 60)
        # And no session was lost: every node is still a member
        assert set(read_members(nodes["a@h"], paths).live) == {"a@h", "b@h", "c@h", "d@h"}
        # And no read ever saw a bucket listed twice
        assert watch.doubles == []
        assert watch.reads > 0
        assert new_leader != leader
        after = store.read_all()
        assert after.version.epoch == before + 1
        owned = sorted(b for buckets in after.buckets_by_node().values() for b in buckets)
        assert owned == list(range(1, 101))
        assert "applied" in watch.outcomes
    finally:
        for client in nodes.values():
            client.stop()
            client.close()
        ensemble.restart(leader)

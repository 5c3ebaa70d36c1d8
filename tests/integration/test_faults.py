"""Faults of the fault probe, reproduced in-process on real ZooKeeper and real SQL.

Each test names one fault of the probe (stored data that stopped every cycle, a stale lock
holder writing SQL, an SQL outage blocking the failover, an epoch going backwards) and shows
what allot does now. The same faults on a running cluster of real workers are in
tests/e2e/test_faults.py.
"""

from __future__ import annotations

import threading

from kazoo.client import KazooClient
from sqlalchemy import delete, select, update

from allot.cycle import CycleHooks, plans
from allot.testing.zookeeper import expire_session
from allot.zk.codec import encode_buckets
from allot.zk.departures import read_departures
from allot.zk.lock import LockGuard
from allot.zk.paths import ZkPaths
from models import Bucket, Node, Plan
from models.engine import make_engine, session_factory
from models.schema import MirrorState
from tests.integration.conftest import GRACE, Cluster, sizes


def paths(cluster: Cluster) -> ZkPaths:
    return ZkPaths(cluster.settings.zk_root)


def write_raw(client: KazooClient, path: str, data: bytes) -> None:
    """A foreign writer: bytes straight into ZooKeeper, no allot fence."""
    client.set(path, data)


def test_an_unknown_bucket_id_is_dropped_and_the_failover_still_happens(cluster: Cluster) -> None:
    # Given three nodes with a balanced assignment
    for key in ("a@h", "b@h", "c@h"):
        cluster.join(key)
    cluster.cycle().run()
    # When a foreign writer adds bucket 999 (of 100) to a's list and c dies
    write_raw(cluster.client, paths(cluster).assignments("a@h"), b'["1","5","999"]')
    cluster.leave("c@h")
    first = cluster.cycle().run("membership")
    # Then the cycle repairs a's entry, reports it, and c is suspect (not an error)
    assert first.outcome == "applied"
    assert first.repaired == {"a@h": "bucket id(s) 999 out of range 1..100"}
    assert first.suspect == ["c@h"]
    # And after the grace period c's buckets move: the failover is not blocked
    cluster.clock.advance(GRACE + 1)
    second = cluster.cycle().run("grace")
    assert (second.outcome, second.offline) == ("applied", ["c@h"])
    assignment = cluster.assert_consistent()
    assert sorted(assignment) == ["a@h", "b@h"]
    assert 999 not in assignment["a@h"]


def test_a_bucket_listed_by_two_nodes_stays_with_the_live_one(cluster: Cluster) -> None:
    # Given a and b, and a gone node's entry that a foreign assigner also lists bucket 11 under
    for key in ("a@h", "b@h"):
        cluster.join(key)
    cluster.cycle().run()
    owner = next(k for k, v in cluster.zk_assignment().items() if 11 in v)
    cluster.client.create(paths(cluster).node_entry("amoro-7@h"), b"", makepath=True)
    cluster.client.create(paths(cluster).assignments("amoro-7@h"), encode_buckets([11]))
    # When a manual rebalance runs (it used to fail with "bucket 11 is listed twice")
    report = cluster.cycle().run("manual", lock_timeout=5)
    # Then the live owner keeps bucket 11, the foreign entry is repaired and removed
    assert report.outcome == "applied"
    assert report.repaired == {"amoro-7@h": f"bucket(s) 11 also listed by {owner}"}
    assignment = cluster.assert_consistent()
    assert 11 in assignment[owner]
    assert "amoro-7@h" not in assignment


def test_a_stale_holder_writes_nothing_to_sql(cluster: Cluster) -> None:
    # Given a, b and an applied assignment
    for key in ("a@h", "b@h"):
        cluster.join(key)
    cluster.cycle().run()
    stale_client = KazooClient(hosts=cluster.settings.zk_hosts, timeout=4.0)
    stale_client.start()
    newer: list[str] = []

    def freeze_then_wake() -> None:
        # The stale holder refreshed last-update-time and "freezes": its session expires,
        # c joins, and a newer holder moves buckets to c and mirrors SQL
        expire_session(stale_client, cluster.settings.zk_hosts)
        cluster.join("c@h")
        newer.append(cluster.cycle().run("membership").outcome)

    try:
        stale = cluster.cycle(CycleHooks(before_catch_up=freeze_then_wake), client=stale_client)
        report = stale.run("beat")
    finally:
        stale_client.stop()
        stale_client.close()
    # Then the newer holder applied, and the stale one ended aborted, never a traceback
    assert newer == ["applied"]
    assert report.outcome == "aborted"
    # And SQL says what ZooKeeper says: the stale view was not written
    assert sizes(cluster.assert_consistent()) == {"a@h": 34, "b@h": 33, "c@h": 33}


def test_a_frozen_holder_never_fails_the_plan_of_the_holder_after_it(cluster: Cluster) -> None:
    # Given a and b
    for key in ("a@h", "b@h"):
        cluster.join(key)
    stale_client = KazooClient(hosts=cluster.settings.zk_hosts, timeout=4.0)
    stale_client.start()
    took_lock, recorded, stale_done = threading.Event(), threading.Event(), threading.Event()
    outcomes: dict[str, str] = {}

    def frozen_after_lock(_guard: LockGuard) -> None:
        took_lock.set()
        assert recorded.wait(30)  # wakes while the next holder's plan is `applying`

    def run_stale() -> None:
        stale = cluster.cycle(CycleHooks(after_lock=frozen_after_lock), client=stale_client)
        outcomes["stale"] = str(stale.run("beat").outcome)
        stale_done.set()

    def between_record_and_apply(_plan_id: str) -> None:
        recorded.set()
        assert stale_done.wait(30)

    thread = threading.Thread(target=run_stale)
    thread.start()
    try:
        assert took_lock.wait(30)
        # When its session expires while frozen and the next holder records its plan
        expire_session(stale_client, cluster.settings.zk_hosts)
        hooks = CycleHooks(before_zookeeper=between_record_and_apply)
        outcomes["newer"] = str(cluster.cycle(hooks).run("membership").outcome)
    finally:
        recorded.set()
        thread.join(30)
        stale_client.stop()
        stale_client.close()
    # Then the frozen holder aborted and the newer plan is applied, not failed
    assert outcomes == {"stale": "aborted", "newer": "applied"}
    with session_factory(cluster.engine)() as session:
        statuses = [row.status for row in plans.list_plans(session)]
    assert statuses == ["applied"]
    cluster.assert_consistent()


def test_an_sql_outage_delays_the_mirror_never_the_failover(cluster: Cluster) -> None:
    # Given three nodes, an applied assignment, and SQL that then becomes unreachable
    for key in ("a@h", "b@h", "c@h"):
        cluster.join(key)
    cluster.cycle().run()
    dead = make_engine("postgresql+psycopg://allot@127.0.0.1:1/none")
    without_sql = cluster.cycle(sessions=session_factory(dead))
    # When c dies during the outage
    cluster.leave("c@h")
    first = without_sql.run("membership")
    cluster.clock.advance(GRACE + 1)
    second = without_sql.run("grace")
    dead.dispose()
    # Then the grace period runs from ZooKeeper and c's buckets move on time, SQL or not
    assert (first.outcome, first.suspect) == ("unchanged", ["c@h"])
    assert (second.outcome, second.offline) == ("applied", ["c@h"])
    assert second.sql is not None
    assert "SQL unavailable" in second.sql
    assert sizes(cluster.zk_assignment()) == {"a@h": 50, "b@h": 50}
    # And when SQL is back, the next cycle catches up, recording the plan it missed
    back = cluster.cycle().run("beat")
    assert (back.outcome, back.sql) == ("unchanged", None)
    cluster.assert_consistent()
    with session_factory(cluster.engine)() as session:
        missed = session.get(Plan, second.plan_id)
        assert missed is not None
        assert (missed.status, missed.trigger, missed.epoch) == ("applied", "catch-up", 2)


def test_the_grace_period_lives_in_zookeeper(cluster: Cluster) -> None:
    # Given a node seen gone by one cycle
    for key in ("a@h", "b@h"):
        cluster.join(key)
    cluster.cycle().run()
    cluster.leave("b@h")
    cluster.cycle().run("membership")
    assert set(read_departures(cluster.client, paths(cluster)).times) == {"b@h"}
    # When SQL's node rows are wiped
    with cluster.engine.begin() as connection:
        connection.execute(delete(Node))
    # Then the grace period still ends on time
    cluster.clock.advance(GRACE - 5)
    assert cluster.cycle().run("beat").suspect == ["b@h"]
    cluster.clock.advance(6)
    assert cluster.cycle().run("grace").offline == ["b@h"]
    # And once b's entry is gone, the next cycle forgets its departure
    cluster.cycle().run("beat")
    assert read_departures(cluster.client, paths(cluster)).times == {}


def test_a_deleted_assignment_version_never_takes_the_epoch_backwards(cluster: Cluster) -> None:
    # Given four plans applied (epoch 4 in ZooKeeper and SQL)
    for key in ("a@h", "b@h", "c@h", "d@h"):
        cluster.join(key)
        cluster.cycle().run("membership")
    assert cluster.cycle().run().epoch == 4
    # When assignment-version is deleted and the published report is lost too
    cluster.client.delete(paths(cluster).assignment_version)
    cluster.client.delete(paths(cluster).last_cycle)
    quiet = cluster.cycle().run("beat")
    # Then a cycle that moves nothing recreates it from SQL's epoch
    assert (quiet.outcome, quiet.epoch) == ("unchanged", 4)
    # And the next applied plan publishes epoch 5, never 1
    cluster.join("e@h")
    assert cluster.cycle().run("membership").epoch == 5
    with cluster.engine.connect() as connection:
        assert connection.execute(select(Bucket.epoch).order_by(Bucket.epoch.desc())).first() == (
            5,
        )


def test_sql_refuses_a_mirror_that_would_take_its_epoch_backwards(cluster: Cluster) -> None:
    # Given SQL at epoch 1
    cluster.join("a@h")
    cluster.cycle().run()
    # When SQL is told it already mirrors epoch 9 (a newer history) and ZooKeeper says 1
    with cluster.engine.begin() as connection:
        connection.execute(update(Bucket).values(epoch=9))
        connection.execute(update(Bucket).where(Bucket.bucket_id == 1).values(node_key="x@h"))
    with cluster.engine.begin() as connection:
        connection.execute(update(MirrorState).values(epoch=9))
    report = cluster.cycle().run("beat")
    # Then the cycle re-publishes ZooKeeper's epoch at 9 instead of mirroring 1 over 9
    assert report.epoch == 9
    cluster.assert_consistent()


def test_an_amoro_member_under_nodes_gets_no_bucket(cluster: Cluster) -> None:
    # Given Amoro's own AMS registered under the same nodes/ beside two allot nodes
    amoro = KazooClient(hosts=cluster.settings.zk_hosts, timeout=4.0)
    amoro.start()
    try:
        member = b'{"host":"10.0.0.7","restBindPort":1630,"thriftBindPort":1260}'
        amoro.ensure_path(paths(cluster).nodes)
        amoro.create(f"{paths(cluster).nodes}/node-", member, ephemeral=True, sequence=True)
        for key in ("a@h", "b@h"):
            cluster.join(key)
        # When a cycle runs
        report = cluster.cycle().run("membership")
    finally:
        amoro.stop()
        amoro.close()
    # Then only allot's nodes get buckets, and the report names the foreign znode
    assert report.live == ["a@h", "b@h"]
    assert sizes(cluster.assert_consistent()) == {"a@h": 50, "b@h": 50}
    [name] = report.foreign
    assert name.startswith("node-")
    assert "not an allot member" in report.foreign[name]

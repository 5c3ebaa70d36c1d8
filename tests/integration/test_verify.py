"""``allot verify`` run as a real process on a real cluster (ZooKeeper, SQLite and PostgreSQL):
a healthy cluster passes; each broken invariant is named and exits 1; an unreachable server is
one line and the error's exit code."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
from sqlalchemy import Engine, update

from allot.cycle import plans
from allot.errors import DatabaseUnavailable, ZooKeeperUnavailable
from allot.planner import Plan, PlanStats
from allot.testing.servers import free_port
from allot.zk.lock import AssignmentLock
from allot.zk.paths import ZkPaths
from allot.zk.store import AssignmentStore
from models import Bucket
from models.engine import session_factory
from models.schema import MirrorState
from models.states import PlanStatus
from tests.cli import allot
from tests.integration.conftest import GRACE, Cluster


def run_verify(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    settings = cluster.settings
    env = {
        "ALLOT_ZK_HOSTS": settings.zk_hosts,
        "ALLOT_ZK_ROOT": settings.zk_root,
        "ALLOT_DATABASE_URL": settings.database_url,
        "ALLOT_NODE_OFFLINE_TIMEOUT": str(settings.node_offline_timeout),
    }
    result = allot("verify", *args, env=env)
    assert result.returncode in (0, 1), result.stderr
    assert result.stderr == ""  # the findings are the output, never log lines
    return result


def verify(cluster: Cluster) -> tuple[int, dict[str, Any]]:
    result = run_verify(cluster, "--format", "json")
    return result.returncode, json.loads(result.stdout)


def checks(report: dict[str, Any]) -> set[str]:
    return {violation["check"] for violation in report["violations"]}


def details(report: dict[str, Any]) -> list[str]:
    return [violation["detail"] for violation in report["violations"]]


def healthy(cluster: Cluster) -> dict[str, list[int]]:
    for key in ("a@h", "b@h"):
        cluster.join(key)
    cluster.cycle().run()
    return cluster.assert_consistent()


def test_a_healthy_cluster_passes(cluster: Cluster) -> None:
    healthy(cluster)

    code, report = verify(cluster)
    human = run_verify(cluster)

    assert (code, report["ok"], report["violations"], report["epoch"]) == (0, True, [], 1)
    assert (report["live"], report["suspect"], report["notes"]) == (["a@h", "b@h"], [], [])
    assert human.returncode == 0
    assert human.stdout == "ok: epoch 1, 100 buckets, 2 live and 0 suspect node(s)\n"


def test_a_foreign_member_is_a_note_not_a_violation(cluster: Cluster) -> None:
    healthy(cluster)
    amoro = b'{"host":"10.0.0.7","restBindPort":1630,"thriftBindPort":1260}'
    nodes = ZkPaths(cluster.settings.zk_root).nodes
    member = cluster.client.create(f"{nodes}/node-", amoro, ephemeral=True, sequence=True)

    code, report = verify(cluster)

    assert (code, report["violations"]) == (0, [])
    name = member.rsplit("/", 1)[1]
    assert [note.split(":")[0] for note in report["notes"]] == [f"ignored nodes/{name}"]


def test_a_bucket_listed_twice_is_a_violation(cluster: Cluster) -> None:
    # Given a foreign writer that lists one of b's buckets under a as well
    assignment = healthy(cluster)
    taken = assignment["b@h"][0]
    store = AssignmentStore(cluster.client, ZkPaths(cluster.settings.zk_root))
    store.save("a@h", [*assignment["a@h"], taken])

    code, report = verify(cluster)
    human = run_verify(cluster)

    assert (code, checks(report)) == (1, {"one-owner"})
    assert details(report) == [f"bucket(s) {taken} listed by 2 nodes: a@h, b@h"]
    assert human.returncode == 1
    assert human.stdout.splitlines() == [
        f"one-owner: bucket(s) {taken} listed by 2 nodes: a@h, b@h",
        "1 violation(s): epoch 1, 100 buckets, 2 live and 0 suspect node(s)",
    ]


def test_sql_disagreeing_with_zookeeper_is_a_violation(cluster: Cluster) -> None:
    owner = next(key for key, buckets in healthy(cluster).items() if 7 in buckets)
    with cluster.engine.begin() as connection:
        connection.execute(update(Bucket).where(Bucket.bucket_id == 7).values(node_key="x@h"))

    code, report = verify(cluster)

    assert (code, checks(report)) == (1, {"sql-agrees"})
    assert details(report) == [
        f"bucket.node_key differs for 1 bucket(s): 7 (SQL x@h, ZooKeeper {owner})"
    ]


def test_a_plan_left_applying_with_the_lock_free_is_a_violation(cluster: Cluster) -> None:
    healthy(cluster)
    stuck = Plan({}, (), PlanStats(0, 0, 0, 0, strategy="balanced", balanced=True))
    with session_factory(cluster.engine).begin() as session:
        plans.record_plan(
            session, stuck, plan_id="f" * 32, trigger="beat", status=PlanStatus.APPLYING,
            base_epoch=1, max_moves=None,
        )  # fmt: skip

    code, report = verify(cluster)

    assert (code, checks(report)) == (1, {"stuck-plan"})
    assert "f" * 32 in details(report)[0]


def test_what_a_cycle_holding_the_lock_writes_is_in_flight(cluster: Cluster) -> None:
    # Given a plan recorded applying and SQL one epoch behind ZooKeeper
    healthy(cluster)
    with session_factory(cluster.engine).begin() as session:
        plans.record_plan(
            session, Plan({}, (), PlanStats(0, 0, 0, 0, strategy="balanced", balanced=True)),
            plan_id="e" * 32, trigger="beat", status=PlanStatus.APPLYING, base_epoch=1,
            max_moves=None,
        )  # fmt: skip
        session.execute(update(MirrorState).values(epoch=0))
    lock = AssignmentLock(cluster.client, ZkPaths(cluster.settings.zk_root), "a cycle")
    # Then while a cycle holds the assignment lock, both are in flight
    with lock.holding() as guard:
        assert guard is not None
        code, report = verify(cluster)
    assert (code, report["violations"]) == (0, [])
    assert report["notes"] == [
        "SQL mirrors epoch 0, ZooKeeper is at 1: a cycle holds the assignment lock, its mirror "
        "is in flight"
    ]
    # And once it let go of the lock without finishing them, both are violations
    code, report = verify(cluster)
    assert (code, checks(report)) == (1, {"sql-agrees", "stuck-plan"})


def test_an_owner_gone_past_its_grace_is_a_violation(cluster: Cluster) -> None:
    # Given b gone, and not yet seen gone by a cycle: nobody knows when its grace started
    healthy(cluster)
    cluster.leave("b@h")
    code, report = verify(cluster)
    assert (code, checks(report)) == (1, {"owner-state"})
    assert "b@h holds 50 bucket(s) but is unknown" in details(report)[0]
    # When a cycle has seen it gone (the test's cycles run on a clock of their own, verify on
    # the real one: the stored departure is set to the real time here)
    cluster.cycle().run("membership")
    departures = f"{ZkPaths(cluster.settings.zk_root).root}/departures"
    cluster.client.set(departures, json.dumps({"b@h": int(time.time() * 1000)}).encode())
    # Then while b is inside its grace period, holding its buckets is fine
    code, report = verify(cluster)
    assert (code, report["suspect"]) == (0, ["b@h"])
    # And once the grace period is over, it is a violation
    past = int((time.time() - GRACE - 1) * 1000)
    cluster.client.set(departures, json.dumps({"b@h": past}).encode())
    code, report = verify(cluster)
    assert (code, checks(report)) == (1, {"owner-state"})
    assert "b@h holds 50 bucket(s) but is offline" in details(report)[0]


def test_a_lease_naming_a_node_that_is_not_live_is_a_violation(cluster: Cluster) -> None:
    owner = next(key for key, buckets in healthy(cluster).items() if 3 in buckets)
    other = "gone@h"  # a live non-owner would be a donor handing over: a note
    leases = f"{ZkPaths(cluster.settings.zk_root).root}/leases"
    cluster.client.create(f"{leases}/3", json.dumps({"node_key": owner}).encode(), makepath=True)
    assert verify(cluster)[0] == 0

    cluster.client.set(f"{leases}/3", json.dumps({"node_key": other, "epoch": 1}).encode())
    code, report = verify(cluster)

    assert (code, checks(report)) == (1, {"lease-owner"})
    assert details(report) == [f"the lease of bucket 3 names {other}, its owner is {owner}"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_zookeeper_out_of_reach_is_one_line_and_its_exit_code(migrated: Engine) -> None:
    port = free_port()
    env = {
        "ALLOT_ZK_HOSTS": f"127.0.0.1:{port}",
        "ALLOT_DATABASE_URL": migrated.url.render_as_string(hide_password=False),
    }

    result = allot("verify", env=env)

    assert result.returncode == ZooKeeperUnavailable.exit_code
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: cannot connect to ZooKeeper at 127.0.0.1:{port}")
    assert result.stderr.count("\n") == 1, result.stderr


def test_sql_out_of_reach_is_one_line_and_its_exit_code() -> None:
    url = f"postgresql://allot:secret@127.0.0.1:{free_port()}/allot"

    result = allot("verify", "--format", "json", env={"ALLOT_DATABASE_URL": url})

    assert result.returncode == DatabaseUnavailable.exit_code
    assert result.stdout == ""
    assert result.stderr.startswith("error: cannot use the database at postgresql://allot:***@")
    assert result.stderr.count("\n") == 1, result.stderr

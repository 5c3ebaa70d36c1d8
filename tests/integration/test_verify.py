"""``allot verify`` on a real cluster (ZooKeeper, SQLite and PostgreSQL): a healthy cluster
passes; each broken invariant is named and exits 1."""

from __future__ import annotations

import json
import time

from sqlalchemy import update

from allot import plans
from allot.planner import Plan, PlanStats
from allot.zk.paths import ZkPaths
from allot.zk.store import AssignmentStore
from models import Bucket
from models.engine import session_factory
from models.states import PlanStatus
from tests.cli import allot
from tests.integration.test_cycle import GRACE, Cluster, cluster

__all__ = ["cluster"]


def verify(cluster: Cluster) -> tuple[int, dict[str, object]]:
    settings = cluster.settings
    env = {
        "ALLOT_ZK_HOSTS": settings.zk_hosts,
        "ALLOT_ZK_ROOT": settings.zk_root,
        "ALLOT_DATABASE_URL": settings.database_url,
        "ALLOT_NODE_OFFLINE_TIMEOUT": str(settings.node_offline_timeout),
    }
    result = allot("verify", "--format", "json", env=env)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def checks(report: dict[str, object]) -> set[str]:
    violations = report["violations"]
    assert isinstance(violations, list)
    return {v["check"] for v in violations}


def healthy(cluster: Cluster) -> None:
    for key in ("a@h", "b@h"):
        cluster.join(key)
    cluster.cycle().run()


def test_a_healthy_cluster_passes(cluster: Cluster) -> None:
    healthy(cluster)
    code, report = verify(cluster)
    assert (code, report["ok"], report["violations"], report["epoch"]) == (0, True, [], 1)


def test_a_bucket_listed_twice_is_a_violation(cluster: Cluster) -> None:
    healthy(cluster)
    AssignmentStore(cluster.client, ZkPaths(cluster.settings.zk_root)).save("a@h", [1, 2, 51])
    code, report = verify(cluster)
    assert code == 1
    assert "one-owner" in checks(report)


def test_sql_disagreeing_with_zookeeper_is_a_violation(cluster: Cluster) -> None:
    healthy(cluster)
    with cluster.engine.begin() as connection:
        connection.execute(update(Bucket).where(Bucket.bucket_id == 7).values(node_key="x@h"))
    code, report = verify(cluster)
    assert (code, checks(report)) == (1, {"sql-agrees"})


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


def test_an_owner_gone_past_its_grace_is_a_violation(cluster: Cluster) -> None:
    # Given b gone and seen gone by a cycle (the test's cycles run on a clock of their own,
    # verify on the real one: the stored departure is set to the real time here)
    healthy(cluster)
    cluster.leave("b@h")
    cluster.cycle().run("membership")
    departures = f"{ZkPaths(cluster.settings.zk_root).root}/departures"
    cluster.client.set(departures, json.dumps({"b@h": int(time.time() * 1000)}).encode())
    # Then while b is inside its grace period, holding its buckets is fine
    assert verify(cluster)[0] == 0
    # And once the grace period is over, it is a violation
    cluster.client.set(
        departures, json.dumps({"b@h": int((time.time() - GRACE - 1) * 1000)}).encode()
    )
    code, report = verify(cluster)
    assert (code, checks(report)) == (1, {"owner-state"})


def test_a_lease_naming_another_node_than_the_owner_is_a_violation(cluster: Cluster) -> None:
    healthy(cluster)
    owner = next(key for key, buckets in cluster.zk_assignment().items() if 3 in buckets)
    other = "b@h" if owner == "a@h" else "a@h"
    leases = f"{ZkPaths(cluster.settings.zk_root).root}/leases"
    cluster.client.create(f"{leases}/3", json.dumps({"node_key": owner}).encode(), makepath=True)
    assert verify(cluster)[0] == 0
    cluster.client.set(f"{leases}/3", json.dumps({"node_key": other}).encode())
    code, report = verify(cluster)
    assert (code, checks(report)) == (1, {"lease-owner"})

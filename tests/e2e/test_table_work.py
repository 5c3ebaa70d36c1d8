"""Table work on a real cluster: real workers, Redis, ZooKeeper and both databases.

Messages sent while nodes join, stop and die all run on their bucket's owner, none is lost and
none commits twice; a worker frozen mid-task past its session has its commit fenced and the
task runs again on the bucket's new owner.
"""

from __future__ import annotations

import itertools
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from allot.names import parse_table_name
from allot.registry import register_tables
from allot.testing.cluster import LocalCluster
from allot.testing.processes import ManagedProcess
from allot.testing.servers import start_redis
from models.engine import session_factory
from models.schema import BucketLease, TableIdentifier, TableTaskRun
from models.states import RunStatus
from tests.e2e.conftest import START
from tests.e2e.work_tasks import effect, metadata

TABLES = [f"cat.db.t{index:03d}" for index in range(60)]
WORK_ENV = {
    "ALLOT_TASK_MODULES": "tests.e2e.work_tasks",
    "ALLOT_HANDOFF_TIMEOUT": "5",
    "ALLOT_REDELIVERY_TIMEOUT": "8",
}


@pytest.fixture
def work_cluster(cluster: LocalCluster, migrated: Engine) -> LocalCluster:
    metadata.create_all(migrated)
    with session_factory(migrated).begin() as session:
        register_tables(session, [parse_table_name(name) for name in TABLES])
    cluster.env |= WORK_ENV
    return cluster


def fences(engine: Engine) -> dict[int, str]:
    with engine.connect() as connection:
        rows = connection.execute(select(BucketLease.bucket_id, BucketLease.node_key))
        return {row[0]: row[1] for row in rows}


def served_by_owners(
    cluster: LocalCluster, nodes: int | None = None
) -> dict[str, list[int]] | None:
    """The assignment once every bucket's fence names its ZooKeeper owner, else None.

    With ``nodes``, also wait until that many nodes hold buckets: a node started a moment after
    another may not have joined yet when the first takes every bucket.
    """
    zk = cluster.zk()
    if nodes is not None and len(zk) != nodes:
        return None
    owners = {bucket: node for node, buckets in zk.items() for bucket in buckets}
    if len(owners) != 100 or fences(cluster.engine) != owners:
        return None
    return zk


def send(
    cluster: LocalCluster,
    ids: Path,
    count: int,
    rate: float,
    seconds: float,
    tables: list[str] = TABLES,
    name: str = "sender",
    countdown: float | None = None,
) -> ManagedProcess:
    args = [sys.executable, "-m", "tests.e2e.work_sender", ",".join(tables)]
    args += [str(count), str(rate), str(seconds), str(ids)]
    args += [] if countdown is None else [str(countdown)]
    return cluster.group.start(name, args, cluster.env)


def a_table_of(cluster: LocalCluster, node: str) -> str:
    """A table whose bucket ``node`` holds."""
    owned = set(cluster.zk()[cluster.key(node)])
    with cluster.engine.connect() as connection:
        rows = connection.execute(
            select(TableIdentifier.catalog_name, TableIdentifier.db_name,
                   TableIdentifier.table_name, TableIdentifier.bucket_id)
        ).all()  # fmt: skip
    return next(f"{c}.{d}.{t}" for c, d, t, bucket in rows if bucket in owned)


def committed(engine: Engine) -> dict[str, int]:
    """run id -> committed attempts."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(TableTaskRun.run_id, func.count())
            .where(TableTaskRun.status == RunStatus.COMMITTED)
            .group_by(TableTaskRun.run_id)
        )
        return {row[0]: row[1] for row in rows}


def effects(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(select(effect.c.run_id, func.count()).group_by(effect.c.run_id))
        return {row[0]: row[1] for row in rows}


def overlapping_owners(engine: Engine) -> list[tuple[int, str, str]]:
    """Committed attempts of one bucket on two nodes whose running intervals overlap."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                TableTaskRun.bucket_id,
                TableTaskRun.node_key,
                TableTaskRun.started_at,
                TableTaskRun.finished_at,
            ).where(TableTaskRun.status == RunStatus.COMMITTED)
        ).all()
    by_bucket: dict[int, list[tuple[object, object, str]]] = defaultdict(list)
    for bucket, node, started, finished in rows:
        by_bucket[bucket].append((started, finished, node))
    found = []
    for bucket, runs in by_bucket.items():
        runs.sort(key=lambda run: run[0])  # type: ignore[arg-type,return-value]
        for (_, end, node), (start, _, other) in itertools.pairwise(runs):
            if node != other and start < end:  # type: ignore[operator]
                found.append((bucket, node, other))
    return found


def assert_each_committed_once(cluster: LocalCluster, sent: list[str]) -> None:
    """Every sent run commits (waiting for those a dead worker held to come back), exactly
    once, its writes landed once, and no bucket's committed runs overlap on two nodes."""
    cluster.wait_for(lambda: len(committed(cluster.engine)) >= len(sent), "every run", 90)
    runs = committed(cluster.engine)
    assert set(runs) == set(sent)
    assert set(runs.values()) == {1}
    assert effects(cluster.engine) == dict.fromkeys(sent, 1)
    assert overlapping_owners(cluster.engine) == []


def test_messages_follow_their_buckets_through_join_stop_and_kill(
    work_cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster = work_cluster
    node1 = cluster.worker("node1")
    cluster.worker("node2")
    cluster.wait_for(lambda: served_by_owners(cluster, 2), "both nodes serving", START)

    # While messages flow, a node joins (rebalance) and one stops cleanly
    ids = tmp_path / "sent.txt"
    sender = send(cluster, ids, count=200, rate=15, seconds=0.05)
    time.sleep(3)
    cluster.worker("node3")
    cluster.wait_for(lambda: served_by_owners(cluster, 3), "join", START)
    time.sleep(2)
    cluster.processes["node2"].stop()
    cluster.wait_for(lambda: served_by_owners(cluster, 2), "stop", START)
    sender.popen.wait(60)
    before = ids.read_text().split()
    cluster.wait_for(lambda: len(committed(cluster.engine)) >= len(before), "the first sends", 90)
    # then one is killed, and messages go on flowing to its buckets through the failover.
    # (The kill falls while no message is on its way: kombu's Redis transport loses a message
    # popped in the instant its worker is killed, before it records it unacknowledged, a limit
    # of kombu's that docs/table-work.md case 10 states. The messages a killed worker had
    # taken are this file's other kill test.)
    node1.kill()
    after = tmp_path / "sent-after-kill.txt"
    sender = send(cluster, after, count=100, rate=15, seconds=0.05, name="sender-after-kill")
    cluster.wait_for(lambda: served_by_owners(cluster, 1), "kill", START)
    sender.popen.wait(60)
    sent = ids.read_text().split() + after.read_text().split()
    assert len(sent) == 300

    # Then every message committed once (the killed node's return after the redelivery
    # timeout), its writes landed once, and no bucket ran on two nodes at once
    assert_each_committed_once(cluster, sent)


def test_a_worker_frozen_mid_task_is_fenced_and_the_task_runs_on_the_new_owner(
    work_cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster = work_cluster
    cluster.worker("node1")
    cluster.wait_for(lambda: served_by_owners(cluster), "node1 serving", START)
    node1 = cluster.key("node1")

    # Given a long task running on node1
    ids = tmp_path / "sent.txt"
    send(cluster, ids, count=1, rate=10, seconds=6).popen.wait(30)
    (run_id,) = ids.read_text().split()
    cluster.wait_for(lambda: running_on(cluster, run_id) == node1, "task running", 30)

    # When node1 freezes past its session while node2 takes its buckets over
    worker = cluster.processes["node1"]
    worker.signal_group(signal.SIGSTOP)
    try:
        cluster.worker("node2")
        node2 = cluster.key("node2")
        cluster.wait_for(
            lambda: set(fences(cluster.engine).values()) == {node2}, "node2 fenced all", START
        )
    finally:
        worker.signal_group(signal.SIGCONT)

    # Then node1's commit is refused, nothing of it lands, and the run commits on another
    # node under a larger token
    cluster.wait_for(lambda: committed(cluster.engine).get(run_id), "the run committed", 60)
    attempts = history(cluster.engine, run_id)
    assert attempts[0][:2] == (node1, RunStatus.FENCED)
    assert attempts[-1][1] == RunStatus.COMMITTED
    assert attempts[-1][2] > attempts[0][2]
    assert effects(cluster.engine) == {run_id: 1}
    assert cluster.count_in_logs("fenced") >= 1


def fence_tokens(engine: Engine) -> dict[int, int]:
    with engine.connect() as connection:
        rows = connection.execute(select(BucketLease.bucket_id, BucketLease.token))
        return {row[0]: row[1] for row in rows}


def commits_by(engine: Engine, worker_pid: int) -> int:
    """The committed runs whose writes a worker (its main process) made."""
    with engine.connect() as connection:
        return connection.execute(
            select(func.count()).select_from(effect).where(effect.c.worker_pid == worker_pid)
        ).scalar_one()


def test_a_frozen_worker_sharing_its_successors_node_key_commits_nothing_after_it_resumes(
    work_cluster: LocalCluster, tmp_path: Path
) -> None:
    # Given worker A1 serving every bucket under a fixed node key (a StatefulSet pod, a fixed
    # hostname), holding messages due in a few seconds (taken, waiting for their ETA); the
    # redelivery timeout is long, so only A1 can run them until it sends them back
    cluster = work_cluster
    twin = {"ALLOT_NODE_KEY": cluster.key("twin"), "ALLOT_REDELIVERY_TIMEOUT": "120"}
    a1 = cluster.worker("a1", **twin)
    cluster.wait_for(lambda: served_by_owners(cluster), "A1 serving", START)
    old_tokens = fence_tokens(cluster.engine)
    ids = tmp_path / "sent.txt"
    send(cluster, ids, count=8, rate=50, seconds=0, countdown=8).popen.wait(30)
    sent = ids.read_text().split()
    cluster.wait_for(
        lambda: all(a1.output().count(f"{run}] received") for run in sent), "A1 took them", 30
    )

    # When A1 freezes past its ZooKeeper session, A2 starts with the same node key and takes
    # every bucket over (new leases, the fence raised under the same key), and A1 resumes
    # after the messages fell due
    a1.signal_group(signal.SIGSTOP)
    try:
        cluster.worker("a2", **twin)
        cluster.wait_for(
            lambda: all(
                token > old_tokens[bucket] for bucket, token in fence_tokens(cluster.engine).items()
            ),
            "A2 fenced every bucket",
            START,
        )
        assert commits_by(cluster.engine, a1.pid) == 0  # none before the freeze either
    finally:
        a1.signal_group(signal.SIGCONT)

    # Then A1 commits nothing: its runs are under its own, older tokens and go back to their
    # queues; A2 commits every message exactly once under its own tokens
    assert_each_committed_once(cluster, sent)
    assert commits_by(cluster.engine, a1.pid) == 0
    new_tokens = fence_tokens(cluster.engine)
    for run in sent:
        committed_attempt = [a for a in history(cluster.engine, run) if a[1] == RunStatus.COMMITTED]
        assert [token for _, _, token in committed_attempt] == [
            new_tokens[bucket_of(cluster.engine, run)]
        ]
    # and A1, displaced from its key, stops serving table work
    cluster.wait_for(lambda: a1.output().count("displaced by another process"), "A1 stops", 30)


def bucket_of(engine: Engine, run_id: str) -> int:
    with engine.connect() as connection:
        return connection.execute(
            select(TableTaskRun.bucket_id).where(TableTaskRun.run_id == run_id).limit(1)
        ).scalar_one()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_killed_workers_taken_messages_run_on_the_new_owner_before_the_redelivery_timeout(
    work_cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster = work_cluster
    cluster.env["ALLOT_REDELIVERY_TIMEOUT"] = "300"  # the default: kombu gives back after 5 min
    cluster.worker("node1")
    cluster.worker("node2")
    cluster.wait_for(lambda: served_by_owners(cluster, 2), "both nodes serving", START)
    node1, node2 = cluster.key("node1"), cluster.key("node2")

    # Given node1 running a task of one of its buckets, another one of it sent behind it
    ids = tmp_path / "sent.txt"
    table = a_table_of(cluster, "node1")
    send(cluster, ids, count=2, rate=50, seconds=4, tables=[table]).popen.wait(30)
    sent = ids.read_text().split()
    cluster.wait_for(
        lambda: any(running_on(cluster, run) == node1 for run in sent),
        "a task running on node1", 30,
    )  # fmt: skip

    # When node1 is killed
    cluster.processes["node1"].kill()

    # Then node2, taking the bucket, gives node1's taken messages back at once: both commit
    # there once, long before kombu's visibility timeout would have given them back
    cluster.wait_for(lambda: set(committed(cluster.engine)) == set(sent), "both runs", 90)
    assert set(committed(cluster.engine).values()) == {1}
    assert effects(cluster.engine) == dict.fromkeys(sent, 1)
    assert {history(cluster.engine, run)[-1][0] for run in sent} == {node2}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_body_that_kills_its_process_is_given_up_after_max_abandoned_deliveries(
    work_cluster: LocalCluster,
) -> None:
    cluster = work_cluster
    cluster.env["ALLOT_MAX_ABANDONED"] = "2"
    cluster.worker("node1")
    cluster.wait_for(lambda: served_by_owners(cluster), "node1 serving", START)

    # Given a table task whose body kills its pool process (os._exit) every time
    table = a_table_of(cluster, "node1")
    sender = [sys.executable, "-m", "allot", "work", "send", "e2e.die", table]
    assert cluster.group.start("send-die", sender, cluster.env).popen.wait(60) == 0

    # When its message comes back after each death (reject_on_worker_lost)
    def ended() -> list[tuple[str, str]] | None:
        with cluster.engine.connect() as connection:
            rows = connection.execute(
                select(TableTaskRun.run_id, TableTaskRun.status, TableTaskRun.error)
                .where(TableTaskRun.task_name == "e2e.die")
                .order_by(TableTaskRun.attempt_id)
            ).all()
        return [(status, error or "") for _, status, error in rows] if len(rows) >= 3 else None

    history = cluster.wait_for(ended, "the run given up", 120)

    # Then the main process recorded each death, and the delivery after the second ended the
    # run failed without running the body a third time
    assert [status for status, _ in history] == [RunStatus.FAILED] * 3
    assert all(error.startswith("abandoned: its process died") for _, error in history[:2])
    assert history[2][1].startswith("abandoned 2 times")
    started = Path(cluster.env["E2E_STARTED"]).read_text().splitlines()
    assert len(started) == 2


@pytest.fixture(autouse=True)
def started_log(work_cluster: LocalCluster) -> None:
    """Where e2e.record says it started a run (a run writes no history row until it ends)."""
    work_cluster.env["E2E_STARTED"] = str(work_cluster.workdir / "started.log")


def running_on(cluster: LocalCluster, run_id: str) -> str | None:
    """The node that started run ``run_id`` last, or None (see :func:`started_log`)."""
    log = Path(cluster.env["E2E_STARTED"])
    lines = log.read_text().splitlines() if log.exists() else []
    nodes = [line.split()[1] for line in lines if line.split()[0] == run_id]
    return nodes[-1] if nodes else None


def history(engine: Engine, run_id: str) -> list[tuple[str, str, int]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(TableTaskRun.node_key, TableTaskRun.status, TableTaskRun.token)
            .where(TableTaskRun.run_id == run_id)
            .order_by(TableTaskRun.attempt_id)
        )
        return [(node, status, token) for node, status, token in rows]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_redis_restart_loses_no_message_and_queues_still_follow_the_buckets(
    work_cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster = work_cluster
    redis = start_redis(tmp_path / "redis", appendonly=True)
    try:
        cluster.env["ALLOT_BROKER_URL"] = f"redis://{redis.address}/0"
        cluster.worker("node1")
        cluster.worker("node2")
        cluster.wait_for(lambda: served_by_owners(cluster, 2), "both nodes serving", START)
        # Given each worker (one pool process) busy with a long task, so neither is taking
        # messages from Redis (kombu's Redis transport loses a message popped in the instant
        # Redis goes down, before the worker recorded it as unacknowledged: a documented
        # limit), and a backlog waiting in the bucket queues
        ids = tmp_path / "sent.txt"
        busy = [a_table_of(cluster, "node1"), a_table_of(cluster, "node2")]
        send(cluster, ids, 2, rate=50, seconds=6, tables=busy, name="long").popen.wait(60)
        long_runs = ids.read_text().split()
        cluster.wait_for(
            lambda: all(running_on(cluster, run) for run in long_runs),
            "both workers busy", 30,
        )  # fmt: skip
        send(cluster, ids, count=100, rate=200, seconds=0.05).popen.wait(60)
        sent = ids.read_text().split()
        assert len(sent) == 102

        # When Redis restarts under them
        redis.stop()
        time.sleep(2)
        redis = start_redis(tmp_path / "redis", port=redis.port, appendonly=True)
        # and a node joins after the reconnect, so queues switch on the new connections
        cluster.worker("node3")
        cluster.wait_for(lambda: served_by_owners(cluster, 3), "join", START)

        # Then every message commits once, on the owner of its bucket
        assert_each_committed_once(cluster, sent)
    finally:
        cluster.stop_all()
        redis.stop()

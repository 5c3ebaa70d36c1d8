"""Workflows of table tasks on a real cluster: a message sent back to its bucket's queue keeps
its workflow.

A chain ``A | B`` of table tasks on tables of two buckets, each step linked to a plain task
that records it ran, is sent while buckets move: every step commits exactly once, on its
bucket's owner, and every link runs exactly once. A message that reaches a node which does not
serve its bucket reaches the owner with its chain, links, priority and expiry.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from sqlalchemy import Engine, select

from allot.names import parse_table_name
from allot.registry import register_tables
from allot.testing.cluster import LocalCluster
from allot.work.queues import bucket_queue
from models.engine import session_factory
from models.schema import BucketLease, TableTaskRun
from models.states import RunStatus
from tests.e2e import chain_tasks, work_tasks
from tests.e2e.conftest import START
from tests.e2e.test_table_work import (
    TABLES,
    WORK_ENV,
    a_table_of,
    committed,
    effects,
    overlapping_owners,
    served_by_owners,
)

WORKFLOW_TASKS = {"e2e.record", "e2e.chain.observe", "e2e.chain.done"}


@pytest.fixture
def chain_cluster(cluster: LocalCluster, migrated: Engine) -> LocalCluster:
    work_tasks.metadata.create_all(migrated)
    chain_tasks.metadata.create_all(migrated)
    with session_factory(migrated).begin() as session:
        register_tables(session, [parse_table_name(name) for name in TABLES])
    cluster.env |= WORK_ENV | {"ALLOT_TASK_MODULES": "tests.e2e.work_tasks,tests.e2e.chain_tasks"}
    return cluster


@pytest.fixture
def redis(chain_cluster: LocalCluster) -> Iterator[Redis]:
    """The cluster's broker (emptied for this test)."""
    client = Redis.from_url(chain_cluster.env["ALLOT_BROKER_URL"])
    yield client
    client.close()


def send_workflows(
    cluster: LocalCluster, out: Path, pairs: list[tuple[str, str]], **spec: Any
) -> list[dict[str, str]]:
    """Send one workflow ``A | B`` per pair of tables (:mod:`tests.e2e.chain_sender`); their
    labels and task ids."""
    spec["pairs"] = pairs
    args = [sys.executable, "-m", "tests.e2e.chain_sender", str(out), json.dumps(spec)]
    sender = cluster.group.start("sender", args, cluster.env)
    assert sender.popen.wait(60) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def outstanding(redis: Redis) -> int:
    """Messages of the workflows' tasks not finished: waiting in a queue, or taken by a worker
    (running, reserved or waiting for their ETA) and not acknowledged."""
    waiting = sum(redis.llen(key) for key in redis.scan_iter("allot.*.bucket.*"))
    waiting += redis.llen("celery")
    taken = sum(
        json.loads(raw)[0]["headers"]["task"] in WORKFLOW_TASKS for raw in redis.hvals("unacked")
    )
    return waiting + taken


def quiet(redis: Redis, done: Callable[[], bool], hold: float = 1.0) -> Callable[[], bool]:
    """A predicate true once ``done()`` holds and no workflow message has been outstanding
    for ``hold`` seconds: no copy of any step is left to run (a worker moves a message from
    its queue to the unacknowledged ones in two steps, hence the hold)."""
    since: list[float] = []

    def predicate() -> bool:
        if outstanding(redis) or not done():
            since.clear()
            return False
        since[:1] = since[:1] or [time.monotonic()]
        return time.monotonic() - since[0] >= hold

    return predicate


def labels_of(sent: list[dict[str, str]]) -> set[str]:
    """The labels of the links of the workflows ``sent``."""
    return {f"{flow['label']}:{step}" for flow in sent for step in ("a", "b")}


def link_runs(engine: Engine) -> Counter[str]:
    """label -> runs of the link ``e2e.chain.done(label)``."""
    with engine.connect() as connection:
        return Counter(connection.execute(select(chain_tasks.link_run.c.label)).scalars())


def leases(engine: Engine) -> dict[int, tuple[str, int]]:
    """bucket -> (node, token) of its fence."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(BucketLease.bucket_id, BucketLease.node_key, BucketLease.token)
        )
        return {bucket: (node, token) for bucket, node, token in rows}


def commits(engine: Engine) -> dict[str, tuple[int, str, int, Any, Any]]:
    """run id -> (bucket, node, token, started, finished) of its committed attempt."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                TableTaskRun.run_id,
                TableTaskRun.bucket_id,
                TableTaskRun.node_key,
                TableTaskRun.token,
                TableTaskRun.started_at,
                TableTaskRun.finished_at,
            ).where(TableTaskRun.status == RunStatus.COMMITTED)
        )
        return {run: (bucket, node, token, s, f) for run, bucket, node, token, s, f in rows}


def assert_workflows_ran_once(
    cluster: LocalCluster,
    sent: list[dict[str, str]],
    lease_sets: list[dict[int, tuple[str, int]]],
    recorded: tuple[str, ...] = ("a", "b"),
) -> None:
    """Every step committed exactly once (the writes of the ``recorded`` steps, ``e2e.record``,
    too), under a lease its node held of the bucket (one of ``lease_sets``), B after A; every
    link ran exactly once."""
    runs = [flow[step] for flow in sent for step in ("a", "b")]
    counts = committed(cluster.engine)
    assert {run: counts.get(run) for run in runs} == dict.fromkeys(runs, 1)
    writes = [flow[step] for flow in sent for step in recorded]
    assert effects(cluster.engine) == dict.fromkeys(writes, 1)
    attempts = commits(cluster.engine)
    for run in runs:
        bucket, node, token = attempts[run][:3]
        assert (node, token) in {held[bucket] for held in lease_sets}, (run, bucket, node)
    for flow in sent:
        assert attempts[flow["b"]][3] >= attempts[flow["a"]][4]  # B started after A committed
    assert overlapping_owners(cluster.engine) == []
    links = link_runs(cluster.engine)
    assert set(links) == labels_of(sent)
    again = {label: runs for label, runs in links.items() if runs > 1}
    if again:
        raise LinkRanAgain(f"links that ran more than once (label: runs): {again}")


class LinkRanAgain(AssertionError):
    """A link ran more than once."""


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_workflows_held_by_a_node_whose_buckets_move_run_each_step_and_link_once(
    chain_cluster: LocalCluster, redis: Redis, tmp_path: Path
) -> None:
    # Given node1 serving every bucket and holding workflows whose first step is due in a
    # while (taken, waiting for its ETA; kombu's redelivery timeout is longer than that)
    cluster = chain_cluster
    cluster.env["ALLOT_REDELIVERY_TIMEOUT"] = "120"
    node1 = cluster.worker("node1")
    cluster.wait_for(lambda: served_by_owners(cluster), "node1 serving", START)
    before = leases(cluster.engine)
    pairs = [(TABLES[40 + index], TABLES[19 - index]) for index in range(20)]
    countdown = 20.0
    due = time.monotonic() + countdown
    sent = send_workflows(cluster, tmp_path / "sent.jsonl", pairs, options={"countdown": countdown})
    cluster.wait_for(
        lambda: all(f"{flow['a']}] received" in node1.output() for flow in sent),
        "node1 took them", 30,
    )  # fmt: skip

    # When node2 joins and takes half the buckets over before the workflows are due: node1
    # gives them away at the handoff timeout still holding their messages, node2 gives those
    # back to the queues, and node1 sends its copies back when they fall due
    cluster.worker("node2")
    cluster.wait_for(lambda: served_by_owners(cluster, 2), "join", START)
    assert time.monotonic() < due, "node2 took its buckets after the workflows fell due"

    # Then, once no copy of any message is left, every step committed once on its bucket's
    # owner and every link ran once
    cluster.wait_for(
        quiet(redis, lambda: set(link_runs(cluster.engine)) >= labels_of(sent)),
        "every workflow done and no message left", 90,
    )  # fmt: skip
    sent_back = [flow for flow in sent if cluster.count_in_logs(f"{flow['a']}] sent back")]
    assert sent_back, "no first step was sent back: the test did not test it"
    assert_workflows_ran_once(cluster, sent, [before, leases(cluster.engine)])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_message_sent_back_reaches_the_owner_with_its_workflow_priority_and_expiry(
    chain_cluster: LocalCluster, redis: Redis, tmp_path: Path
) -> None:
    # Given two nodes serving their buckets
    cluster = chain_cluster
    cluster.worker("node1")
    cluster.worker("node2")
    cluster.wait_for(lambda: served_by_owners(cluster, 2), "both nodes serving", START)
    served = leases(cluster.engine)
    node1_bucket = next(b for b, (node, _) in served.items() if node == cluster.key("node1"))
    wrong_queue = bucket_queue(cluster.settings.cluster, node1_bucket)

    # When workflows whose first step is on a table of node2's are sent to a queue of node1's,
    # with a priority and an expiry
    pairs = [(a_table_of(cluster, "node2"), a_table_of(cluster, "node1"))] * 3
    options = {"queue": wrong_queue, "priority": 7, "expires": 600}
    sent = send_workflows(
        cluster, tmp_path / "sent.jsonl", pairs, first="e2e.chain.observe", options=options
    )

    # Then node1 sends each back, and node2 runs it with its priority and expiry, and the rest
    # of its workflow runs once
    cluster.wait_for(
        quiet(redis, lambda: set(link_runs(cluster.engine)) >= labels_of(sent)),
        "every workflow done and no message left", 60,
    )  # fmt: skip
    for flow in sent:
        assert cluster.processes["node1"].output().count(f"{flow['a']}] sent back") == 1
    with cluster.engine.connect() as connection:
        rows = connection.execute(select(chain_tasks.seen)).mappings().all()
    assert sorted(row["run_id"] for row in rows) == sorted(flow["a"] for flow in sent)
    for row in rows:
        assert (row["node_key"], row["priority"], row["retries"]) == (cluster.key("node2"), 7, 0)
        assert datetime.datetime.fromisoformat(row["expires"]) > datetime.datetime.now(datetime.UTC)
    assert_workflows_ran_once(cluster, sent, [served], recorded=("b",))

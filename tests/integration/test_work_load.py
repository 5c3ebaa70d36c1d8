"""Bucket load measured as runs end (allot.work.load): in memory shared with the pool processes,
never in a run's SQL; windowed and published to ZooKeeper by the main process."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import pytest
from kazoo.client import KazooClient
from sqlalchemy import Engine

from allot.errors import Fenced
from allot.settings import Settings
from allot.work import load as work_load
from allot.work import tokens
from allot.work.context import TableContext
from allot.work.database import WorkSql, open_work_sql
from allot.work.fence import take_fence
from allot.work.load import LoadMeter, LoadReporter
from allot.work.run import NotHere, execute
from allot.work.spec import TableTaskSpec
from allot.work.tokens import TokenTable
from allot.zk.load import LoadPublisher, read_load
from allot.zk.paths import ZkPaths
from models.states import RunStatus
from tests.integration.conftest import TABLE, attempts, writing

FORK = multiprocessing.get_context("fork")
KEY = "a@h"
NAP = 0.05


@pytest.fixture
def worker() -> Iterator[tuple[TokenTable, LoadMeter]]:
    """This process as a worker's main process: the node's tokens and load meter, made before
    any fork (as ``worker_init`` makes them)."""
    saved = tokens._node_tokens, work_load._node_load
    tokens._node_tokens, work_load._node_load = None, None
    yield tokens.share_node_tokens(100), work_load.share_node_load(100)
    tokens._node_tokens, work_load._node_load = saved


def napping(seconds: float) -> TableTaskSpec:
    def body(ctx: TableContext) -> None:
        time.sleep(seconds)

    return TableTaskSpec("test.nap", body, None)


def run_in_pool_processes(engine: Engine, database_url: str, runs: list[str]) -> list[str]:
    """Run each of ``runs`` in its own process forked from this one (pool processes, all at
    once), as the worker does; what happened to each."""

    def pool_process(run_id: str, pipe: Connection) -> None:
        engine.dispose(close=False)
        own = open_work_sql(Settings(database_url=database_url))
        try:
            execute(own, napping(NAP), TABLE, run_id, KEY, {})
            pipe.send("committed")
        except BaseException as exc:
            pipe.send(repr(exc))
        finally:
            own.engine.dispose()

    pipes, processes = [], []
    for run_id in runs:
        parent, child = FORK.Pipe()
        process = FORK.Process(target=pool_process, args=(run_id, child), daemon=True)
        process.start()
        pipes.append(parent)
        processes.append(process)
    outcomes = []
    for parent, process in zip(pipes, processes, strict=True):
        assert parent.poll(60), "a pool process did not answer"
        outcomes.append(parent.recv())
        process.join(10)
    return outcomes


def test_runs_in_pool_processes_add_their_seconds_to_the_main_processs_meter(
    sql: WorkSql, bucket: int, worker: tuple[TokenTable, LoadMeter], database_url: str
) -> None:
    # Given a worker serving the bucket, its meter made before its pool forked
    table, meter = worker
    table.hold(bucket, 100, generation=0)

    # When four pool processes each run a message of the bucket that takes NAP seconds
    outcomes = run_in_pool_processes(sql.engine, database_url, [f"run-{i}" for i in range(4)])

    # Then the main process reads their seconds under the bucket, and only there
    assert outcomes == ["committed"] * 4
    totals = meter.totals()
    assert list(totals) == [bucket]
    assert 4 * NAP <= totals[bucket] < 4 * NAP + 10


def test_concurrent_additions_from_forked_processes_are_all_counted() -> None:
    meter = LoadMeter(16)

    def add_many(bucket: int) -> None:
        for _ in range(2000):
            meter.add(bucket, 0.5)

    processes = [FORK.Process(target=add_many, args=(1 + i % 2,)) for i in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)

    assert meter.totals() == {1: 2000.0, 2: 2000.0}


def test_every_ended_body_counts_and_a_run_sent_back_does_not(
    sql: WorkSql, bucket: int, worker: tuple[TokenTable, LoadMeter]
) -> None:
    table, meter = worker
    table.hold(bucket, 100, generation=0)

    def failing(ctx: TableContext) -> None:
        time.sleep(NAP)
        raise RuntimeError("boom")

    def fenced(ctx: TableContext) -> None:
        time.sleep(NAP)
        with sql.sessions.begin() as session:
            assert take_fence(session, ctx.bucket_id, "b@h", 200)
        with ctx.commit():
            pass

    # a committed run, a failed one, a fenced one: each body's seconds count
    execute(sql, napping(NAP), TABLE, "ok", KEY, {})
    with pytest.raises(RuntimeError):
        execute(sql, TableTaskSpec("test.fail", failing, None), TABLE, "failed", KEY, {})
    with pytest.raises(Fenced):
        execute(sql, TableTaskSpec("test.fenced", fenced, None), TABLE, "fenced", KEY, {})
    counted = meter.totals()[bucket]
    assert counted >= 3 * NAP
    assert attempts(sql.engine, "ok") == [RunStatus.COMMITTED]

    # a message sent back (its node no longer serves the bucket): no body ran, nothing counted
    with pytest.raises(NotHere):
        execute(sql, writing([]), TABLE, "sent-back", KEY, {})
    assert meter.totals()[bucket] == counted


def test_the_reporter_publishes_the_window_and_forgets_what_left_it(
    zk_connect: Callable[[], KazooClient], zk_root: str
) -> None:
    # Given a node's meter and reporter with a 60 s window, on a clock the test moves
    client, reader = zk_connect(), zk_connect()
    paths = ZkPaths(zk_root)
    meter = LoadMeter(100)
    now = [1000.0]
    reporter = LoadReporter(
        meter, LoadPublisher(client, paths, KEY), window=60, interval=5, clock=lambda: now[0]
    )

    # When runs of buckets 3 and 7 end, and it reports
    meter.add(3, 2.0)
    meter.add(7, 1.0)
    reporter.report()
    first = client.exists(paths.load_of(KEY))

    # Then ZooKeeper holds their seconds; reporting again with nothing new writes nothing
    assert read_load(reader, paths).by_bucket == {3: 2.0, 7: 1.0}
    now[0] += 5
    reporter.report()
    assert client.exists(paths.load_of(KEY)).version == first.version

    # When bucket 3 runs again 30 s later, then both runs count
    now[0] += 25
    meter.add(3, 4.0)
    reporter.report()
    assert read_load(reader, paths).by_bucket == {3: 6.0, 7: 1.0}

    # When the first runs leave the window, only the later one stays; then nothing
    now[0] += 35
    reporter.report()
    assert read_load(reader, paths).by_bucket == {3: 4.0}
    now[0] += 60
    reporter.report()
    assert read_load(reader, paths).by_bucket == {}
    assert read_load(reader, paths).by_node[KEY].window == 60


def test_the_reporter_thread_publishes_every_interval(
    zk_connect: Callable[[], KazooClient], zk_root: str
) -> None:
    client, reader = zk_connect(), zk_connect()
    paths = ZkPaths(zk_root)
    meter = LoadMeter(100)
    reporter = LoadReporter(meter, LoadPublisher(client, paths, KEY), window=60, interval=0.1)
    reporter.start()
    try:
        meter.add(5, 1.5)
        deadline = time.monotonic() + 30
        while read_load(reader, paths).by_bucket != {5: 1.5}:
            assert time.monotonic() < deadline, "the load was never published"
            time.sleep(0.05)
    finally:
        reporter.stop()

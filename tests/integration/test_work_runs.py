"""One run of a table task (allot.work.run.execute) against both databases: exactly one
commit per run, fenced commits write nothing, a holder's commit and a new holder's fence are
ordered by the database."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import (
    Engine,
    event,
    insert,
    text,
)
from sqlalchemy.exc import DBAPIError

import allot.work.run as run_module
from allot.errors import Fenced, RunAbandoned
from allot.settings import Settings
from allot.testing.polling import wait_for
from allot.work.client import list_runs
from allot.work.context import TableContext
from allot.work.database import WorkSql, open_work_sql
from allot.work.fence import take_fence
from allot.work.lost import record_lost
from allot.work.run import NotHere, attempt_ended, execute, transient
from allot.work.runs import ABANDONED
from allot.work.spec import TableTaskSpec
from models.schema import BucketLease
from models.states import RunStatus
from tests.integration.conftest import TABLE, attempts, effect, effects_of, writing


def test_a_run_commits_once_and_a_redelivered_message_is_not_run_again(
    sql: WorkSql, bucket: int
) -> None:
    calls: list[str] = []
    spec = writing(calls)
    assert execute(sql, spec, TABLE, "run-1", "a@h", {}) == {"token": 100}
    assert execute(sql, spec, TABLE, "run-1", "a@h", {}) is None  # delivered again
    assert calls == ["run-1"]
    assert effects_of(sql.engine, "run-1") == 1
    assert attempts(sql.engine, "run-1") == [RunStatus.COMMITTED]


def test_a_message_on_a_node_the_fence_does_not_name_is_not_run(sql: WorkSql, bucket: int) -> None:
    calls: list[str] = []
    with pytest.raises(NotHere):
        execute(sql, writing(calls), TABLE, "run-2", "b@h", {})
    assert calls == []
    assert attempts(sql.engine, "run-2") == []


def test_a_commit_after_the_bucket_moved_is_fenced_and_writes_nothing(
    sql: WorkSql, bucket: int
) -> None:
    def body(ctx: TableContext) -> None:
        with sql.sessions.begin() as session:  # the bucket moves while the body runs
            assert take_fence(session, ctx.bucket_id, "b@h", ctx.token + 1)
        with ctx.commit() as session:
            session.execute(insert(effect).values(run_id=ctx.run_id, table_id=ctx.table_id))

    with pytest.raises(Fenced, match="moved to b@h"):
        execute(sql, TableTaskSpec("test.moved", body, None), TABLE, "run-3", "a@h", {})
    assert effects_of(sql.engine, "run-3") == 0
    assert attempts(sql.engine, "run-3") == [RunStatus.FENCED]
    # the message runs again on the new owner and commits there, once
    calls: list[str] = []
    execute(sql, writing(calls), TABLE, "run-3", "b@h", {})
    assert effects_of(sql.engine, "run-3") == 1
    assert attempts(sql.engine, "run-3") == [RunStatus.FENCED, RunStatus.COMMITTED]


def test_a_refused_commit_the_body_wraps_in_its_own_error_is_still_fenced(
    sql: WorkSql, bucket: int
) -> None:
    class CompactionError(Exception):
        pass

    def body(ctx: TableContext) -> None:
        with sql.sessions.begin() as session:
            assert take_fence(session, ctx.bucket_id, "b@h", ctx.token + 1)
        try:
            with ctx.commit() as session:
                session.execute(insert(effect).values(run_id=ctx.run_id, table_id=ctx.table_id))
        except Exception as exc:
            raise CompactionError("could not record the compaction") from exc

    # the run is fenced (sent back to the bucket's queue), not failed (acknowledged, lost)
    with pytest.raises(Fenced, match="CompactionError"):
        execute(sql, TableTaskSpec("test.wrapped", body, None), TABLE, "run-7", "a@h", {})
    assert effects_of(sql.engine, "run-7") == 0
    assert attempts(sql.engine, "run-7") == [RunStatus.FENCED]


def test_two_attempts_of_one_run_at_once_commit_once(sql: WorkSql, bucket: int) -> None:
    # a message handed out twice (a redelivery while the first attempt still runs)
    inside = threading.Barrier(2)

    def body(ctx: TableContext) -> None:
        inside.wait(timeout=10)  # both attempts started before either commits
        with ctx.commit() as session:
            session.execute(insert(effect).values(run_id=ctx.run_id, table_id=ctx.table_id))

    spec = TableTaskSpec("test.twice", body, None)
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            execute(sql, spec, TABLE, "run-4", "a@h", {})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert effects_of(sql.engine, "run-4") == 1
    assert sorted(attempts(sql.engine, "run-4")) == [RunStatus.COMMITTED, RunStatus.FAILED]


def test_a_new_holder_waits_for_a_commit_that_passed_the_fence(sql: WorkSql, bucket: int) -> None:
    holding = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def body(ctx: TableContext) -> None:
        with ctx.commit() as session:
            session.execute(insert(effect).values(run_id=ctx.run_id, table_id=ctx.table_id))
            holding.set()
            release.wait(10)
            order.append("commit")

    runner = threading.Thread(
        target=execute,
        args=(sql, TableTaskSpec("test.slow", body, None), TABLE, "run-5", "a@h", {}),
    )
    runner.start()
    assert holding.wait(10)

    def new_holder() -> None:
        with sql.sessions.begin() as session:
            take_fence(session, bucket, "b@h", 200)
        order.append("fence")

    taker = threading.Thread(target=new_holder, name="new-holder")
    with fence_write_sent(sql.engine, "new-holder") as sent:
        taker.start()
        assert sent.wait(10), "the new holder never sent its fence write"
    # SQLite waits in its busy handler, which nothing outside sees; PostgreSQL shows the wait
    if sql.engine.dialect.name == "postgresql":
        wait_for(lambda: waiting_on_a_lock(sql.engine), "the fence write to wait on a lock", 10)
    assert order == []  # the fence write waits for the commit holding the row
    release.set()
    runner.join(10)
    taker.join(30)
    assert order == ["commit", "fence"]
    assert effects_of(sql.engine, "run-5") == 1


@contextlib.contextmanager
def fence_write_sent(engine: Engine, thread_name: str) -> Iterator[threading.Event]:
    """An event set when the thread named ``thread_name`` sends its write of a bucket's fence
    row to the database (the write may then wait there)."""
    sent = threading.Event()

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if threading.current_thread().name == thread_name and statement.lstrip().startswith(
            f"UPDATE {BucketLease.__tablename__}"
        ):
            sent.set()

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", before)


def waiting_on_a_lock(engine: Engine) -> bool:
    """Whether a session of the engine's PostgreSQL database waits on a lock."""
    with engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return bool(waiting)


def test_the_fence_token_only_rises(sql: WorkSql, bucket: int) -> None:
    with sql.sessions.begin() as session:
        assert not take_fence(session, bucket, "old@h", 99)  # older than a@h's 100
        assert take_fence(session, bucket, "b@h", 101)
        assert not take_fence(session, bucket, "a@h", 100)


def test_a_failing_body_is_recorded_and_writes_nothing(sql: WorkSql, bucket: int) -> None:
    def body(ctx: TableContext) -> None:
        with ctx.commit() as session:
            session.execute(insert(effect).values(run_id=ctx.run_id, table_id=ctx.table_id))
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        execute(sql, TableTaskSpec("test.fail", body, None), TABLE, "run-6", "a@h", {})
    assert effects_of(sql.engine, "run-6") == 0
    assert attempts(sql.engine, "run-6") == [RunStatus.FAILED]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_commit_frozen_on_postgresql_is_ended_and_the_new_holder_goes_on(
    sql: WorkSql, bucket: int, database_url: str
) -> None:
    # Given a process whose commit passed the fence and then froze (idle in its transaction)
    frozen = open_work_sql(Settings(database_url=database_url, handoff_timeout=1))
    holding, resume = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def body(ctx: TableContext) -> None:
        with ctx.commit() as session:
            session.execute(insert(effect).values(run_id=ctx.run_id, table_id=ctx.table_id))
            holding.set()
            resume.wait(30)

    def run() -> None:
        try:
            execute(frozen, TableTaskSpec("test.frozen", body, None), TABLE, "run-9", "a@h", {})
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    assert holding.wait(10)
    # When the bucket's next holder writes its fence while that process is still frozen
    taker = threading.Thread(target=lambda: take_fence_now(sql, bucket))
    taker.start()
    taker.join(20)
    # Then the server ended the frozen transaction: the fence moved without the process resuming
    assert not taker.is_alive(), "the new holder waited for the frozen process"
    resume.set()
    runner.join(20)
    # and nothing the frozen process wrote landed, its attempt is not committed
    assert isinstance(outcome[0], DBAPIError)
    assert effects_of(sql.engine, "run-9") == 0
    assert RunStatus.COMMITTED not in attempts(sql.engine, "run-9")
    frozen.engine.dispose()


def take_fence_now(sql: WorkSql, bucket: int) -> None:
    with sql.sessions.begin() as session:
        assert take_fence(session, bucket, "b@h", 200)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_body_computing_inside_commit_past_the_idle_timeout_fails_and_is_not_retried(
    sql: WorkSql, bucket: int, database_url: str
) -> None:
    # Given a body that computes inside commit() for longer than ALLOT_HANDOFF_TIMEOUT
    worker = open_work_sql(Settings(database_url=database_url, handoff_timeout=1))
    calls: list[str] = []

    def body(ctx: TableContext) -> None:
        calls.append(ctx.run_id)
        with ctx.commit() as session:
            session.execute(insert(effect).values(run_id=ctx.run_id, table_id=ctx.table_id))
            wait_for(lambda: idle_sessions_ended(sql.engine), "the server to end it", 30)

    # When it runs, the server ends its transaction
    with pytest.raises(DBAPIError) as ended:
        execute(worker, TableTaskSpec("test.long", body, None), TABLE, "run-10", "a@h", {})
    # Then the error is the run's own (it would happen again): not retried, the run failed
    assert getattr(ended.value.orig, "sqlstate", None) == "25P03"
    assert not transient(ended.value)
    assert effects_of(sql.engine, "run-10") == 0
    assert attempts(sql.engine, "run-10") == [RunStatus.FAILED]
    worker.engine.dispose()


def idle_sessions_ended(engine: Engine) -> bool:
    """Whether the server ended a session idle in its transaction (it counts them)."""
    with engine.connect() as connection:
        ended = connection.execute(
            text("SELECT sessions_killed FROM pg_stat_database WHERE datname = current_database()")
        ).scalar_one()
    return bool(ended)


def test_a_message_that_kills_its_process_is_given_up_after_max_abandoned_attempts(
    sql: WorkSql, bucket: int, database_url: str
) -> None:
    # Given a body that kills the process running it (an OOM, a segfault) every time
    worker = WorkSql(
        os.getpid(), Settings(database_url=database_url, max_abandoned=3), sql.engine, sql.sessions
    )
    calls: list[str] = []
    ended: list[str] = []

    class Died(BaseException):
        """Stands for the process dying in the body: nothing after it runs."""

    def body(ctx: TableContext) -> None:
        calls.append(ctx.run_id)
        raise Died

    def died_in_the_body(run_id: str) -> None:
        # a killed pool process records nothing; the worker's main process, told of the lost
        # worker, records the attempt abandoned (allot.work.lost.TableRequest)
        with contextlib.suppress(Died), pytest.MonkeyPatch.context() as patch:
            patch.setattr(run_module, "_record", lambda *_, **__: None)
            execute(worker, TableTaskSpec("test.poison", body, None), TABLE, run_id, "a@h", {})
        request = SimpleNamespace(
            id=run_id,
            name="test.poison",
            task_name="test.poison",
            args=[str(TABLE)],
            kwargs={},
            hostname="a@h",
            time_start=time.time(),
        )
        record_lost(request, f"{ABANDONED}its process died (signal 9)", worker)

    def on_end(sender: Any, task: str, status: str, **_: Any) -> None:
        ended.append(status)

    attempt_ended.connect(on_end)
    try:
        # When it is delivered again after each death (reject_on_worker_lost)
        for _ in range(3):
            died_in_the_body("run-11")
        assert len(calls) == 3
        # Then the next delivery ends the run failed without running the body again
        with pytest.raises(RunAbandoned, match="abandoned 3 times"):
            execute(worker, TableTaskSpec("test.poison", body, None), TABLE, "run-11", "a@h", {})
    finally:
        attempt_ended.disconnect(on_end)
    assert len(calls) == 3
    assert attempts(sql.engine, "run-11") == [RunStatus.FAILED] * 4
    assert ended == [RunStatus.FAILED]  # counted in the metrics
    with sql.sessions() as session:
        (row,) = list_runs(session, task_name="test.poison", status=RunStatus.FAILED, limit=1)
    assert row.error is not None
    assert row.error.startswith("abandoned 3 times")
    # a run that died fewer times still runs
    died_in_the_body("run-12")
    execute(worker, writing(calls), TABLE, "run-12", "a@h", {})
    assert effects_of(sql.engine, "run-12") == 1

"""Faults at the commit of a table task run (allot.work.task.execute, in-process, real
databases): a commit whose reply is lost, a body that commits or rolls back the session allot
gave it. Each run still commits exactly once."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from allot.settings import Settings
from allot.testing.pgproxy import PgProxy
from allot.work.commit_guard import EarlyCommit
from allot.work.context import TableContext
from allot.work.database import WorkSql, open_work_sql
from allot.work.run import execute, transient
from allot.work.spec import TableTaskSpec
from models.schema import TableTaskRun
from models.states import RunStatus
from tests.integration.conftest import TABLE, effect, effects, effects_of


def attempts(engine: Engine, run_id: str) -> list[tuple[str, str | None]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(TableTaskRun.status, TableTaskRun.error)
            .where(TableTaskRun.run_id == run_id)
            .order_by(TableTaskRun.attempt_id)
        )
        return [(row.status, row.error) for row in rows]


def statuses(engine: Engine, run_id: str) -> list[str]:
    return [status for status, _ in attempts(engine, run_id)]


# -- a lost COMMIT reply -----------------------------------------------------------------------


@pytest.fixture
def proxied(database_url: str) -> Iterator[tuple[PgProxy, WorkSql]]:
    """A worker's database whose connections go through a :class:`PgProxy`."""
    url = make_url(database_url)
    with PgProxy((url.host or "127.0.0.1", url.port or 5432)) as proxy:
        through = url.set(host="127.0.0.1", port=proxy.port).update_query_dict(
            {"sslmode": "disable", "connect_timeout": "5"}
        )
        worker = open_work_sql(Settings(database_url=through.render_as_string(hide_password=False)))
        yield proxy, worker
        worker.engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_commit_whose_reply_is_lost_commits_once_and_is_not_run_again(
    sql: WorkSql, bucket: int, proxied: tuple[PgProxy, WorkSql]
) -> None:
    proxy, worker = proxied
    calls: list[int] = []

    def body(ctx: TableContext) -> str:
        calls.append(len(calls))
        if len(calls) == 1:  # the first attempt's commit reaches the server, its reply is lost
            proxy.lose_next_commit_reply()
        with ctx.commit() as session:
            session.execute(insert(effect).values(run_id=ctx.run_id, table_id=ctx.table_id))
        return "done"

    spec = TableTaskSpec("test.lost_reply", body, None)
    # Given a run whose commit landed on the server while the connection dropped before the reply
    with pytest.raises(DBAPIError) as lost:
        execute(worker, spec, TABLE, "run-1", "a@h", {})
    assert proxy.reply_lost.is_set()
    assert proxy.lost_replies == ["COMMIT"]  # the server committed: its answer was dropped
    assert proxy.commits_seen[-1] == "Q"  # psycopg commits with a simple query
    assert transient(lost.value)  # run_message retries it
    # Then the attempt is committed (its end, failed, was not recorded over the commit)
    assert effects_of(sql.engine, "run-1") == 1
    assert statuses(sql.engine, "run-1") == [RunStatus.COMMITTED]
    # When the retry comes, it learns the run committed: not run again, acknowledged
    assert execute(worker, spec, TABLE, "run-1", "a@h", {}) is None
    assert len(calls) == 1
    assert effects_of(sql.engine, "run-1") == 1
    assert statuses(sql.engine, "run-1") == [RunStatus.COMMITTED]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_commit_the_server_never_got_is_run_again_and_commits_once(
    sql: WorkSql, bucket: int, proxied: tuple[PgProxy, WorkSql]
) -> None:
    # the other side of the same fault: the connection drops before the COMMIT is sent
    proxy, worker = proxied
    calls: list[int] = []

    def body(ctx: TableContext) -> None:
        calls.append(len(calls))
        with ctx.commit() as session:
            session.execute(insert(effect).values(run_id=ctx.run_id, table_id=ctx.table_id))
            if len(calls) == 1:
                proxy.close()  # every connection reset: the transaction never commits

    spec = TableTaskSpec("test.lost_before", body, None)
    with pytest.raises(DBAPIError):
        execute(worker, spec, TABLE, "run-2", "a@h", {})
    assert effects_of(sql.engine, "run-2") == 0
    # the retry, through a database that answers again, runs the body and commits once
    execute(sql, spec, TABLE, "run-2", "a@h", {})
    assert len(calls) == 2
    assert effects_of(sql.engine, "run-2") == 1
    # (the first attempt's end is recorded in a transaction of its own, on a new connection)
    assert statuses(sql.engine, "run-2") == [RunStatus.FAILED, RunStatus.COMMITTED]


def test_pgproxy_refuses_a_server_off_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        PgProxy(("192.0.2.1", 5432))


# -- a body that commits (or rolls back) the session allot commits ------------------------------


def writes_then(end: Callable[[Session], None], swallow: bool = False) -> TableTaskSpec:
    def body(ctx: TableContext) -> None:
        with ctx.commit() as session:
            session.execute(insert(effect).values(run_id=ctx.run_id, table_id=ctx.table_id))
            try:
                end(session)
            except EarlyCommit:
                if not swallow:
                    raise
            session.execute(insert(effect).values(run_id=ctx.run_id, table_id=-1))

    return TableTaskSpec("test.early", body, None)


def commit_once(ctx: TableContext) -> None:
    with ctx.commit() as session:
        session.execute(insert(effect).values(run_id=ctx.run_id, table_id=ctx.table_id))


@pytest.mark.parametrize("swallow", [False, True], ids=["raised", "swallowed"])
def test_a_body_that_commits_the_session_itself_commits_nothing(
    sql: WorkSql, bucket: int, swallow: bool
) -> None:
    # a body that catches the refusal and goes on still commits nothing
    with pytest.raises(EarlyCommit, match=r"let allot commit") as refused:
        execute(sql, writes_then(Session.commit, swallow), TABLE, "run-3", "a@h", {})
    assert "session.commit() inside ctx.commit() is refused" in str(refused.value)
    assert effects_of(sql.engine, "run-3") == 0
    assert attempts(sql.engine, "run-3") == [(RunStatus.FAILED, f"EarlyCommit: {refused.value}")]
    # the fixed body, run again, commits once
    execute(sql, TableTaskSpec("test.early", commit_once, None), TABLE, "run-3", "a@h", {})
    assert effects_of(sql.engine, "run-3") == 1
    assert statuses(sql.engine, "run-3") == [RunStatus.FAILED, RunStatus.COMMITTED]


@pytest.mark.parametrize("end", [Session.rollback, Session.close], ids=["rollback", "close"])
def test_a_body_that_ends_the_transaction_itself_commits_nothing(
    sql: WorkSql, bucket: int, end: Callable[[Session], None]
) -> None:
    # its writes after the rollback would be outside the fence: refused at allot's commit
    with pytest.raises(EarlyCommit, match=r"rolled back or closed .* let allot commit"):
        execute(sql, writes_then(end), TABLE, "run-4", "a@h", {})
    assert effects_of(sql.engine, "run-4") == 0
    assert statuses(sql.engine, "run-4") == [RunStatus.FAILED]


def test_a_savepoint_inside_the_commit_is_allowed(sql: WorkSql, bucket: int) -> None:
    def body(ctx: TableContext) -> None:
        with ctx.commit() as session:
            with session.begin_nested():
                session.execute(insert(effect).values(run_id=ctx.run_id, table_id=1))
            nested = session.begin_nested()
            session.execute(insert(effect).values(run_id=ctx.run_id, table_id=2))
            nested.rollback()

    execute(sql, TableTaskSpec("test.savepoint", body, None), TABLE, "run-5", "a@h", {})
    assert effects_of(sql.engine, "run-5") == 1
    assert statuses(sql.engine, "run-5") == [RunStatus.COMMITTED]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_pgproxy_loses_the_reply_to_a_commit_sent_through_the_extended_protocol(
    migrated: Engine, database_url: str, proxied: tuple[PgProxy, WorkSql]
) -> None:
    proxy, _ = proxied
    url = make_url(database_url)
    effects.create_all(migrated)
    connection = psycopg.connect(
        host="127.0.0.1",
        port=proxy.port,
        dbname=url.database,
        user=url.username,
        password=url.password,
        sslmode="disable",
        connect_timeout=5,
    )
    connection.execute("INSERT INTO test_effect (run_id, table_id) VALUES ('ext', 1)")
    proxy.lose_next_commit_reply()
    with pytest.raises(psycopg.OperationalError):
        connection.execute("COMMIT", prepare=True)  # Parse, Bind, Execute, Sync
    connection.close()
    assert proxy.commits_seen == ["E"]
    assert proxy.lost_replies == ["COMMIT"]
    assert effects_of(migrated, "ext") == 1  # the server committed

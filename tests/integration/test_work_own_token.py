"""A run's token is its node's own (allot.work.tokens, allot.work.run.execute) against both
databases: a pool process forked from a worker runs under the (generation, token) of its own
node's lease, never under the pair SQL's fence holds, so a zombie that shares its successor's
node key is refused like any other stale holder, also one left on a ZooKeeper since rebuilt."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest
from sqlalchemy import Engine

from allot.errors import Fenced
from allot.settings import Settings
from allot.work import tokens
from allot.work.context import TableContext
from allot.work.database import WorkSql, open_work_sql
from allot.work.fence import take_fence
from allot.work.run import NotHere, execute
from allot.work.spec import TableTaskSpec
from allot.work.tokens import TokenTable
from models.states import RunStatus
from tests.integration.conftest import TABLE, attempts, effects_of, writing

FORK = multiprocessing.get_context("fork")
KEY = "a@h"
"""The node key both the zombie and its successor run under."""


@pytest.fixture
def worker_tokens() -> Iterator[TokenTable]:
    """This process as a worker's main process: the node's shared table, before any fork."""
    saved = tokens._node_tokens
    tokens._node_tokens = None
    yield tokens.share_node_tokens(100)
    tokens._node_tokens = saved


def successor_fences(sql: WorkSql, bucket: int, token: int, generation: int = 0) -> None:
    """The successor with the same key takes the lease and writes its fence."""
    with sql.sessions.begin() as session:
        assert take_fence(session, bucket, KEY, token, generation=generation)


def run_in_pool_process(engine: Engine, database_url: str, run_id: str) -> str:
    """Run ``run_id`` in a process forked from this one (a pool process), as the worker does:
    the node key, no token given (execute finds the node's table). What happened, in a word."""
    parent, child = FORK.Pipe()

    def pool_process(pipe: Connection) -> None:
        engine.dispose(close=False)  # the parent's connections are not this process's
        own = open_work_sql(Settings(database_url=database_url))
        try:
            execute(own, writing([]), TABLE, run_id, KEY, {})
            pipe.send("committed")
        except NotHere:
            pipe.send("not here")
        except Fenced:
            pipe.send("fenced")
        except BaseException as exc:
            pipe.send(repr(exc))
        finally:
            own.engine.dispose()

    process = FORK.Process(target=pool_process, args=(child,), daemon=True)
    process.start()
    assert parent.poll(60), "the pool process did not answer"
    outcome: str = parent.recv()
    process.join(10)
    return outcome


def test_a_zombie_whose_own_token_is_older_than_its_keys_fence_commits_nothing(
    sql: WorkSql, bucket: int, worker_tokens: TokenTable, database_url: str
) -> None:
    # Given a worker whose lease of the bucket has token 100 (fenced as a@h, 100): it froze
    # past its session, and a successor with the same node key fenced the bucket with 200
    worker_tokens.hold(bucket, 100, generation=0)
    successor_fences(sql, bucket, 200)

    # When one of its pool processes resumes and runs a message of the bucket
    outcome = run_in_pool_process(sql.engine, database_url, "zombie-1")

    # Then it runs under its own token, is sent back, and nothing of it lands
    assert outcome == "not here"
    assert effects_of(sql.engine, "zombie-1") == 0
    assert attempts(sql.engine, "zombie-1") == []


def test_a_pool_process_commits_under_its_own_nodes_token(
    sql: WorkSql, bucket: int, worker_tokens: TokenTable, database_url: str
) -> None:
    # Given the successor's process, whose own lease has the fence's token
    successor_fences(sql, bucket, 200)
    worker_tokens.hold(bucket, 200, generation=0)

    assert run_in_pool_process(sql.engine, database_url, "run-1") == "committed"
    assert effects_of(sql.engine, "run-1") == 1
    assert attempts(sql.engine, "run-1") == [RunStatus.COMMITTED]


def test_a_run_on_a_bucket_its_node_does_not_serve_touches_no_sql(
    sql: WorkSql, bucket: int, worker_tokens: TokenTable
) -> None:
    # Given a pool process whose node holds no lease of the bucket (token 0) and a database
    # it cannot even reach
    unreachable = open_work_sql(Settings(database_url="sqlite:////nonexistent/dir/allot.db"))
    unreachable.tables[TABLE] = sql.find_table(TABLE)
    calls: list[str] = []

    # When a message of the bucket reaches it, then it is sent back without a statement
    with pytest.raises(NotHere) as refused:
        execute(unreachable, writing(calls), TABLE, "run-2", KEY, {})
    assert refused.value.args == (None,)
    assert calls == []
    assert attempts(sql.engine, "run-2") == []
    unreachable.engine.dispose()


def test_a_successor_with_the_same_key_fencing_mid_run_refuses_the_commit(
    sql: WorkSql, bucket: int, worker_tokens: TokenTable
) -> None:
    # Given a run started under the node's own token, the fence's
    worker_tokens.hold(bucket, 100, generation=0)

    def body(ctx: TableContext) -> None:
        # the process freezes here; a successor with its key fences the bucket
        with sql.sessions.begin() as session:
            assert take_fence(session, ctx.bucket_id, KEY, 200)
        with ctx.commit():
            pass

    # Then its commit is refused: the successor's token is larger than its own
    with pytest.raises(Fenced, match="token 100"):
        execute(sql, TableTaskSpec("test.frozen", body, None), TABLE, "run-3", KEY, {})
    assert attempts(sql.engine, "run-3") == [RunStatus.FENCED]


@pytest.mark.parametrize("zombie_token", [30, 500], ids=["same-token", "larger-token"])
def test_a_zombie_of_the_old_zookeeper_sharing_its_key_commits_nothing(
    sql: WorkSql, bucket: int, worker_tokens: TokenTable, database_url: str, zombie_token: int
) -> None:
    # Given a worker whose lease came from ZooKeeper generation 1; it froze, the ZooKeeper
    # was rebuilt (generation 2, tokens small again) and a successor with the same node key
    # fenced the bucket with token 30: the zombie's token is the same, or even larger
    worker_tokens.hold(bucket, zombie_token, generation=1)
    successor_fences(sql, bucket, 30, generation=2)

    # When one of its pool processes resumes and runs a message of the bucket
    outcome = run_in_pool_process(sql.engine, database_url, "zombie-2")

    # Then its own pair is not the fence's: sent back, nothing lands
    assert outcome == "not here"
    assert effects_of(sql.engine, "zombie-2") == 0
    assert attempts(sql.engine, "zombie-2") == []


def test_a_run_commits_under_its_own_nodes_generation_and_token(
    sql: WorkSql, bucket: int, worker_tokens: TokenTable, database_url: str
) -> None:
    # Given a node serving the bucket under (2, 30), the pair its fence names
    successor_fences(sql, bucket, 30, generation=2)
    worker_tokens.hold(bucket, 30, generation=2)
    seen: list[tuple[int, int]] = []

    def body(ctx: TableContext) -> None:
        seen.append((ctx.generation, ctx.token))

    # When a run executes, then its attempt is under that pair, and it commits
    execute(sql, TableTaskSpec("test.pair", body, None), TABLE, "run-4", KEY, {})
    assert seen == [(2, 30)]
    assert attempts(sql.engine, "run-4") == [RunStatus.COMMITTED]
    assert run_in_pool_process(sql.engine, database_url, "run-5") == "committed"


def test_a_fence_of_the_nodes_token_under_another_generation_sends_the_run_back(
    sql: WorkSql, bucket: int, worker_tokens: TokenTable
) -> None:
    # Given a node whose own pair is (1, 100) while the fence names it with (0, 100): the
    # generation is part of its identity of the lease
    worker_tokens.hold(bucket, 100, generation=1)
    calls: list[str] = []

    with pytest.raises(NotHere):
        execute(sql, writing(calls), TABLE, "run-6", KEY, {})
    assert calls == []
    assert attempts(sql.engine, "run-6") == []

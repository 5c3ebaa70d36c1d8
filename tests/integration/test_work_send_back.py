"""A table task message sent back (requeued, retried) or ticked, on a real Redis broker and
real databases: it keeps its workflow, does not spin while SQL is down, gives up after
``ALLOT_RUN_RETRIES``, and a tick the broker refuses to take back is not lost.

The tasks run in-process (``run_message`` and the tick under a pushed Celery request), so the
fault lands at an exact point; what they send is read back from Redis.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, Task
from celery.exceptions import Ignore, Reject, Retry
from redis import Redis
from sqlalchemy import Engine

import allot.work.database as database_module
from allot.errors import RetriesExhausted
from allot.names import parse_table_name
from allot.registry import register_tables
from allot.settings import Settings
from allot.testing.servers import ServerProcess, free_port
from allot.work import TableContext, table_task
from allot.work.database import WorkSql, open_work_sql
from allot.work.fence import take_fence
from allot.work.periodic import TICK_TASK, period_run_id
from allot.work.queues import bucket_queue
from allot.work.routing import route
from models.engine import session_factory

TABLE = "cat.db.orders"
ran: list[str] = []


@table_task(name="it.sendback.periodic", every=10)
def periodic(ctx: TableContext) -> None:
    """A periodic table task of these tests: notes each run it commits."""
    ran.append(ctx.run_id)


@pytest.fixture
def cluster() -> str:
    return f"sb{uuid.uuid4().hex[:10]}"


@pytest.fixture
def app(redis_server: ServerProcess, cluster: str) -> Iterator[Celery]:
    """allot's routing on a Celery app of the test's own, on the session's Redis."""
    url = f"redis://{redis_server.address}/0"
    app = Celery("it-send-back", broker=url, backend=url)
    app.conf.update(task_routes=(route,), allot_cluster=cluster)
    app.finalize()
    yield app
    app.close()


@pytest.fixture
def redis(redis_server: ServerProcess) -> Iterator[Redis]:
    client = Redis.from_url(f"redis://{redis_server.address}/0")
    yield client
    client.close()


@pytest.fixture
def sql(migrated: Engine, database_url: str, cluster: str) -> Iterator[WorkSql]:
    """This process's work database (what ``work_sql()`` returns), the table registered."""
    sessions = session_factory(migrated)
    with sessions.begin() as session:
        register_tables(session, [parse_table_name(TABLE)])
    sql = WorkSql(
        os.getpid(), Settings(database_url=database_url, cluster=cluster), migrated, sessions
    )
    saved = database_module._sql
    database_module._sql = sql
    yield sql
    database_module._sql = saved


def bucket_of(sql: WorkSql) -> int:
    return sql.find_table(parse_table_name(TABLE))[1]


def messages(redis: Redis, queue: str) -> list[dict[str, Any]]:
    """The messages waiting in ``queue`` (any priority): headers, priority and the decoded
    body."""
    found = []
    for key in sorted(redis.keys(f"{queue}*")):  # kombu keeps a list per priority step
        for raw in reversed(redis.lrange(key, 0, -1)):
            message = json.loads(raw)
            args, kwargs, embed = json.loads(base64.b64decode(message["body"]))
            priority = message["properties"].get("priority")
            found.append(
                {"headers": message["headers"], "priority": priority, "args": args}
                | {"kwargs": kwargs, **embed}
            )
    return found


def pushed(task: Task, **request: Any) -> Any:
    defaults: dict[str, Any] = {"id": str(uuid.uuid4()), "args": [TABLE], "kwargs": {}}
    defaults |= {"hostname": "b@h", "called_directly": False}  # as in a worker
    task.push_request(**(defaults | request))
    return task


def test_a_message_sent_back_to_its_owner_keeps_its_link_chain_and_priority(
    app: Celery, sql: WorkSql, redis: Redis, cluster: str
) -> None:
    # Given a message whose bucket's fence names another node, with a link and a chain
    with sql.sessions.begin() as session:
        assert take_fence(session, bucket_of(sql), "a@h", 100)
    task = app.tasks["it.sendback.periodic"]
    link = app.signature("it.sendback.periodic", args=[TABLE]).set(task_id="next")
    after = app.signature("it.sendback.periodic", args=[TABLE]).set(task_id="after")
    pushed(
        task,
        id="run-1",
        callbacks=[dict(link)],
        errbacks=[dict(link)],
        chain=[dict(after)],
        expires="2099-01-01T00:00:00+00:00",
        delivery_info={"priority": 3, "routing_key": "elsewhere", "exchange": ""},
    )
    # When it reaches b@h and is sent back
    try:
        with pytest.raises(Ignore):
            task.run(TABLE)
    finally:
        task.pop_request()
    # Then the message in the bucket's queue carries all the workflow the first one did
    (message,) = messages(redis, bucket_queue(cluster, bucket_of(sql)))
    assert message["headers"]["id"] == "run-1"
    assert [callback["options"]["task_id"] for callback in message["callbacks"]] == ["next"]
    assert [errback["options"]["task_id"] for errback in message["errbacks"]] == ["next"]
    assert [step["options"]["task_id"] for step in message["chain"]] == ["after"]
    assert message["headers"]["expires"] == "2099-01-01T00:00:00+00:00"
    assert message["priority"] == 3
    assert ran == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_run_while_sql_is_down_is_retried_later_not_at_once(
    app: Celery, redis: Redis, cluster: str, database_url: str, migrated: Engine
) -> None:
    # Given a pool process that never looked the table up, its database unreachable
    down = open_work_sql(
        Settings(
            database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none",
            cluster=cluster,
        )
    )
    saved, database_module._sql = database_module._sql, down
    queue = bucket_queue(cluster, 7)
    task = app.tasks["it.sendback.periodic"]
    try:
        # When a message of its bucket's queue runs
        pushed(task, id="run-2", delivery_info={"routing_key": queue, "exchange": ""})
        try:
            with pytest.raises(Retry) as retried:
                task.run(TABLE)
        finally:
            task.pop_request()
        # Then it is sent again to the same queue, to run after a pause (not rejected
        # back to be popped again at once, over and over, for the whole outage)
        assert retried.value.when == 1
        (message,) = messages(redis, queue)
        assert message["headers"]["id"] == "run-2"
        assert message["headers"]["retries"] == 1
        assert message["headers"]["eta"] is not None
        # and after ALLOT_RUN_RETRIES retries, the run fails with the reason
        pushed(task, id="run-2", retries=20, delivery_info={"routing_key": queue})
        try:
            with pytest.raises(RetriesExhausted, match="gave up after 21 transient"):
                task.run(TABLE)
        finally:
            task.pop_request()
        assert len(messages(redis, queue)) == 1
    finally:
        database_module._sql = saved
        down.engine.dispose()


def test_a_tick_the_broker_refuses_returns_to_its_queue(
    app: Celery, sql: WorkSql, cluster: str
) -> None:
    # Given a tick and a broker (and ledger) that refuse every command
    bucket = bucket_of(sql)
    app.conf.update(
        broker_url=f"redis://127.0.0.1:{free_port()}/0",
        broker_transport_options={"max_retries": 0},
        task_publish_retry=False,
    )
    tick = app.tasks[TICK_TASK]
    kwargs = {"task": "it.sendback.periodic", "bucket_id": bucket, "period": 5}
    pushed(tick, id="tick-1", args=[], kwargs=kwargs)
    # When it fans out: Then it is rejected back to the queue it came from (not lost)
    try:
        with pytest.raises(Reject) as rejected:
            tick.run(**kwargs)
    finally:
        tick.pop_request()
    assert rejected.value.requeue is True
    assert ran == []


def test_a_period_ticked_by_two_owners_around_a_handoff_sends_each_table_once(
    app: Celery, sql: WorkSql, redis: Redis, cluster: str
) -> None:
    # Given a period ticked on a@h, the bucket's owner
    bucket = bucket_of(sql)
    table_id = sql.find_table(parse_table_name(TABLE))[0]
    tick = app.tasks[TICK_TASK]
    kwargs = {"task": "it.sendback.periodic", "bucket_id": bucket, "period": 9}
    pushed(tick, id="tick:a", args=[], kwargs=kwargs, hostname="a@h")
    try:
        first = tick.run(**kwargs)
    finally:
        tick.pop_request()
    # When the bucket moves to b@h and b@h ticks the same period (its own tick, a clock
    # behind a@h's), and then the next period while the first run has not finished
    pushed(tick, id="tick:b", args=[], kwargs=kwargs, hostname="b@h")
    try:
        again = tick.run(**kwargs)
        later = tick.run(**(kwargs | {"period": 10}))
    finally:
        tick.pop_request()
    # Then the table's run of the period was sent once, as the table task itself with the
    # table as its argument and the period's run id as its task id, and the next period skips
    sent = messages(redis, bucket_queue(cluster, bucket))
    assert [(m["headers"]["task"], m["headers"]["id"], m["args"]) for m in sent] == [
        ("it.sendback.periodic", period_run_id("it.sendback.periodic", table_id, 9), [TABLE])
    ]
    assert (first["sent"], again["sent"], later["sent"], later["skipped"]) == (1, 0, 0, 1)

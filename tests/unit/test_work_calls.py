"""Pure parts of table work: queue names and checking a call before anything is sent."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from celery import Celery, Task
from celery.exceptions import Ignore, Reject
from hypothesis import given
from hypothesis import strategies as st
from psycopg import errors as pg_errors
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

from allot.errors import InvalidInput
from allot.work.context import TableContext
from allot.work.queues import bucket_queue, queue_bucket
from allot.work.run import requeue, transient
from allot.work.spec import TableTaskSpec


@given(
    cluster=st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
    bucket=st.integers(min_value=1, max_value=1_000_000),
)
def test_a_bucket_queue_name_reads_back_as_its_bucket(cluster: str, bucket: int) -> None:
    assert queue_bucket(cluster, bucket_queue(cluster, bucket)) == bucket


@pytest.mark.parametrize(
    "queue",
    ["celery", "allot.other.bucket.3", "allot.default.bucket.x", "allot.default.bucket.3.dlq"],
)
def test_other_queues_are_no_bucket_of_the_cluster(queue: str) -> None:
    assert queue_bucket("default", queue) is None


def body(ctx: TableContext, target_mb: int = 128, *, dry_run: bool = False) -> None:
    """A table task body taking two keyword arguments."""


SPEC = TableTaskSpec("t.compact", body, None)


def test_a_call_naming_a_table_and_known_arguments_passes() -> None:
    assert SPEC.check_call(["c.d.t"], {"target_mb": 64, "dry_run": True}) == "c.d.t"
    assert SPEC.check_call(("c.d.t",), {}) == "c.d.t"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ([], {}, "takes the table name as its one positional argument"),
        (["c.d.t", 5], {}, "takes the table name as its one positional argument"),
        ([7], {}, "takes the table name as its one positional argument"),
        (["c.d.t"], {"size": 1}, "unexpected keyword argument 'size'"),
        (["c.d.t"], {"target_mb": object()}, "keyword arguments must be JSON"),
    ],
)
def test_a_call_that_does_not_fit_is_refused_with_one_line(
    args: list[Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        SPEC.check_call(args, kwargs)
    assert "\n" not in str(caught.value)


def _app(refuse: Exception | None = None) -> tuple[Celery, Task, list[dict[str, Any]]]:
    """A Celery app on an in-memory broker whose sends are recorded (or refused), and a task
    of it."""
    app = Celery("unit-requeue", broker="memory://", backend="cache+memory://")
    sent: list[dict[str, Any]] = []

    def send_task(name: str, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        if refuse is not None:
            raise refuse
        sent.append({"name": name, "args": args, "kwargs": kwargs, **options})

    app.send_task = send_task

    @app.task(bind=True, name="t.compact", shared=False)
    def compact(self: Task, table: str) -> None:
        """A task being run."""

    return app, compact, sent


def test_a_message_sent_back_keeps_its_whole_request_and_this_delivery_is_ignored() -> None:
    _, task, sent = _app()
    link: dict[str, Any] = {
        "task": "t.next",
        "args": [],
        "kwargs": {},
        "options": {},
        "subtask_type": None,
    }
    task.push_request(
        id="run-1",
        args=("c.d.t",),
        kwargs={},
        callbacks=[link],
        errbacks=[link],
        chain=[link],
        expires="2030-01-01T00:00:00+00:00",
        delivery_info={"priority": 7, "routing_key": "allot.c.bucket.9", "exchange": ""},
        retries=2,
    )
    try:
        with pytest.raises(Ignore):
            requeue(task, "fenced", "allot.c.bucket.3")
    finally:
        task.pop_request()
    (message,) = sent
    assert message["task_id"] == "run-1"
    assert message["args"] == ("c.d.t",)
    assert message["queue"] == "allot.c.bucket.3"  # its bucket's, not the one it came from
    assert message["link"] == [link]
    assert message["link_error"] == [link]
    assert message["chain"] == [link]
    assert message["expires"] == "2030-01-01T00:00:00+00:00"
    assert message["priority"] == 7
    assert message["retries"] == 2


def test_a_message_the_broker_would_not_take_back_is_rejected_to_its_queue() -> None:
    _, task, _ = _app(refuse=ConnectionError("broker gone"))
    task.push_request(id="run-1", args=("c.d.t",), kwargs={})
    try:
        with pytest.raises(Reject) as caught:
            requeue(task, "fenced", "allot.c.bucket.3")
    finally:
        task.pop_request()
    assert caught.value.requeue is True


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (OperationalError("SELECT 1", {}, Exception("server closed the connection")), True),
        (InterfaceError("SELECT 1", {}, Exception("connection already closed")), True),
        (IntegrityError("INSERT", {}, Exception("duplicate key")), False),
        (ProgrammingError("SELEC", {}, Exception("syntax error")), False),
        (OperationalError("UPDATE", {}, sqlite3.OperationalError("database is locked")), True),
        (OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: x")), False),
        (OperationalError("SELEC", {}, sqlite3.OperationalError('near "SELEC": syntax')), False),
        # what the run caused on PostgreSQL: it would cause it again
        (OperationalError("SELECT", {}, pg_errors.QueryCanceled("statement timeout")), False),
        (OperationalError("UPDATE", {}, pg_errors.LockNotAvailable("lock timeout")), False),
        (
            OperationalError(
                "COMMIT",
                {},
                pg_errors.IdleInTransactionSessionTimeout("idle-in-transaction timeout"),
                connection_invalidated=True,
            ),
            False,
        ),
        (OperationalError("SELECT", {}, pg_errors.AdminShutdown("shutting down")), True),
    ],
)
def test_only_database_errors_that_may_pass_are_retried(error: DBAPIError, retried: bool) -> None:
    assert transient(error) is retried

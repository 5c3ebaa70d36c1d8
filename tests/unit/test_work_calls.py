"""Pure parts of table work: queue names and checking a call before anything is sent."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from celery.exceptions import Ignore, Reject
from hypothesis import given
from hypothesis import strategies as st
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


class _Request:
    args = ("c.d.t",)
    kwargs: dict[str, Any] = {}
    id = "run-1"


class _Task:
    """Stands in for a running table task whose ``apply_async`` fails or succeeds."""

    name = "t.compact"
    request = _Request()

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.sent: list[dict[str, Any]] = []

    def apply_async(self, **options: Any) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append(options)


def test_a_message_sent_back_keeps_its_task_id_and_this_delivery_is_ignored() -> None:
    task = _Task(None)
    with pytest.raises(Ignore):
        requeue(task, "fenced")
    assert task.sent == [{"args": ("c.d.t",), "kwargs": {}, "task_id": "run-1"}]


def test_a_message_the_broker_would_not_take_back_is_rejected_to_its_queue() -> None:
    task = _Task(ConnectionError("broker gone"))
    with pytest.raises(Reject) as caught:
        requeue(task, "fenced")
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
    ],
)
def test_only_database_errors_that_may_pass_are_retried(error: DBAPIError, retried: bool) -> None:
    assert transient(error) is retried

"""Table work seen from outside the workers: what ``allot work send`` checks before it sends a
table task, and what ``allot work runs`` reads from the run history.

A call is checked completely before anything is sent (:func:`prepare_call`): the task must be
a table task of the modules named by ``ALLOT_TASK_MODULES`` (imported as the workers import
them, :func:`load_table_tasks`), the call must fit its body, and the table must be registered.
The result says which bucket queue the call goes to, the queue the router of allot's Celery
app (:func:`allot.work.routing.route`) would choose. Nothing here sends anything or opens a
connection: the callers pass a :class:`~sqlalchemy.orm.Session` in.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from allot import registry
from allot.errors import ConfigurationError, InvalidInput, NotFound
from allot.names import TableName, parse_table_name
from allot.work import bucket_queue, table_tasks
from allot.work.runs import RunRow
from allot.work.spec import TableTaskSpec
from models.schema import TableIdentifier, TableTaskRun
from models.states import RunStatus

_NAME_COLUMNS = (TableIdentifier.catalog_name, TableIdentifier.db_name, TableIdentifier.table_name)


def load_table_tasks(module_names: Sequence[str]) -> dict[str, TableTaskSpec]:
    """Import ``module_names`` (``ALLOT_TASK_MODULES``) with the working directory on the path,
    as a Celery worker imports them, and return every table task now known, by name.

    Raises:
        ConfigurationError: a module cannot be imported (the message names it and says why).
    """
    from celery.utils.imports import cwd_in_path

    for name in module_names:
        try:
            with cwd_in_path():
                importlib.import_module(name)
        except Exception as exc:  # user code: any error while importing it
            raise ConfigurationError(
                f"cannot import {name} (from ALLOT_TASK_MODULES): {type(exc).__name__}: {exc}"
            ) from None
    return table_tasks()


def find_table_task(
    specs: Mapping[str, TableTaskSpec], name: str, module_names: Sequence[str]
) -> TableTaskSpec:
    """The table task called ``name``.

    Raises:
        NotFound: no table task has that name; the message lists the known ones.
    """
    spec = specs.get(name)
    if spec is not None:
        return spec
    if not module_names:
        raise NotFound(
            f"no table task named {name!r}: ALLOT_TASK_MODULES is empty, so no table tasks "
            "are known (set it to the modules the workers load)"
        )
    modules = ",".join(module_names)
    if not specs:
        raise NotFound(
            f"no table task named {name!r}: ALLOT_TASK_MODULES={modules} defines no table tasks"
        )
    raise NotFound(
        f"no table task named {name!r}; the table tasks of ALLOT_TASK_MODULES={modules} are: "
        + ", ".join(sorted(specs))
    )


def parse_kwargs(text: str | None) -> dict[str, Any]:
    """The keyword arguments of a call, given as a JSON object (None: no arguments).

    Raises:
        InvalidInput: ``text`` is not JSON, or not a JSON object.
    """
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--kwargs is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput(
            f'--kwargs must be a JSON object such as {{"target_mb": 64}}, '
            f"got {type(value).__name__} {text.strip()[:60]}"
        )
    return value


@dataclass(frozen=True)
class TableCall:
    """A checked call of a table task, and the bucket queue it goes to."""

    task: str
    table: TableName
    kwargs: dict[str, Any]
    bucket_id: int
    queue: str


def table_bucket(session: Session, table: TableName) -> int:
    """The bucket a registered table was given.

    Raises:
        NotFound: the table is not registered.
    """
    rows = registry.mapping(session, table=table)
    if not rows:
        raise NotFound(f"table {table} is not registered (allot tables register {table})")
    return int(rows[0].bucket_id)


def prepare_call(
    session: Session, spec: TableTaskSpec, table: str, kwargs: dict[str, Any], cluster: str
) -> TableCall:
    """Check a call of ``spec`` on ``table`` with ``kwargs`` and find its bucket queue.

    Raises:
        InvalidInput: the call does not fit the task's body, or the table name is invalid.
        NotFound: the table is not registered.
    """
    name = parse_table_name(spec.check_call([table], kwargs))
    bucket_id = table_bucket(session, name)
    return TableCall(spec.name, name, kwargs, bucket_id, bucket_queue(cluster, bucket_id))


def parse_run_status(text: str) -> RunStatus:
    """The run status ``text`` names.

    Raises:
        InvalidInput: it names none; the message lists the valid ones.
    """
    try:
        return RunStatus(text)
    except ValueError:
        valid = ", ".join(status.value for status in RunStatus)
        raise InvalidInput(f"unknown run status {text!r}: use one of {valid}") from None


def list_runs(
    session: Session,
    *,
    table: TableName | None = None,
    node_key: str | None = None,
    status: RunStatus | None = None,
    task_name: str | None = None,
    limit: int | None = 50,
) -> list[RunRow]:
    """The attempts recorded in ``table_task_run``, newest first, filtered by table, node,
    status and task name (each optional); at most ``limit`` (None: all).

    Each filter reads the newest rows of its own index and stops after ``limit`` (migration
    0004): ``(started_at, attempt_id)`` with no filter, ``(table_id, started_at)`` for a
    table (its id is looked up first, so the planner sees it), ``(node_key, started_at)``,
    ``(status, started_at)``, ``(task_name, started_at)``. EXPLAIN on PostgreSQL with 2 M
    attempts: an index scan backward of that index, 0.1-0.2 ms for 50 rows; EXPLAIN QUERY
    PLAN on SQLite: the same indexes, no temporary B-tree for the order.

    Raises:
        NotFound: ``table`` is given and not registered.
    """
    query = (
        select(TableTaskRun, *_NAME_COLUMNS)
        .join(TableIdentifier, TableIdentifier.table_id == TableTaskRun.table_id)
        .order_by(TableTaskRun.started_at.desc(), TableTaskRun.attempt_id.desc())
    )
    if table is not None:
        table_id = session.execute(
            select(TableIdentifier.table_id).where(tuple_(*_NAME_COLUMNS) == tuple_(*table))
        ).scalar_one_or_none()
        if table_id is None:
            table_bucket(session, table)  # raises NotFound, saying how to register it
        query = query.where(TableTaskRun.table_id == table_id)
    if node_key is not None:
        query = query.where(TableTaskRun.node_key == node_key)
    if status is not None:
        query = query.where(TableTaskRun.status == status)
    if task_name is not None:
        query = query.where(TableTaskRun.task_name == task_name)
    if limit is not None:
        query = query.limit(limit)
    rows = session.execute(query).all()
    return [
        RunRow(
            run.attempt_id,
            run.run_id,
            run.task_name,
            f"{catalog}.{database}.{name}",
            run.bucket_id,
            run.node_key,
            run.token,
            run.status,
            run.started_at,
            run.finished_at,
            run.error,
        )
        for run, catalog, database, name in rows
    ]

"""Table tasks: the decorator, the context a task body gets, the router, and one run.

A table task is a Celery task whose first argument is a registered table
(``catalog.database.table``)::

    from allot.work import TableContext, table_task

    @table_task(name="demo.compact")
    def compact(ctx: TableContext, target_mb: int = 128) -> dict[str, int]:
        ...                                   # read, compute: anything
        with ctx.commit() as session:         # the writes that must land exactly once
            session.execute(...)
        return {"files": 3}

    compact.delay("hive.sales.orders", target_mb=256)

:func:`route` (Celery's ``task_routes``) sends every call to the queue of the table's bucket,
``allot.{cluster}.bucket.{id}``, whoever sends it: ``delay``, ``apply_async``, ``send_task``
(Flower's async-apply), ``allot work send``. An unregistered table or arguments the body
does not take raise there, in the sender, and nothing is sent.

In the worker, :func:`execute` runs one attempt: it reads the bucket's fence
(:mod:`allot.work.runs`); a message that reached a node the fence does not name goes back to
the bucket's queue untouched. It records the attempt (a run that already committed is not run
again), calls the body, and commits: :meth:`TableContext.commit` holds the fence row and marks
the attempt committed in the transaction of the body's writes; a body that never calls it gets
an empty commit at its end, so every successful run is fenced and recorded once. A commit
refused by the fence (:class:`~allot.errors.Fenced`) writes nothing and puts the message back
in the bucket's queue, where the bucket's new owner takes it. Why that is enough, under every
interleaving of a move with a running task, is argued in :mod:`allot.work`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Ignore, Reject
from celery.utils.dispatch import Signal
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from allot.errors import AllotError, ConfigurationError, Fenced, InvalidInput
from allot.names import TableName, parse_table_name
from allot.settings import Settings
from allot.work.commit_guard import OwnCommit
from allot.work.queues import bucket_queue
from allot.work.runs import (
    AlreadyCommitted,
    Attempt,
    FenceRow,
    finish_attempt,
    hold_fence,
    mark_committed,
    read_fence,
    start_attempt,
)
from allot.work.sql import WorkSql, work_sql
from models.states import RunStatus

log = logging.getLogger(__name__)

TableBody = Callable[..., Any]


@dataclass(frozen=True)
class TableTaskSpec:
    """A registered table task: its name, body and period (seconds, or None)."""

    name: str
    body: TableBody
    every: float | None

    def check_call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        """The table a call names, after checking the call fits the body.

        Raises:
            InvalidInput: no table, extra positional arguments, keyword arguments the body does
                not take, or values that are not JSON.
        """
        if len(args) != 1 or not isinstance(args[0], str):
            raise InvalidInput(
                f"table task {self.name} takes the table name as its one positional argument "
                f"(catalog.database.table), got {list(args)!r}"
            )
        try:
            inspect.signature(self.body).bind(None, **kwargs)
        except TypeError as exc:
            raise InvalidInput(f"table task {self.name}: bad keyword arguments: {exc}") from None
        try:
            json.dumps(dict(kwargs))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"table task {self.name}: keyword arguments must be JSON: {exc}"
            ) from None
        return args[0]


_specs: dict[str, TableTaskSpec] = {}


def table_tasks() -> dict[str, TableTaskSpec]:
    """Every table task this process has imported, by name."""
    return dict(_specs)


class TableTask(Task):  # type: ignore[misc]
    """The Celery task class of table tasks: acknowledged late (a message comes back when the
    worker dies mid-run) and rejected back to its queue when its pool process is killed."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    allot_spec: TableTaskSpec

    def apply_async(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's ``apply_async``, refused (nothing sent) when the task is not bound to
        allot's Celery app, whose router sends it to its bucket's queue.

        Raises:
            ConfigurationError: allot's app is not loaded in this process.
        """
        if self.app.conf.get("allot_cluster") is None:
            raise ConfigurationError(
                f"table task {self.name} is not bound to allot's Celery app: "
                "import tasks (allot's app) before sending table tasks"
            )
        return super().apply_async(*args, **kwargs)


def table_task(
    name: str | None = None, *, every: float | None = None, **options: Any
) -> Callable[[TableBody], TableTask]:
    """Declare ``fn(ctx: TableContext, **kwargs)`` a table task named ``name`` (default:
    ``module.function``); ``every=S`` also runs it once per ``S`` seconds for every registered
    table, on its owner. ``options`` are Celery task options (``time_limit``...).

    Raises:
        InvalidInput: ``every`` is not a positive number.
    """
    if every is not None and not every > 0:
        raise InvalidInput(f"table task {name}: every must be a positive number of seconds")

    def decorate(fn: TableBody) -> TableTask:
        task_name = name or f"{fn.__module__}.{fn.__name__}"
        spec = TableTaskSpec(task_name, fn, every)

        def run(self: TableTask, table: str, **kwargs: Any) -> Any:
            return run_message(self, table, kwargs)

        run.__name__, run.__doc__, run.__module__ = fn.__name__, fn.__doc__, fn.__module__
        _specs[task_name] = spec
        task: TableTask = shared_task(
            name=task_name, bind=True, base=TableTask, allot_spec=spec, **options
        )(run)
        return task

    return decorate


# -- routing ----------------------------------------------------------------------------------


def route(
    name: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: Any, task: Any = None,
    **_: Any,
) -> dict[str, str] | None:  # fmt: skip
    """Celery router: the queue of the table's bucket for a table task, None for anything else.

    Raises (in the sender; nothing is sent):
        InvalidInput: the call does not fit the task (:meth:`TableTaskSpec.check_call`), or the
            table name is invalid.
        NotFound: the table is not registered.
    """
    spec = _specs.get(name)
    if spec is None:
        return None
    table = parse_table_name(spec.check_call(args or (), kwargs or {}))
    sql = work_sql()
    bucket_id = sql.find_table(table)[1]
    return {"queue": bucket_queue(sql.settings.cluster, bucket_id)}


# -- one run ----------------------------------------------------------------------------------


class NotHere(Exception):
    """The message reached a node the bucket's fence does not name (internal)."""


class TableContext:
    """What a table task's body gets: the table, its bucket, this node and its fence token.

    ``token`` is the fencing token under which this node runs the bucket's work: the ``czxid``
    of its lease znode, so a later holder of the bucket always has a larger one.
    """

    def __init__(
        self,
        table: TableName,
        table_id: int,
        attempt: Attempt,
        attempt_id: int,
        sessions: sessionmaker[Session],
    ) -> None:
        self.table = str(table)
        self.table_name = table
        self.table_id = table_id
        self.bucket_id = attempt.bucket_id
        self.node_key = attempt.node_key
        self.token = attempt.token
        self.run_id = attempt.run_id
        self.attempt_id = attempt_id
        self._sessions = sessions
        self.committed = False
        self.fenced = False
        """Whether a commit was refused: the run is fenced whatever the body raises next."""

    def owns(self) -> bool:
        """Whether the bucket's fence still names this node and token (a hint for long work:
        a commit checks again, atomically)."""
        with self._sessions() as session:
            fence = read_fence(session, self.bucket_id)
        return fence == FenceRow(self.bucket_id, self.node_key, self.token)

    @contextlib.contextmanager
    def commit(self) -> Iterator[Session]:
        """A session whose transaction commits the body's writes only while the bucket's fence
        names this node and token, and marks this run committed in the same transaction.

        Raises:
            Fenced: the bucket's work moved: nothing written (allot re-queues the message).
            AllotError: ``commit()`` was already used in this run.
            EarlyCommit: the body committed or rolled back the session itself (nothing
                written; :mod:`allot.work.commit_guard`).
        """
        if self.committed:
            raise AllotError(f"table task run {self.run_id}: commit() is used once per run")
        with self._sessions() as session, OwnCommit(session, self.run_id) as own:
            try:
                hold_fence(session, self.bucket_id, self.node_key, self.token)
            except Fenced:
                self.fenced = True
                raise
            yield session
            own.check()  # the body did not end the transaction itself
            mark_committed(session, self.attempt_id)
            own.commit()
        self.committed = True


def node_key_of(settings: Settings, hostname: str | None) -> str:
    """The node key of the worker running a task (``ALLOT_NODE_KEY`` or its hostname)."""
    return settings.node_key or hostname or "celery@localhost"


def execute(
    sql: WorkSql, spec: TableTaskSpec, table: TableName, run_id: str, node_key: str,
    kwargs: Mapping[str, Any],
) -> Any:  # fmt: skip
    """One attempt of run ``run_id`` of ``spec`` on ``table`` by ``node_key``.

    Returns the body's result, or None when the run had already committed (nothing run).

    Raises:
        NotHere: the bucket's fence names another node (nothing run, nothing recorded).
        Fenced: the commit was refused (the attempt is recorded ``fenced``).
        Exception: what the body raised (the attempt is recorded ``failed``).
    """
    table_id, bucket_id = sql.find_table(table)
    with sql.sessions.begin() as session:
        fence = read_fence(session, bucket_id, for_write=True)
        if fence is None or fence.node_key != node_key:
            raise NotHere(fence)
        attempt = Attempt(run_id, spec.name, table_id, bucket_id, node_key, fence.token)
        attempt_id = start_attempt(session, attempt)
    if attempt_id is None:
        log.info("run %s of %s on %s already committed: not run again", run_id, spec.name, table)
        return None
    ctx = TableContext(table, table_id, attempt, attempt_id, sql.sessions)
    try:
        result = spec.body(ctx, **kwargs)
        if not ctx.committed:
            with ctx.commit():
                pass
        encoded = json.dumps(result)
    except Fenced as exc:
        _finish(sql, spec.name, attempt_id, RunStatus.FENCED, error=str(exc))
        raise
    except AlreadyCommitted:
        _finish(
            sql,
            spec.name,
            attempt_id,
            RunStatus.FAILED,
            error="another attempt of the run committed",
        )
        return None
    except BaseException as exc:
        if ctx.fenced:  # the body wrapped the refusal in an error of its own
            _finish(sql, spec.name, attempt_id, RunStatus.FENCED, error=str(exc))
            raise Fenced(f"{type(exc).__name__}: {exc}") from exc
        status = RunStatus.COMMITTED if ctx.committed else RunStatus.FAILED
        _finish(sql, spec.name, attempt_id, status, error=f"{type(exc).__name__}: {exc}")
        raise
    _finish(sql, spec.name, attempt_id, RunStatus.COMMITTED, result=encoded)
    return result


attempt_ended = Signal(name="allot.work.attempt_ended")
"""Sent (``task=``, ``status=``) in the process that ran a table task attempt when it ended
committed, fenced or failed: the node's metrics count them (:mod:`tasks.app`)."""


def _finish(sql: WorkSql, task: str, attempt_id: int, status: RunStatus, **details: Any) -> None:
    """Record how an attempt ended, in the history and to :data:`attempt_ended`; the history
    is never a reason to fail a run. An attempt that committed stays committed: one whose
    commit reply was lost ends in an error, and its retry finds the commit and runs nothing."""
    recorded = status
    try:
        with sql.sessions.begin() as session:
            recorded = finish_attempt(session, attempt_id, status, **details)
    except DBAPIError:
        log.warning("could not record the end of attempt %d (%s)", attempt_id, status)
    if recorded != status:
        log.warning(
            "attempt %d committed before it ended %s: it stays committed", attempt_id, status
        )
    attempt_ended.send(sender=task, task=task, status=recorded)


def requeue(task: Task, reason: str) -> None:
    """Send the message being run back to its bucket's queue (same task id) and end this
    delivery without a result: the bucket's owner runs it. When the broker refuses the new
    message, this delivery is rejected back to the queue it came from instead (never lost)."""
    request = task.request
    try:
        task.apply_async(args=request.args, kwargs=request.kwargs, task_id=request.id)
    except Exception as exc:  # kombu's OperationalError after its retries, or the router's
        log.warning(
            "%s[%s] could not be sent back through the router (%s): returned to its queue",
            task.name, request.id, exc,
        )  # fmt: skip
        raise Reject(exc, requeue=True) from None
    log.info("%s[%s] sent back to its bucket's queue: %s", task.name, request.id, reason)
    raise Ignore()


def run_message(task: TableTask, table: str, kwargs: Mapping[str, Any]) -> Any:
    """The body of every table task's Celery task: :func:`execute` for this delivery."""
    sql = work_sql()
    node_key = node_key_of(sql.settings, task.request.hostname)
    name = parse_table_name(table)
    try:
        return execute(sql, task.allot_spec, name, task.request.id, node_key, kwargs)
    except NotHere as exc:
        fence = exc.args[0]
        holder = "no node yet" if fence is None else fence.node_key
        requeue(task, f"the bucket's fence names {holder}, not {node_key}")
    except Fenced as exc:
        log.warning("%s[%s] on %s: %s", task.name, task.request.id, table, exc)
        requeue(task, "its commit was fenced")
    except DBAPIError as exc:
        if not transient(exc):
            # the SQL itself is wrong (the body's, or a table dropped since it was looked
            # up): the run fails with the database's message, it is not retried
            sql.tables.pop(name, None)
            raise
        countdown = min(2 ** min(task.request.retries, 6), 60)  # 1, 2, 4 ... 60 s
        try:
            raise task.retry(exc=exc, countdown=countdown, max_retries=None) from None
        except Reject as refused:  # the broker refused the retry: keep this delivery instead
            raise Reject(refused.reason, requeue=True) from None
    return None  # unreachable: requeue raises Ignore


def transient(exc: DBAPIError) -> bool:
    """Whether a database error may pass by itself (a lost connection, a locked database):
    such a run is retried, backing off from 1 to 60 s, until the database answers. SQLite
    reports a missing table or a syntax error as an ``OperationalError`` too: there only a
    locked or busy database passes."""
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    if type(exc.orig).__module__.startswith("sqlite3"):
        message = str(exc.orig).lower()
        return any(word in message for word in ("locked", "busy", "disk i/o"))
    return True

"""One run of a table task message in the worker: execute, send back, retry.

:func:`run_message` is the body of every table task's Celery task. :func:`execute` runs one
attempt under the (generation, token) of the lease its own node holds (:mod:`allot.work.tokens`);
a message that reached a node that does not serve the bucket goes back to the bucket's queue
untouched, without reading SQL (:func:`requeue`). Then one read-only statement
(:func:`~allot.work.runs.run_state`) says whether the fence still names this node with that
pair (if not, the message goes back too), whether the run already committed (it is not run
again) and how often its attempts died with their process (at ``ALLOT_MAX_ABANDONED`` it is not
run again). The body runs and commits: :meth:`TableContext.commit
<allot.work.context.TableContext.commit>` holds the fence row and inserts the attempt
``committed`` in the transaction of the body's writes; a body that never calls it gets an
empty commit at its end, so every successful run is fenced and recorded once, in one write
transaction. An attempt that fails or is fenced is recorded after it
(:func:`~allot.work.runs.insert_ended`). A commit refused by the fence
(:class:`~allot.errors.Fenced`) writes nothing and puts the message back in the bucket's
queue, where the bucket's new owner takes it. A database error that may pass by itself
(:func:`transient`) is retried, backing off from 1 to 60 s, at most ``ALLOT_RUN_RETRIES``
times (:func:`retry_later`); any other fails the run.

Why that is enough, under every interleaving of a move with a running task, is argued in
``docs/table-work.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from celery import Task, states
from celery.exceptions import Ignore, Reject
from celery.result import AsyncResult
from celery.utils.dispatch import Signal
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from allot.errors import Fenced, RetriesExhausted, RunAbandoned
from allot.names import TableName, parse_table_name
from allot.settings import Settings
from allot.work.context import TableContext
from allot.work.database import WorkSql, work_sql
from allot.work.load import LoadMeter, node_load
from allot.work.queues import bucket_queue
from allot.work.runs import AlreadyCommitted, Attempt, insert_ended, run_state
from allot.work.spec import TableTaskSpec
from allot.work.tokens import OwnLease, TokenSource, node_tokens
from models.base import utcnow
from models.states import RunStatus

log = logging.getLogger(__name__)


class NotHere(Exception):
    """The message reached a node that does not serve its bucket (internal): its argument is
    the bucket's fence (None: no fence, or not read because this node holds no lease of the
    bucket)."""


def node_key_of(settings: Settings, hostname: str | None) -> str:
    """The node key of the worker running a task (``ALLOT_NODE_KEY`` or its hostname)."""
    return settings.node_key or hostname or "celery@localhost"


def execute(
    sql: WorkSql,
    spec: TableTaskSpec,
    table: TableName,
    run_id: str,
    node_key: str,
    kwargs: Mapping[str, Any],
    tokens: TokenSource | None = None,
    on_committed: Callable[[], None] | None = None,
    load: LoadMeter | None = None,
) -> Any:
    """One attempt of run ``run_id`` of ``spec`` on ``table`` by ``node_key``, under the
    (generation, token) of the lease this node holds (``tokens``, default this worker's shared
    table, :mod:`allot.work.tokens`), never a pair read back from SQL: a frozen process
    sharing its successor's node key finds the fence naming a larger pair and is sent back.
    The attempt records that pair and its commit holds the fence under it. Only outside a
    worker (no table: a test calling this in-process) is the fence's own pair used.

    When the body ran, whatever its end, its seconds (the body and its commit) are added to
    the bucket's load (``load``, default this worker's shared meter, :mod:`allot.work.load`;
    none outside a worker): in memory, never in SQL.

    A successful run costs one read-only statement before the body (:func:`run_state`: the
    fence, whether the run committed, how often it was abandoned) and one write transaction
    (:meth:`TableContext.commit`); a failed or fenced attempt is recorded after it, in a
    transaction of its own.

    Returns the body's result, or None when the run had already committed (nothing run;
    ``on_committed()`` is called first, and may raise to end the delivery otherwise).

    Raises:
        NotHere: this node serves no lease of the bucket (nothing run, nothing recorded, no
            SQL read), or the bucket's fence names another node, generation or token.
        Fenced: the commit was refused (the attempt is recorded ``fenced``).
        RunAbandoned: ``ALLOT_MAX_ABANDONED`` attempts of the run died with their process
            (this attempt is recorded ``failed``, the body not run).
        Exception: what the body raised (the attempt is recorded ``failed``).
    """
    table_id, bucket_id = sql.find_table(table)
    tokens = tokens if tokens is not None else node_tokens()
    own = None if tokens is None else tokens.lease(bucket_id)
    if tokens is not None and own is None:
        raise NotHere(None)
    started_at = utcnow()
    with sql.sessions() as session:
        state = run_state(session, bucket_id, run_id)
    fence = state.fence
    if fence is None or fence.node_key != node_key:
        raise NotHere(fence)
    if own is None:  # outside a worker only: the fence's own pair
        own = OwnLease(fence.generation, fence.token)
    elif own != (fence.generation, fence.token):
        raise NotHere(fence)
    attempt = Attempt(
        run_id,
        spec.name,
        table_id,
        bucket_id,
        node_key,
        own.token,
        started_at,
        generation=own.generation,
    )
    if state.committed:
        log.info("run %s of %s on %s already committed: not run again", run_id, spec.name, table)
        if on_committed is not None:
            on_committed()
        return None
    limit = sql.settings.max_abandoned
    if state.abandoned >= limit:
        _record(
            sql,
            attempt,
            RunStatus.FAILED,
            f"abandoned {state.abandoned} times (ALLOT_MAX_ABANDONED={limit}): not run again",
        )
        raise RunAbandoned(
            f"run {run_id} of {spec.name} on {table} abandoned {state.abandoned} times by a "
            f"dying process (ALLOT_MAX_ABANDONED={limit}): not run again"
        )
    ctx = TableContext(table, table_id, attempt, sql.sessions)
    meter = load if load is not None else node_load()
    try:
        began = time.monotonic()
        try:
            result = spec.body(ctx, **kwargs)
            if not ctx.committed:
                with ctx.commit():
                    pass
        finally:  # the body ran, whatever its end: its seconds are the bucket's load
            if meter is not None:
                meter.add(bucket_id, time.monotonic() - began)
    except Fenced as exc:
        _record(sql, attempt, RunStatus.FENCED, str(exc))
        raise
    except AlreadyCommitted:
        _record(sql, attempt, RunStatus.FAILED, "another attempt of the run committed")
        if on_committed is not None:
            on_committed()
        return None
    except BaseException as exc:
        if ctx.fenced:  # the body wrapped the refusal in an error of its own
            _record(sql, attempt, RunStatus.FENCED, str(exc))
            raise Fenced(f"{type(exc).__name__}: {exc}") from exc
        if ctx.committed:  # the body raised after its commit: the run stays committed
            attempt_ended.send(sender=spec.name, task=spec.name, status=RunStatus.COMMITTED)
        else:
            error = f"{type(exc).__name__}: {exc}"
            _record(sql, attempt, RunStatus.FAILED, error, unless_committed=ctx.committing)
        raise
    attempt_ended.send(sender=spec.name, task=spec.name, status=RunStatus.COMMITTED)
    return result


attempt_ended = Signal(name="allot.work.attempt_ended")
"""Sent (``task=``, ``status=``) in the process that ran a table task attempt when it ended
committed, fenced or failed: the node's metrics count them (:mod:`tasks.app`)."""


def _record(
    sql: WorkSql, attempt: Attempt, status: RunStatus, error: str, *, unless_committed: bool = False
) -> None:
    """Record an attempt that ended without committing, in the history (a row of its own,
    off the run's hot path) and to :data:`attempt_ended`; the history is never a reason to fail
    a run. ``unless_committed``: the attempt's commit raised; when the run has a committed
    attempt, that is this one (its reply was lost): nothing is inserted, and it counts as
    committed."""
    recorded = status
    try:
        with sql.sessions.begin() as session:
            if not insert_ended(session, attempt, status, error, unless_committed=unless_committed):
                recorded = RunStatus.COMMITTED
    except DBAPIError:
        log.warning("could not record the end of run %s's attempt (%s)", attempt.run_id, status)
    if recorded != status:
        log.warning("run %s committed before its attempt ended %s", attempt.run_id, status)
    attempt_ended.send(sender=attempt.task_name, task=attempt.task_name, status=recorded)


def requeue(task: Task, reason: str, queue: str) -> None:
    """Send the message being run back to ``queue``, its bucket's (same task id), and end
    this delivery without a result: the bucket's owner runs it. The whole request is sent
    again, as Celery's own ``Task.retry`` does: links, errbacks, the rest of a chain, chord
    membership, expiry, priority and the retry count go with it. When the broker refuses the
    new message, this delivery is rejected back to the queue it came from instead (never
    lost)."""
    request = task.request
    try:
        task.signature_from_request(request, queue=queue).apply_async()
    except Exception as exc:  # kombu's OperationalError after its retries, or the router's
        log.warning(
            "%s[%s] could not be sent back to %s (%s): returned to its queue",
            task.name,
            request.id,
            queue,
            exc,
        )
        raise Reject(exc, requeue=True) from None
    log.info("%s[%s] sent back to its bucket's queue: %s", task.name, request.id, reason)
    raise Ignore()


def retry_later(task: Task, settings: Settings, exc: DBAPIError) -> None:
    """Retry the delivery being run after a :func:`transient` database error: sent again to
    the queue it came from (Celery's ``Task.retry``: the whole request, one more retry),
    ``backoff(retries)`` seconds later. A message the broker refuses is rejected back to its
    queue after the same pause, so an outage of SQL and Redis together does not spin.

    Raises:
        Retry: the message was sent again (this delivery ends).
        Reject: the broker refused the new message (this delivery goes back to its queue).
        RetriesExhausted: the run was retried ``ALLOT_RUN_RETRIES`` times already: it fails.
    """
    retries = task.request.retries
    if retries >= settings.run_retries:
        raise RetriesExhausted(
            f"gave up after {retries + 1} transient database errors in a row "
            f"(ALLOT_RUN_RETRIES={settings.run_retries}); the last: {exc}"
        ) from exc
    countdown = backoff(retries)
    try:
        raise task.retry(exc=exc, countdown=countdown, max_retries=None) from None
    except Reject as refused:  # the broker refused the retry: keep this delivery instead
        log.warning(
            "%s[%s] could not be retried (%s): returned to its queue in %.0f s",
            task.name,
            task.request.id,
            refused.reason,
            countdown,
        )
        time.sleep(countdown)
        raise Reject(refused.reason, requeue=True) from None


def backoff(retries: int) -> float:
    """Seconds before retry number ``retries + 1`` of a run: 1, 2, 4 ... 60."""
    return float(min(2 ** min(retries, 6), 60))


def _ran(task: Task) -> None:
    """End a delivery of a run that already committed without a result of its own when
    Celery's result backend shows the committing delivery finished (``SUCCESS``): Celery sends
    a task's links and next chain step before it stores its result, so they were sent, and
    returning would send them again. Otherwise (no backend, the result expired, or the
    committing process died between its commit and its result) this delivery returns and
    Celery sends them: a link runs once, or, in that window only, again.

    Raises:
        Ignore: the committing delivery finished; nothing more to send.
    """
    try:
        state = AsyncResult(task.request.id, app=task.app).state
    except Exception:  # a disabled or unreachable result backend: send the links
        log.debug("no result state for %s[%s]", task.name, task.request.id, exc_info=True)
        return
    if state == states.SUCCESS:
        log.info("%s[%s] finished before: its links were sent", task.name, task.request.id)
        raise Ignore()


def run_message(task: Task, spec: TableTaskSpec, table: str, kwargs: Mapping[str, Any]) -> Any:
    """The body of every table task's Celery task (``task``, a
    :class:`~allot.work.task.TableTask` of ``spec``): :func:`execute` for this delivery."""
    sql = work_sql()
    node_key = node_key_of(sql.settings, task.request.hostname)
    name = parse_table_name(table)
    try:
        return execute(
            sql, spec, name, task.request.id, node_key, kwargs, on_committed=lambda: _ran(task)
        )
    except NotHere as exc:
        fence = exc.args[0]
        if fence is None:
            reason = f"{node_key} serves no lease of the bucket (or it has no fence yet)"
        elif fence.node_key == node_key:
            reason = (
                f"the bucket's fence names {node_key} with token {fence.token}, not this process's"
            )
        else:
            reason = f"the bucket's fence names {fence.node_key}, not {node_key}"
        requeue(task, reason, bucket_queue(sql.settings.cluster, sql.find_table(name)[1]))
    except Fenced as exc:
        log.warning("%s[%s] on %s: %s", task.name, task.request.id, table, exc)
        queue = bucket_queue(sql.settings.cluster, sql.find_table(name)[1])
        requeue(task, "its commit was fenced", queue)
    except DBAPIError as exc:
        if not transient(exc):
            # the SQL itself is wrong (the body's, or a table dropped since it was looked
            # up), or it was cut for running too long: the run fails with the database's
            # message, it is not retried
            sql.tables.pop(name, None)
            raise
        retry_later(task, sql.settings, exc)
    return None  # unreachable: requeue and retry_later raise


DETERMINISTIC_SQLSTATES = frozenset(
    {
        "57014",  # query_canceled: statement_timeout, or a cancel
        "25P03",  # idle_in_transaction_session_timeout: a commit held open too long
        "55P03",  # lock_not_available: lock_timeout, NOWAIT
    }
)
"""PostgreSQL errors that end the connection or the statement because of what the run did
(held a transaction or a statement too long): running it again does the same."""


def transient(exc: DBAPIError) -> bool:
    """Whether a database error may pass by itself (a lost connection, a locked database):
    such a run is retried, backing off from 1 to 60 s, at most ``ALLOT_RUN_RETRIES`` times.
    A PostgreSQL error the run caused (:data:`DETERMINISTIC_SQLSTATES`: a transaction kept
    idle past ``ALLOT_HANDOFF_TIMEOUT`` inside ``commit()``, a statement or lock timeout) is
    not, even when the server closed the connection over it. SQLite reports a missing table or
    a syntax error as an ``OperationalError`` too: there only a locked or busy database
    passes."""
    if getattr(exc.orig, "sqlstate", None) in DETERMINISTIC_SQLSTATES:
        return False
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    if type(exc.orig).__module__.startswith("sqlite3"):
        message = str(exc.orig).lower()
        return any(word in message for word in ("locked", "busy", "disk i/o"))
    return True

"""A pool process that died under a table task run: its attempt recorded by the main process.

A run writes its history row only when its attempt ends (:mod:`allot.work.runs`), so a pool
process killed in the body (an OOM, a segfault, ``os._exit``) leaves no row. Celery's main
process learns of it (``WorkerLostError``) and, the task being ``reject_on_worker_lost``, puts
the message back in its queue. :class:`TableRequest`, the request class of every table task,
records that attempt first, ``failed`` with an error beginning ``abandoned:``
(:data:`~allot.work.runs.ABANDONED`): the read before each run's body counts them, and the
delivery after ``ALLOT_MAX_ABANDONED`` of them ends the run without running it
(:mod:`allot.work.run`). A pool process killed for its hard time limit (acknowledged: the run
ends) is recorded ``failed`` the same way, with its own error.

Not counted: a process killed by a cold shutdown (the run was not at fault), and a whole
worker killed (its main process with it: the new holder runs the message again, as after any
kill). Recording is off the hot path (only on a death) and never fails the request's own
handling: an error is logged and Celery goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from billiard.einfo import ExceptionInfo, ExceptionWithTraceback
from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery.worker import state
from celery.worker.request import Request

from allot.names import parse_table_name
from allot.work.database import WorkSql, work_sql
from allot.work.run import node_key_of
from allot.work.runs import ABANDONED, Attempt, insert_ended
from allot.work.tokens import node_tokens
from models.base import utcnow
from models.states import RunStatus

log = logging.getLogger(__name__)


class TableRequest(Request):  # type: ignore[misc]
    """Celery's request of a table task message, in the worker's main process: records an
    attempt whose pool process died (see the module) before Celery handles the failure."""

    def on_failure(
        self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        died = isinstance(exc, WorkerLostError) or (
            isinstance(exc, SystemExit | KeyboardInterrupt)
            and not (self._already_cancelled or self._already_revoked)
        )
        if died and not state.should_terminate:
            record_lost(self, f"{ABANDONED}its process died ({exc})")
        elif isinstance(exc, TimeLimitExceeded):
            record_lost(self, f"TimeLimitExceeded: its process was killed after {exc} s")
        return super().on_failure(exc_info, send_failed_event, return_ok)


def record_lost(request: Request, error: str, sql: WorkSql | None = None) -> None:
    """Insert the ``failed`` attempt of ``request``'s run whose process died, with ``error``,
    unless the run committed (the process died after its commit: nothing was abandoned), in
    ``sql`` (default this process's). Logs and returns on any error."""
    try:
        sql = sql if sql is not None else work_sql()
        args, kwargs = request.args or (), request.kwargs or {}
        table = args[0] if args else kwargs["table"]
        table_id, bucket_id = sql.find_table(parse_table_name(table))
        tokens = node_tokens()
        own = None if tokens is None else tokens.lease(bucket_id)
        started = request.time_start
        attempt = Attempt(
            run_id=request.id,
            task_name=request.task_name,
            table_id=table_id,
            bucket_id=bucket_id,
            node_key=node_key_of(sql.settings, request.hostname),
            token=0 if own is None else own.token,
            started_at=utcnow() if not started else dt.datetime.fromtimestamp(started, dt.UTC),
            generation=0 if own is None else own.generation,
        )
        with sql.sessions.begin() as session:
            insert_ended(session, attempt, RunStatus.FAILED, error, unless_committed=True)
        log.warning("%s[%s]: %s", request.task_name, request.id, error)
    except Exception:
        log.exception("could not record the lost attempt of %s[%s]", request.name, request.id)

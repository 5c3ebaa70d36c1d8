"""Where a table task call goes: the queue of its table's bucket.

:func:`route` is allot's Celery ``task_routes`` (:mod:`tasks.app`): every call of a table task
goes to ``allot.{cluster}.bucket.{id}`` (:func:`~allot.work.queues.bucket_queue`), whoever
sends it: ``delay``, ``apply_async``, ``send_task`` (Flower's async-apply), ``allot work send``.
Only the bucket's lease holder consumes that queue (:mod:`allot.work.leases`). An unregistered
table or arguments the body does not take raise here, in the sender, and nothing is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError

from allot.names import parse_table_name
from allot.work.database import work_sql
from allot.work.queues import bucket_queue
from allot.work.task import table_task_spec


def route(
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: Any,
    task: Any = None,
    **_: Any,
) -> dict[str, str] | None:
    """Celery router: the queue of the table's bucket for a table task, None for anything else.

    Raises (in the sender; nothing is sent):
        InvalidInput: the call does not fit the task
            (:meth:`~allot.work.spec.TableTaskSpec.check_call`), or the table name is invalid.
        NotFound: the table is not registered.
        DBAPIError: the database cannot be read, and the call names no queue of its own (a
            call that does, such as a run's retry, goes to that queue unchecked).
    """
    spec = table_task_spec(name)
    if spec is None:
        return None
    table = parse_table_name(spec.check_call(args or (), kwargs or {}))
    sql = work_sql()
    try:
        bucket_id = sql.find_table(table)[1]
    except DBAPIError:
        if options.get("queue") or options.get("routing_key"):
            # a message sent again to the queue it names (a retry while SQL is down):
            # it goes there; its run checks the bucket's fence when it comes back
            return None
        raise
    return {"queue": bucket_queue(sql.settings.cluster, bucket_id)}

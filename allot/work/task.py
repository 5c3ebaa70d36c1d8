"""Table tasks: the ``@table_task`` decorator, the Celery task class and the registry.

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

:func:`table_task` records a :class:`~allot.work.spec.TableTaskSpec` (name, body, period) in
this process's registry (:func:`table_tasks`) and makes a :class:`TableTask`: acknowledged
late, rejected back to its queue when its pool process dies, refused in a process without
allot's Celery app. Where a call goes is :mod:`allot.work.routing`; what a delivery does in the
worker is :mod:`allot.work.run`; the body's :class:`~allot.work.context.TableContext` and its
fenced commit are :mod:`allot.work.context`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task, shared_task

from allot.errors import ConfigurationError, InvalidInput
from allot.work.run import run_message
from allot.work.spec import TableBody, TableTaskSpec

_specs: dict[str, TableTaskSpec] = {}


def table_tasks() -> dict[str, TableTaskSpec]:
    """Every table task this process has imported, by name."""
    return dict(_specs)


def table_task_spec(name: str) -> TableTaskSpec | None:
    """The table task this process has imported under ``name``, or None."""
    return _specs.get(name)


class TableTask(Task):  # type: ignore[misc]
    """The Celery task class of table tasks: acknowledged late (a message comes back when the
    worker dies mid-run) and rejected back to its queue when its pool process is killed, after
    the main process recorded the attempt abandoned (:mod:`allot.work.lost`)."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    Request = "allot.work.lost:TableRequest"
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
            return run_message(self, spec, table, kwargs)

        run.__name__, run.__doc__, run.__module__ = fn.__name__, fn.__doc__, fn.__module__
        _specs[task_name] = spec
        task: TableTask = shared_task(
            name=task_name, bind=True, base=TableTask, allot_spec=spec, **options
        )(run)
        return task

    return decorate

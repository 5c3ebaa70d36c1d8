"""Tasks of the workflow end-to-end tests (workers import this, with
:mod:`tests.e2e.work_tasks`, through ALLOT_TASK_MODULES): a plain task a workflow links to,
which records each of its runs, and a table task that records the Celery request it ran
under."""

from __future__ import annotations

import os
from typing import Any

from celery import current_task, shared_task
from sqlalchemy import Column, Integer, MetaData, String, Table, insert

from allot.work import TableContext, table_task
from allot.work.database import work_sql

metadata = MetaData()
link_run = Table(
    "e2e_link_run",
    metadata,
    Column("label", String(255)),
    Column("task_id", String(255)),
    Column("hostname", String(255)),
    Column("worker_pid", Integer),
)
"""One row per run of :func:`done` (created by the tests)."""

seen = Table(
    "e2e_seen_request",
    metadata,
    Column("run_id", String(255)),
    Column("node_key", String(128)),
    Column("priority", Integer),
    Column("expires", String(64)),
    Column("retries", Integer),
)
"""One row per committed run of :func:`observe`: what its Celery request carried."""


@shared_task(name="e2e.chain.done", bind=True, acks_late=True)
def done(self: Any, label: str) -> None:
    """A link at the end of a workflow: commit one row naming ``label`` and this run."""
    with work_sql().sessions.begin() as session:
        session.execute(
            insert(link_run).values(
                label=label,
                task_id=self.request.id,
                hostname=self.request.hostname,
                worker_pid=os.getppid(),  # run in a pool process: its parent is the worker
            )
        )


@table_task(name="e2e.chain.observe")
def observe(ctx: TableContext) -> dict[str, object]:
    """Commit one row with the priority, expiry and retry count of the delivery that runs."""
    request = current_task.request
    with ctx.commit() as session:
        session.execute(
            insert(seen).values(
                run_id=ctx.run_id,
                node_key=ctx.node_key,
                priority=(request.delivery_info or {}).get("priority"),
                expires=None if request.expires is None else str(request.expires),
                retries=request.retries,
            )
        )
    return {"node": ctx.node_key}

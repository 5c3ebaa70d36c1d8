"""The table tasks of the backlog test (workers import this through ALLOT_TASK_MODULES): a
periodic task every 2 s, instant, and an ad-hoc task that works a given time; both commit the
span of their run."""

from __future__ import annotations

import time

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, insert

from allot.work import TableContext, table_task

EVERY = 2.0

metadata = MetaData()
backlog_run = Table(
    "e2e_backlog_run",
    metadata,
    Column("run_id", String(255)),
    Column("task", String(64)),
    Column("table_id", Integer),
    Column("started", Float),
    Column("ended", Float),
)
"""One row per committed run: when its body started and when it committed (wall clock)."""


def _commit_span(ctx: TableContext, task: str, started: float) -> None:
    with ctx.commit() as session:
        session.execute(
            insert(backlog_run).values(
                run_id=ctx.run_id,
                task=task,
                table_id=ctx.table_id,
                started=started,
                ended=time.time(),
            )
        )


@table_task(name="e2e.backlog.periodic", every=EVERY)
def periodic(ctx: TableContext) -> None:
    """Commit the run's span at once."""
    _commit_span(ctx, "periodic", time.time())


@table_task(name="e2e.backlog.send")
def send(ctx: TableContext, seconds: float) -> None:
    """Work ``seconds``, then commit the run's span."""
    started = time.time()
    time.sleep(seconds)
    _commit_span(ctx, "send", started)

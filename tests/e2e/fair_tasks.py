"""The periodic table task of the fairness test (workers import it through
ALLOT_TASK_MODULES): every 8 s, instant on every table but those named ``*slow``, whose run
takes 1.5 periods (12 s)."""

from __future__ import annotations

import time

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, insert

from allot.work import TableContext, table_task

EVERY = 8.0
SLOW_SECONDS = 1.5 * EVERY

metadata = MetaData()
fair_run = Table(
    "e2e_fair_run",
    metadata,
    Column("run_id", String(255)),
    Column("table_id", Integer),
    Column("started", Float),
    Column("ended", Float),
)
"""One row per committed run: when its body started and when it committed (wall clock)."""


@table_task(name="e2e.fair.periodic", every=EVERY)
def periodic(ctx: TableContext) -> None:
    """Work (1.5 periods on a ``*slow`` table, none on the others), then commit the run's
    span."""
    started = time.time()
    if str(ctx.table).endswith("slow"):
        time.sleep(SLOW_SECONDS)
    with ctx.commit() as session:
        session.execute(
            insert(fair_run).values(
                run_id=ctx.run_id, table_id=ctx.table_id, started=started, ended=time.time()
            )
        )

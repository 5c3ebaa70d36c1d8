"""Table tasks of the end-to-end tests (workers import this through ALLOT_TASK_MODULES)."""

from __future__ import annotations

import os
import time

from sqlalchemy import Column, Integer, MetaData, String, Table, insert

from allot.work import TableContext, table_task

metadata = MetaData()
effect = Table(
    "e2e_effect",
    metadata,
    Column("run_id", String(255)),
    Column("table_id", Integer),
    Column("bucket_id", Integer),
    Column("node_key", String(128)),
    Column("worker_pid", Integer),
)
"""What the tasks write: one row per committed run (created by the tests). ``worker_pid`` is
the worker's main process, which tells apart two workers that share a node key."""


@table_task(name="e2e.record")
def record(ctx: TableContext, seconds: float = 0.0) -> dict[str, object]:
    """Work for ``seconds``, then commit one row naming the run and this node. A run writes no
    row until it ends: it says it started on a line ``run_id node_key`` of the file
    ``E2E_STARTED`` names (when set)."""
    say_started(ctx)
    time.sleep(seconds)
    with ctx.commit() as session:
        session.execute(
            insert(effect).values(
                run_id=ctx.run_id,
                table_id=ctx.table_id,
                bucket_id=ctx.bucket_id,
                node_key=ctx.node_key,
                worker_pid=os.getppid(),  # run in a pool process: its parent is the worker
            )
        )
    return {"node": ctx.node_key, "token": ctx.token}


@table_task(name="e2e.die")
def die(ctx: TableContext) -> None:
    """Kill the pool process running it, every time (an OOM, a segfault)."""
    say_started(ctx)
    os._exit(1)


def say_started(ctx: TableContext) -> None:
    started = os.environ.get("E2E_STARTED")
    if started:
        with open(started, "a") as log:
            log.write(f"{ctx.run_id} {ctx.node_key}\n")

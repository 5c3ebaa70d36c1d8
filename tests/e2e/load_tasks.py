"""The periodic table task of the load test (workers import it through ALLOT_TASK_MODULES):
every second, 0.4 s on a table named ``*slow``, nothing on the others."""

from __future__ import annotations

import time

from allot.work import TableContext, table_task

SLOW_SECONDS = 0.4


@table_task(name="e2e.load.periodic", every=1.0)
def periodic(ctx: TableContext) -> None:
    """Work the table's cost; the run commits empty."""
    if str(ctx.table).endswith("slow"):
        time.sleep(SLOW_SECONDS)

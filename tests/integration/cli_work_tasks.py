"""Table tasks of the ``allot work`` CLI tests (the CLI imports this through
ALLOT_TASK_MODULES)."""

from __future__ import annotations

from allot.work import TableContext, table_task


@table_task(name="clitest.touch")
def touch(ctx: TableContext, size: int = 1) -> dict[str, object]:
    """Commit nothing of its own; say which table and size it ran for."""
    return {"table": ctx.table, "size": size}


@table_task(name="clitest.fail")
def fail(ctx: TableContext) -> None:
    """Always fail."""
    raise RuntimeError(f"disk full on {ctx.table}")

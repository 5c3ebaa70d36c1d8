"""``allot plans``: the recorded plans, one in full, and applying a dry-run plan."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from allot.cli._celery import call_task
from allot.cli._common import FormatOption, OutputFormat, TimeoutOption, console, print_json
from allot.cli._context import open_database
from allot.cli.cluster import print_report
from allot.cycle import plans
from allot.cycle.report import CycleOutcome
from models.schema import Plan as PlanRow

app = typer.Typer(help="List recorded plans, show one, apply a dry-run plan.", no_args_is_help=True)


def plan_summary(row: PlanRow) -> dict[str, Any]:
    """The JSON form of a plan row (without its moves)."""
    return {
        "plan_id": row.plan_id,
        "status": row.status,
        "trigger": row.trigger,
        "strategy": row.strategy,
        "base_epoch": row.base_epoch,
        "epoch": row.epoch,
        "max_moves": row.max_moves,
        "moves": row.moves,
        "min_moves": row.min_moves,
        "spread_before": row.spread_before,
        "spread_after": row.spread_after,
        "created_at": row.created_at.isoformat(),
        "applied_at": row.applied_at.isoformat() if row.applied_at else None,
        "error": row.error,
    }


@app.command("list")
def list_command(
    status: Annotated[
        str | None, typer.Option("--status", help="Only plans in this status.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest plans to show.")] = 20,
    output: FormatOption = OutputFormat.table,
) -> None:
    """List recorded plans, newest first."""
    with open_database() as db, db.sessions() as session:
        rows = plans.list_plans(session, limit=limit, status=status)
    if output is OutputFormat.json:
        print_json([plan_summary(row) for row in rows])
        return
    table = Table("plan", "status", "trigger", "moves", "min", "spread", "epoch", "created")
    for row in rows:
        table.add_row(
            row.plan_id[:12],
            row.status,
            row.trigger,
            str(row.moves),
            str(row.min_moves),
            f"{row.spread_before:g} -> {row.spread_after:g}",
            f"{row.base_epoch} -> {row.epoch}" if row.epoch is not None else str(row.base_epoch),
            row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table)


@app.command("show")
def show_command(
    plan_id: Annotated[str, typer.Argument(help="A plan id or a unique prefix (6+ characters).")],
    output: FormatOption = OutputFormat.table,
) -> None:
    """Show one plan: status, cost before and after, and every move."""
    with open_database() as db, db.sessions() as session:
        detail = plans.find_plan(session, plan_id)
    summary = plan_summary(detail.plan)
    moves = [{"bucket": b, "from": source, "to": target} for b, source, target in detail.moves]
    if output is OutputFormat.json:
        print_json(summary | {"move_list": moves})
        return
    for key, value in summary.items():
        if value is not None:
            console.print(f"[bold]{key:>13}[/bold]  {value}", highlight=False)
    if moves:
        table = Table("bucket", "from", "to", title=f"{len(moves)} move(s)")
        for bucket, source, target in detail.moves:
            table.add_row(str(bucket), source or "(unowned)", target)
        console.print(table)


@app.command("apply")
def apply_command(
    plan_id: Annotated[str, typer.Argument(help="A generated plan's id or unique prefix.")],
    timeout: TimeoutOption = 60.0,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Apply a dry-run plan on a worker; refused as stale if the assignment changed since."""
    with open_database() as db, db.sessions() as session:
        full_id = plans.find_plan(session, plan_id).plan.plan_id
    report = call_task(
        "allot.apply_plan", {"plan_id": full_id, "lock_timeout": max(timeout - 5, 1)}, timeout
    )
    if output is OutputFormat.json:
        print_json(report)
    else:
        print_report(report)
    if report["outcome"] != CycleOutcome.APPLIED:
        raise typer.Exit(1)

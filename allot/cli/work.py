"""``allot work``: send a table task to its table's owner, and read the run history.

``send`` checks the call completely before anything is sent (:mod:`allot.work.client`), then
sends the task by name to the queue of the table's bucket, where only the bucket's lease
holder takes it (:mod:`allot.work`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from allot.cli._celery import send_task, wait_for
from allot.cli._common import FormatOption, OutputFormat, TimeoutOption, console, print_json
from allot.cli._context import cli_config, open_database
from allot.names import parse_table_name, validate_node_key
from allot.work import client as work_client
from allot.work.runs import RunRow
from models.states import RunStatus

app = typer.Typer(
    help="Send table tasks to their tables' owners; list their runs.", no_args_is_help=True
)

STATUS_STYLE: dict[str, str] = {
    RunStatus.RUNNING: "cyan",
    RunStatus.COMMITTED: "green",
    RunStatus.FENCED: "yellow",
    RunStatus.FAILED: "red",
}


@app.command("send")
def send(
    name: Annotated[str, typer.Argument(help="The table task's name (see ALLOT_TASK_MODULES).")],
    table: Annotated[str, typer.Argument(help="The table, catalog.database.table.")],
    kwargs: Annotated[
        str | None,
        typer.Option("--kwargs", help='The task\'s keyword arguments as a JSON object: {"a": 1}.'),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the run's result (see --timeout); print it.")
    ] = False,
    timeout: TimeoutOption = 60.0,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Send a table task to the owner of its table's bucket.

    NAME is a table task of the modules in ALLOT_TASK_MODULES; the call goes to the queue of
    TABLE's bucket, which only the bucket's owner consumes. Nothing is sent when the task is
    unknown, the arguments do not fit it or the table is not registered.
    """
    settings = cli_config().settings
    modules = settings.task_module_names
    spec = work_client.find_table_task(work_client.load_table_tasks(modules), name, modules)
    arguments = work_client.parse_kwargs(kwargs)
    with open_database() as db, db.sessions() as session:
        call = work_client.prepare_call(session, spec, table, arguments, settings.cluster)
    result = send_task(call.task, args=[str(call.table)], kwargs=call.kwargs, queue=call.queue)
    sent = {
        "task_id": result.id,
        "task": call.task,
        "table": str(call.table),
        "bucket_id": call.bucket_id,
        "queue": call.queue,
        "kwargs": call.kwargs,
    }
    if output is OutputFormat.table:
        console.print(
            f"sent {call.task}[{result.id}] for {call.table} to {call.queue} "
            f"(bucket {call.bucket_id})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if not wait:
        if output is OutputFormat.json:
            print_json(sent)
        return
    value = wait_for(result, f"{call.task}[{result.id}]", timeout)
    if output is OutputFormat.json:
        print_json(sent | {"result": value})
    else:
        console.print(f"result: {json.dumps(value)}", markup=False, highlight=False, soft_wrap=True)


def runs_view(rows: Sequence[RunRow]) -> Table:
    """The runs as a table that reads in 80 columns: the start and the status, short, in
    their own columns; the rest of the run (table, task, run id, node and bucket, error)
    as lines of one cell, which wrap or fold but are never cut with an ellipsis."""
    view = Table(show_lines=True, expand=False)
    view.add_column("started", no_wrap=True)
    view.add_column("status", no_wrap=True)
    view.add_column("table, task, run, node", overflow="fold")
    for row in rows:
        style = STATUS_STYLE.get(row.status, "")
        lines = [
            f"[bold]{escape(row.table)}[/bold]",
            f"{escape(row.task_name)}",
            f"run {escape(row.run_id)}",
            f"[dim]{escape(row.node_key)}, bucket {row.bucket_id}, attempt {row.attempt_id}[/dim]",
        ]
        if row.error:
            lines.append(f"[red]{escape(row.error)}[/red]")
        view.add_row(
            row.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"[{style}]{row.status}[/{style}]",
            "\n".join(lines),
        )
    return view


@app.command("runs")
def runs(
    table: Annotated[
        str | None, typer.Option("--table", help="Only runs of this table (catalog.db.table).")
    ] = None,
    node: Annotated[str | None, typer.Option("--node", help="Only runs on this node.")] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only runs with this status: committed, fenced, failed."),
    ] = None,
    task: Annotated[str | None, typer.Option("--task", help="Only runs of this task.")] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="Show at most this many runs; 0 shows all.")
    ] = 50,
    output: FormatOption = OutputFormat.table,
) -> None:
    """List the runs of table tasks, newest first.

    Each row is one attempt (table_task_run): a message delivered again is another attempt
    of the same run.
    """
    table_name = parse_table_name(table) if table is not None else None
    node_key = validate_node_key(node) if node is not None else None
    wanted = work_client.parse_run_status(status) if status is not None else None
    with open_database() as db, db.sessions() as session:
        rows = work_client.list_runs(
            session,
            table=table_name,
            node_key=node_key,
            status=wanted,
            task_name=task,
            limit=limit or None,
        )
    if output is OutputFormat.json:
        print_json([row.as_json() for row in rows])
        return
    console.print(runs_view(rows))
    if limit and len(rows) == limit:
        console.print(f"showing the newest {limit:,}; --limit 0 shows all", style="dim")

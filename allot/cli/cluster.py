"""``allot status``, ``allot nodes`` and ``allot rebalance``: the live cluster."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from allot.cli._celery import call_task
from allot.cli._common import (
    FormatOption,
    OutputFormat,
    TimeoutOption,
    console,
    err_console,
    print_json,
)
from allot.cli._context import open_database, open_redis, open_zookeeper
from allot.inspect.status import cluster_status
from models.states import NodeState

STATE_STYLE = {NodeState.LIVE: "green", NodeState.SUSPECT: "yellow", NodeState.OFFLINE: "red"}


def _read_status() -> dict[str, Any]:
    """The cluster's state (:func:`allot.inspect.status.cluster_status`), with its own
    connections."""
    with (
        open_database() as db,
        open_zookeeper(db.settings, "reading the cluster") as client,
        open_redis(db.settings) as redis,
    ):
        return cluster_status(client, db.sessions, db.settings, redis)


def _nodes_table(nodes: list[dict[str, Any]]) -> Table:
    table = Table("node", "state", "weight", "buckets", "tables", "backlog", "host", "offline in")
    for node in nodes:
        style = STATE_STYLE.get(node["state"], "")
        table.add_row(
            node["node_key"],
            f"[{style}]{node['state']}[/{style}]",
            "" if node["weight"] is None else f"{node['weight']:g}",
            str(node["buckets"]),
            f"{node['tables']:,}",
            "?" if node["backlog"] is None else f"{node['backlog']:,}",
            node["host"] or "",
            "" if node["offline_in"] is None else f"{node['offline_in']:.1f} s",
        )
    return table


def _backlog_note(state: dict[str, Any]) -> None:
    """Say on standard error why the backlog shows as ``?``."""
    if state["backlog_error"]:
        err_console.print(
            f"[yellow]backlog unknown:[/yellow] {escape(state['backlog_error'])}",
            highlight=False,
            soft_wrap=True,
        )


def nodes(output: FormatOption = OutputFormat.table) -> None:
    """List the nodes with their states, weights, buckets, tables and backlog.

    States: live, suspect (gone, within its grace period), offline. Tables: those registered
    in the node's buckets. Backlog: the messages waiting in its buckets' queues (`?` when
    Redis cannot be read).
    """
    state = _read_status()
    if output is OutputFormat.json:
        print_json(state["nodes"])
        return
    console.print(_nodes_table(state["nodes"]))
    _backlog_note(state)


def status(output: FormatOption = OutputFormat.table) -> None:
    """Show the epoch, the nodes and the last assignment cycle with its outcome.

    The first line counts the buckets nobody holds (unowned) and the held buckets whose
    lease nobody holds (without lease: no node works their tables right now).
    """
    state = _read_status()
    if output is OutputFormat.json:
        print_json(state)
        return
    console.print(
        f"epoch [bold]{state['epoch']}[/bold] (plan {state['plan_id'] or '-'}, "
        f"applied {state['applied_at'] or 'never'}); {state['bucket_count']} buckets, "
        f"{state['unowned']} unowned, {len(state['without_lease'])} without lease",
        highlight=False,
    )
    console.print(_nodes_table(state["nodes"]))
    _backlog_note(state)
    for key, reason in state["corrupt"].items():
        console.print(f"[red]corrupt assignment of {key}:[/red] {escape(reason)}", highlight=False)
    last = state["last_cycle"]
    if last is None:
        console.print("last cycle: none yet")
    else:
        reason = f": {last['reason']}" if last.get("reason") else ""
        console.print(
            f"last cycle: {last.get('outcome', '?')} ({last.get('trigger', '?')}) at "
            f"{last.get('finished_at', '?')}, {last.get('moves', 0)} move(s), "
            f"{last.get('duration_ms', 0):g} ms{reason}",
            highlight=False,
        )


def print_report(report: dict[str, Any]) -> None:
    """A cycle report for people: outcome, plan, epoch, spread and moves per node."""
    reason = f": {report['reason']}" if report.get("reason") else ""
    console.print(f"[bold]{report['outcome']}[/bold]{reason}", highlight=False)
    if report.get("plan_id"):
        console.print(f"plan      {report['plan_id']}", highlight=False)
    console.print(f"epoch     {report['epoch']}", highlight=False)
    console.print(f"moves     {report['moves']} (minimum {report['min_moves']})", highlight=False)
    console.print(
        f"spread    {report['spread_before']:g} -> {report['spread_after']:g}", highlight=False
    )
    for warning in report.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    if report["moves_by_node"]:
        table = Table("node", "in", "out", "buckets after")
        for key, counts in report["moves_by_node"].items():
            table.add_row(
                key, str(counts["in"]), str(counts["out"]), str(report["buckets"].get(key, 0))
            )
        console.print(table)


def rebalance(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Record the plan as generated; move nothing.")
    ] = False,
    max_moves: Annotated[
        int | None, typer.Option("--max-moves", min=0, help="Move at most N buckets.")
    ] = None,
    timeout: TimeoutOption = 60.0,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Run an assignment cycle now on a worker, wait, and print the plan.

    Concurrent calls are serialized by the assignment lock. With --dry-run the plan is stored
    as `generated`; apply it later with `allot plans apply ID`.
    """
    report = call_task(
        "allot.rebalance",
        {"dry_run": dry_run, "max_moves": max_moves, "lock_timeout": max(timeout - 5, 1)},
        timeout,
    )
    if output is OutputFormat.json:
        print_json(report)
        return
    print_report(report)
    if dry_run and report.get("plan_id"):
        console.print(f"apply it with: allot plans apply {report['plan_id'][:12]}")

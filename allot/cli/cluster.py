"""``allot status``, ``allot nodes`` and ``allot rebalance``: the live cluster."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

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

SHOWN_PROBLEMS = 5
"""At most this many lines of ignored load or pin entries in ``allot status`` (JSON has all)."""
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


def nodes_view(nodes: list[dict[str, Any]]) -> Table:
    """The nodes as a table that reads in 80 columns: the node key (with its host below it
    when the key does not end in ``@host``) folds rather than being cut; a suspect's state
    says below it how long until it turns offline."""
    table = Table()
    table.add_column("node", overflow="fold")
    table.add_column("state")
    for header in ("weight", "buckets", "tables", "backlog"):
        table.add_column(header, justify="right", no_wrap=True)
    for node in nodes:
        style = STATE_STYLE.get(node["state"], "")
        name = escape(node["node_key"])
        if node["host"] and not node["node_key"].endswith(f"@{node['host']}"):
            name += f"\n[dim]{escape(node['host'])}[/dim]"
        state = f"[{style}]{node['state']}[/{style}]"
        if node["offline_in"] is not None:
            state += f"\n[dim]{node['offline_in']:.1f} s left[/dim]"
        table.add_row(
            name,
            state,
            "" if node["weight"] is None else f"{node['weight']:g}",
            str(node["buckets"]),
            f"{node['tables']:,}",
            "?" if node["backlog"] is None else f"{node['backlog']:,}",
        )
    return table


def _seconds(value: float) -> str:
    return f"{value:,.1f}"


def load_view(state: dict[str, Any]) -> Group:
    """The load line (the cluster's ratio, tolerance, strategy and what was measured) and,
    once anything is measured, a table of each live node's load, fair share and ratio, a ratio
    above the tolerance in red."""
    load = state["load"]
    window = f"{load['window']:g} s"
    settings = f"tolerance {load['tolerance']:g}, strategy {load['strategy']}"
    if load["ratio"] is None:
        what = (
            "none measured yet"
            if load["measured"] == 0
            else f"no ratio, {_seconds(load['total'])} s for the live nodes"
        )
        return Group(Text(f"load over the last {window}: {what} ({settings})"))
    over = load["ratio"] > load["tolerance"]
    ratio = f"[red]{load['ratio']:.2f}[/red]" if over else f"{load['ratio']:.2f}"
    headline = (
        f"load over the last {window}: ratio {ratio} ({settings}); "
        f"{load['measured']:,} of {state['bucket_count']:,} buckets measured"
    )
    if load["measured"] < state["bucket_count"]:
        headline += f", the others count as the mean ({_seconds(load['mean'])} s)"
    table = Table()
    table.add_column("node", overflow="fold")
    for header in ("buckets", "load (s)", "share (s)", "ratio"):
        table.add_column(header, justify="right", no_wrap=True)
    for node in state["nodes"]:
        if node["share"] is None:
            continue  # not live: no share
        node_ratio = "-" if node["ratio"] is None else f"{node['ratio']:.2f}"
        if node["ratio"] is not None and node["ratio"] > load["tolerance"]:
            node_ratio = f"[red]{node_ratio}[/red]"
        table.add_row(
            escape(node["node_key"]),
            str(node["buckets"]),
            _seconds(node["load"]),
            _seconds(node["share"]),
            node_ratio,
        )
    return Group(Text.from_markup(headline), table)


def heaviest_view(state: dict[str, Any]) -> Table:
    """The heaviest measured buckets: load, owner and the node a bucket is pinned to."""
    table = Table(title="heaviest buckets", title_justify="left")
    table.add_column("bucket", justify="right", no_wrap=True)
    table.add_column("load (s)", justify="right", no_wrap=True)
    table.add_column("owner", overflow="fold")
    table.add_column("pinned to", overflow="fold")
    for bucket in state["load"]["heaviest"]:
        table.add_row(
            str(bucket["bucket"]),
            _seconds(bucket["load"]),
            escape(bucket["owner"] or "-"),
            escape(bucket["pinned_to"] or ""),
        )
    return table


def pins_view(pins: list[dict[str, Any]]) -> Table:
    """The pins: each pinned bucket, its node (marked when not live: the bucket is placed as
    if unpinned until it is back) and the bucket's owner now."""
    table = Table(title="pins", title_justify="left")
    table.add_column("bucket", justify="right", no_wrap=True)
    table.add_column("pinned to", overflow="fold")
    table.add_column("held by", overflow="fold")
    for pin in pins:
        node = escape(pin["node"])
        if not pin["live"]:
            node += " [yellow](not live)[/yellow]"
        table.add_row(str(pin["bucket"]), node, escape(pin["owner"] or "-"))
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
    """List the nodes with their states, weights, buckets, tables, backlog and load.

    States: live, suspect (gone, within its grace period), offline. Tables: those registered
    in the node's buckets. Backlog: the messages waiting in its buckets' queues (`?` when
    Redis cannot be read). Load: the seconds of table work in its buckets over the load
    window, against its fair share (its weight's part of the total); ratio: load / share.
    """
    state = _read_status()
    if output is OutputFormat.json:
        print_json(state["nodes"])
        return
    console.print(nodes_view(state["nodes"]))
    _backlog_note(state)
    console.print(load_view(state))


def status(output: FormatOption = OutputFormat.table) -> None:
    """Show the epoch, the nodes, their load, the heaviest buckets, the pins and the last
    assignment cycle with its outcome.

    The first line counts the buckets nobody holds (unowned) and the held buckets whose
    lease nobody holds (without lease: no node works their tables right now). A pin to a
    node that is not live is marked: its bucket is placed as if unpinned until the node is
    back.
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
    console.print(nodes_view(state["nodes"]))
    _backlog_note(state)
    for key, reason in state["corrupt"].items():
        console.print(f"[red]corrupt assignment of {key}:[/red] {escape(reason)}", highlight=False)
    console.print(load_view(state))
    if state["load"]["heaviest"]:
        console.print(heaviest_view(state))
    if state["pins"]:
        console.print(pins_view(state["pins"]))
    else:
        console.print("pins: none")
    problems = [*state["load"]["problems"], *filter(None, [state["pins_problem"]])]
    for problem in problems[:SHOWN_PROBLEMS]:
        console.print(f"[yellow]ignored:[/yellow] {escape(problem)}", highlight=False)
    if len(problems) > SHOWN_PROBLEMS:
        console.print(
            f"[yellow]and {len(problems) - SHOWN_PROBLEMS} more ignored[/yellow] "
            "(--format json lists them)",
            highlight=False,
        )
    last = state["last_cycle"]
    if last is None:
        console.print("last cycle: none yet")
    else:
        reason = f": {last['reason']}" if last.get("reason") else ""
        ratio = _load_ratios(last)
        console.print(
            f"last cycle: {last.get('outcome', '?')} ({last.get('trigger', '?')}) at "
            f"{last.get('finished_at', '?')}, {last.get('moves', 0)} move(s), "
            f"{last.get('duration_ms', 0):g} ms{f', load ratio {ratio}' if ratio else ''}{reason}",
            highlight=False,
        )


def _load_ratios(report: dict[str, Any]) -> str | None:
    """``before -> after`` of a cycle report's load ratio, None when it measured none."""
    before, after = report.get("load_ratio_before"), report.get("load_ratio_after")
    if before is None or after is None:
        return None
    return f"{before:.2f} -> {after:.2f}"


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
    ratio = _load_ratios(report)
    if ratio:
        console.print(f"load      ratio {ratio}", highlight=False)
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

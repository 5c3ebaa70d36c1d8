"""``allot tables`` and ``allot mapping``: register tables and ask which node owns them."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from allot import registry
from allot.cli._common import FormatOption, OutputFormat, console, print_json
from allot.cli._context import open_database
from allot.errors import InvalidInput, InvalidTableName, NotFound
from allot.names import TableName, parse_table_name, validate_node_key

app = typer.Typer(help="Register, list and drop tables.", no_args_is_help=True)

# Above this many names, `register` prints a summary instead of one row per table.
ROWS_SHOWN = 50
DEFAULT_LIMIT = 1000

LimitOption = Annotated[
    int,
    typer.Option("--limit", min=0, help="Show at most this many rows; 0 shows all."),
]


def _read_names(names: list[str], file: str | None) -> list[TableName]:
    """Validate every name before anything is written; say which line is wrong."""
    parsed = [parse_table_name(name) for name in names]
    if file is None:
        return parsed
    source = "standard input" if file == "-" else file
    try:
        with contextlib.ExitStack() as stack:
            lines: Iterable[str] = (
                sys.stdin if file == "-" else stack.enter_context(open(file, encoding="utf-8"))
            )
            for number, line in enumerate(lines, start=1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                try:
                    parsed.append(parse_table_name(text))
                except InvalidTableName as exc:
                    raise InvalidTableName(f"{source}, line {number}: {exc}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {source}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"cannot read {source}: it is not UTF-8 text") from None
    return parsed


@app.command("register")
def register(
    names: Annotated[
        list[str] | None, typer.Argument(help="Tables as catalog.database.table.")
    ] = None,
    file: Annotated[
        str | None,
        typer.Option("--file", help="File with one catalog.database.table per line; - for stdin."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Names per transaction.")
    ] = registry.DEFAULT_BATCH_SIZE,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Give each new table a bucket (the emptiest, ties to the lowest id); repeats are no-ops."""
    wanted = _read_names(names or [], file)
    if not wanted:
        raise InvalidInput("no table names given: pass NAME... or --file F")
    with open_database() as db:
        show_progress = console.is_terminal and output is OutputFormat.table
        with Progress(
            TextColumn("registering"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not show_progress,
        ) as progress:
            task = progress.add_task("register", total=len(wanted))
            results = registry.register_in_batches(
                db.sessions,
                wanted,
                batch_size=batch_size,
                on_progress=lambda done: progress.update(task, completed=done),
            )
    created = sum(result.created for result in results)
    if output is OutputFormat.json:
        print_json(
            {
                "registered": created,
                "existing": len(results) - created,
                "tables": [
                    {"name": str(r.name), "bucket_id": r.bucket_id, "created": r.created}
                    for r in results
                ],
            }
        )
        return
    if len(results) <= ROWS_SHOWN:
        table = Table("table", "bucket", "status")
        for result in results:
            table.add_row(
                str(result.name),
                str(result.bucket_id),
                "registered" if result.created else "already registered",
            )
        console.print(table)
    console.print(f"{created:,} table(s) registered, {len(results) - created:,} already registered")


@app.command("list")
def list_tables(
    bucket: Annotated[
        int | None, typer.Option("--bucket", min=1, help="Only tables in this bucket.")
    ] = None,
    limit: LimitOption = DEFAULT_LIMIT,
    output: FormatOption = OutputFormat.table,
) -> None:
    """List registered tables and their buckets, ordered by name."""
    with open_database() as db, db.sessions() as session:
        rows = registry.list_tables(session, limit=limit or None, bucket_id=bucket)
        total = registry.count_tables(session) if bucket is None else None
    if output is OutputFormat.json:
        print_json(
            [
                {"table_id": t_id, "name": f"{c}.{d}.{t}", "bucket_id": b}
                for t_id, c, d, t, b in rows
            ]
        )
        return
    table = Table("table", "bucket")
    for _id, catalog, database, name, bucket_id in rows:
        table.add_row(f"{catalog}.{database}.{name}", str(bucket_id))
    console.print(table)
    _print_truncation(len(rows), total, limit)


@app.command("drop")
def drop(name: Annotated[str, typer.Argument(help="The table, catalog.database.table.")]) -> None:
    """Remove a table from the registry (its bucket's count goes down by one)."""
    table_name = parse_table_name(name)
    with open_database() as db, db.sessions.begin() as session:
        bucket_id = registry.drop_table(session, table_name)
    console.print(f"dropped {table_name} (was in bucket {bucket_id})")


def mapping(
    table: Annotated[
        str | None, typer.Option("--table", help="Only this table (catalog.database.table).")
    ] = None,
    node: Annotated[
        str | None, typer.Option("--node", help="Only tables owned by this node.")
    ] = None,
    limit: LimitOption = DEFAULT_LIMIT,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Show which node owns which table (the table_assignment view)."""
    table_name = parse_table_name(table) if table is not None else None
    node_key = validate_node_key(node) if node is not None else None
    with open_database() as db, db.sessions() as session:
        rows = registry.mapping(session, table=table_name, node_key=node_key, limit=limit or None)
    if table_name is not None and not rows:
        raise NotFound(f"table {table_name} is not registered")
    if output is OutputFormat.json:
        print_json(
            [
                {"name": f"{c}.{d}.{t}", "bucket_id": b, "node_key": n, "epoch": e}
                for c, d, t, b, n, e in rows
            ]
        )
        return
    view = Table("table", "bucket", "node", "epoch")
    for catalog, database, name, bucket_id, node_key_, epoch in rows:
        view.add_row(
            f"{catalog}.{database}.{name}", str(bucket_id), node_key_ or "(unassigned)", str(epoch)
        )
    console.print(view)
    _print_truncation(len(rows), None, limit)


def _print_truncation(shown: int, total: int | None, limit: int) -> None:
    if limit and shown == limit:
        of = f" of {total:,}" if total is not None else ""
        console.print(f"showing the first {shown:,}{of}; --limit 0 shows all", style="dim")

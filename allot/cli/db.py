"""``allot db``: create and upgrade the schema; prune the history it keeps."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from allot import database, history
from allot.cli._common import FormatOption, OutputFormat, console, print_json
from allot.cli._context import open_database
from models.base import utcnow

app = typer.Typer(
    help="Create or upgrade the SQL schema; prune the run and plan history.",
    no_args_is_help=True,
)


@app.command("upgrade")
def upgrade(output: FormatOption = OutputFormat.table) -> None:
    """Create or upgrade the schema and the buckets 1..ALLOT_BUCKET_COUNT (safe to repeat)."""
    with open_database(check=False) as db:
        result = database.upgrade(db.engine, db.settings.bucket_count)
        url = database.safe_url(db.settings.database_url)
    if output is OutputFormat.json:
        print_json(
            {
                "database": url,
                "revision_before": result.revision_before,
                "revision": result.revision_after,
                "buckets_created": result.buckets_created,
                "bucket_count": result.bucket_count,
            }
        )
        return
    if result.revision_before == result.revision_after:
        console.print(f"{url}: schema already at revision {result.revision_after}")
    else:
        before = result.revision_before or "empty"
        console.print(f"{url}: schema upgraded from {before} to {result.revision_after}")
    if result.buckets_created:
        console.print(f"created buckets 1..{result.bucket_count}")
    else:
        console.print(f"{result.bucket_count} buckets in place")


@app.command("downgrade")
def downgrade(
    revision: Annotated[
        str, typer.Argument(help="Target revision; `base` removes allot's schema and data.")
    ],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Migrate the schema down to REVISION."""
    if not yes:
        typer.confirm(
            f"Downgrade the schema to {revision}? Data in dropped tables is lost", abort=True
        )
    with open_database(check=False) as db:
        database.downgrade(db.engine, revision)
    console.print(f"schema at revision {revision}")


@app.command("current")
def current(output: FormatOption = OutputFormat.table) -> None:
    """Print the schema revision of the database and the one this allot needs."""
    with open_database(check=False) as db, db.engine.connect() as connection:
        revision = database.current_revision(connection)
    head = database.head_revision()
    if output is OutputFormat.json:
        print_json({"revision": revision, "head": head, "up_to_date": revision == head})
        return
    state = "up to date" if revision == head else "run `allot db upgrade`"
    console.print(f"revision {revision or 'none'} (newest {head}): {state}")


@app.command("prune")
def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Rows deleted per transaction.")
    ] = history.BATCH_SIZE,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Delete the runs older than ALLOT_RUN_HISTORY_DAYS and the plans older than
    ALLOT_PLAN_HISTORY_DAYS, in batches, until none is left (beat's allot.prune does the same
    every few minutes, a minute at a time). Safe to repeat and to run next to workers.
    """
    with open_database() as db:
        cutoffs = history.Cutoffs.at(utcnow(), db.settings)
        if dry_run:
            report = history.count_prunable(db.sessions, cutoffs)
        else:
            shown = console.is_terminal and output is OutputFormat.table
            status = console.status("pruning") if shown else None

            def progress(kind: str, deleted: int) -> None:
                if status is not None:
                    status.update(f"pruning {kind}: {deleted:,} deleted")

            with status if status is not None else contextlib.nullcontext():
                report = history.prune(
                    db.sessions,
                    cutoffs,
                    batch_size=batch_size,
                    budget=float("inf"),
                    progress=progress,
                )
    if output is OutputFormat.json:
        print_json(report.to_json())
        return
    verb = "would delete" if dry_run else "deleted"
    console.print(
        f"{verb} {report.runs:,} runs started before {cutoffs.runs:%Y-%m-%d %H:%M:%S} UTC "
        f"and {report.plans:,} plans created before {cutoffs.plans:%Y-%m-%d %H:%M:%S} UTC",
        highlight=False,
        soft_wrap=True,
    )

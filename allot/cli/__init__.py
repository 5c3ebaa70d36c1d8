"""The ``allot`` command line (typer + rich).

Commands build objects, call the domain and print; no business logic lives here. Every read
command has ``--format json``. Errors a user can cause print one line on standard error and
exit non-zero, never a traceback.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.markup import escape

from allot.cli import cluster, db, pins, plan, plans, tables, verify, work
from allot.cli._common import err_console
from allot.cli._context import CliConfig
from allot.errors import AllotError

app = typer.Typer(
    name="allot",
    help="Shard a catalog of tables across worker nodes through fixed buckets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _configure(context: typer.Context) -> None:
    """Shard a catalog of tables across worker nodes through fixed buckets."""
    context.obj = CliConfig()


app.add_typer(db.app, name="db")
app.add_typer(tables.app, name="tables")
app.command("mapping")(tables.mapping)
app.command("plan")(plan.plan_command)
app.add_typer(plans.app, name="plans")
app.command("status")(cluster.status)
app.command("nodes")(cluster.nodes)
app.command("rebalance")(cluster.rebalance)
app.command("verify")(verify.verify)
app.add_typer(work.app, name="work")
app.command("pin")(pins.pin)
app.command("unpin")(pins.unpin)


def main() -> None:
    """Entry point of the ``allot`` console script."""
    # kazoo logs every dropped connection attempt; the command reports failures itself
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    try:
        app()
    except AllotError as exc:
        # the message is text, not markup: "[...]" in it (a task id, a path) is printed as is
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)

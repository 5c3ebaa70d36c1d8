"""``allot plan``: run the planner offline on a snapshot file and print the plan as JSON.

Touches nothing: no ZooKeeper, no database. Useful to see what the assigner would do, to compare
strategies, or to check a hand-written snapshot. The JSON on standard output is exactly what
:func:`allot.planner.plan_from_json` returns; the plan's warnings (no live node, a plan cut short
by ``max_moves``) are also written to standard error, one line each.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from allot.cli._common import err_console, print_json
from allot.cli._context import cli_config
from allot.errors import ConfigurationError, InvalidInput, InvalidSnapshot
from allot.planner import get_strategy, plan_from_json, strategy_names


def plan_command(
    input_file: Annotated[
        Path,
        typer.Option(
            "--input",
            "-i",
            help="Snapshot JSON file (see DESIGN.md, 'Planner contract'); `-` reads stdin.",
            show_default=False,
        ),
    ],
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy",
            "-s",
            help=f"Planner strategy: {', '.join(strategy_names())}. "
            "Default: ALLOT_STRATEGY (balanced).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Plan the moves for a snapshot and print the plan as JSON (offline, changes nothing).

    \f
    Raises:
        InvalidInput: the file cannot be read.
        InvalidSnapshot: the input is not JSON or breaks the snapshot contract.
        ConfigurationError: the strategy (option or ALLOT_STRATEGY) is unknown.
    """
    chosen = strategy if strategy is not None else cli_config().settings.strategy
    try:
        get_strategy(chosen)
    except ConfigurationError as exc:
        source = "--strategy" if strategy is not None else "ALLOT_STRATEGY"
        raise ConfigurationError(f"invalid {source}: {exc}") from None
    result = plan_from_json(read_snapshot(input_file), chosen)
    print_json(result)
    for warning in result["stats"]["warnings"]:
        err_console.print(f"warning: {warning}", highlight=False, soft_wrap=True, markup=False)


def read_snapshot(path: Path) -> Any:
    """Read and decode the JSON in ``path`` (``-``: standard input).

    Raises:
        InvalidInput: the file cannot be read or is not UTF-8.
        InvalidSnapshot: the text is not valid JSON (the message gives line and column).
    """
    source = "standard input" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read snapshot {source}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"cannot read snapshot {source}: not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidSnapshot(
            f"invalid snapshot: {source} is not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno})"
        ) from None

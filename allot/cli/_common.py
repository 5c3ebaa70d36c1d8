"""Helpers shared by the CLI commands: output format, consoles, printing."""

from __future__ import annotations

import enum
import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


class OutputFormat(enum.StrEnum):
    """How a read command prints: a table for people or JSON for scripts."""

    table = "table"
    json = "json"


TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=1, help="Seconds to wait for the workers.")
]
"""How long a command that sends a task waits for a worker's answer (default: 60 s)."""

FormatOption = Annotated[
    OutputFormat,
    typer.Option("--format", "-f", help="Output format: a table for people or JSON for scripts."),
]


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on standard output (no colour, no wrapping)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()

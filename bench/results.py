"""Shared by the benchmarks: the machine line, their tables, and writing one section of
bench/RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from rich.table import Table

HEADER = (
    "# Benchmark results\n\nEach section names its machine, date and the command that "
    "produced it.\n"
)


def machine() -> str:
    """``N CPUs (nproc), <CPU model>, Python X.Y.Z`` for this machine."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0))
    return f"{cpus} CPUs (nproc), {model}, Python {platform.python_version()}"


def make_table(title: str, columns: Iterable[str], left: Iterable[str] = ()) -> Table:
    """An empty table with these columns, right-justified but for those named in ``left``."""
    table = Table(title=title)
    flush_left = set(left)
    for column in columns:
        table.add_column(column, justify="left" if column in flush_left else "right")
    return table


def command_line() -> str:
    """How this benchmark was run: ``.venv/bin/python bench/<script>.py ARGS``."""
    return " ".join([".venv/bin/python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def record_section(path: Path, title: str, command: str, notes: list[str], text: str) -> None:
    """Write (or replace) the ``## {title}`` section of ``path``: machine, date, command,
    ``notes`` as bullets, then ``text`` (a printed table) in a code block. Other sections stay."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
    body = "\n".join(line.rstrip() for line in text.splitlines()).rstrip()
    bullets = "".join(f"- {note}\n" for note in notes)
    section = (
        f"## {title}\n\n- Machine: {machine()}\n- Date: {stamp}\n- Command: `{command}`\n"
        f"{bullets}\n```\n{body}\n```\n"
    )
    content = path.read_text() if path.exists() else HEADER
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(content):
        content = pattern.sub(lambda _: section + "\n", content).rstrip() + "\n"
    else:
        content = content.rstrip() + "\n\n" + section
    path.write_text(content)

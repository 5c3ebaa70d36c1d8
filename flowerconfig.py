"""Flower's options for allot: the one place `make run`, docker compose and the tests share.

Flower loads this file with ``celery -A tasks flower --conf=flowerconfig.py`` (it also looks for
``flowerconfig.py`` in the working directory by default) and reads each module-level name below
as the option of the same name. Flower applies its ``FLOWER_*`` environment variables first, then
this file, then the command line, each overriding the one before. So that the environment can
still change a value set here (docker compose does, with ``FLOWER_ADDRESS=0.0.0.0``), every value
is read from its ``FLOWER_*`` variable first and falls back to allot's default.

What allot asks of Flower:

- the task history survives a restart (``persistent``), saved every ``state_save_interval`` ms
  so a crash loses at most that much of it, in ``db`` (under ``var/`` by default);
- a bounded history (``max_tasks``; the oldest tasks are dropped first);
- HTTP basic auth, always: ``FLOWER_BASIC_AUTH=user:password`` (Flower's own variable; several
  pairs may be separated by commas) must be set, or Flower refuses to start;
- 127.0.0.1:5555 unless ``FLOWER_ADDRESS`` / ``FLOWER_PORT`` say otherwise;
- a result column on the task page, so each ``allot.assign`` run shows what it did, led by a
  one-line summary (``format_task``): ``applied (beat): epoch 4, 2 live, 1 offline, 12 moves``;
  the full result follows it. The HTTP API returns results unchanged.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent

if not os.environ.get("FLOWER_BASIC_AUTH", "").strip(":, "):
    sys.exit(
        "flowerconfig.py: FLOWER_BASIC_AUTH is not set; allot's Flower requires basic auth: "
        "set FLOWER_BASIC_AUTH=user:password (make run generates one and prints it)"
    )


def _setting(name: str, default: str) -> str:
    return os.environ.get(f"FLOWER_{name.upper()}") or default


address = _setting("address", "127.0.0.1")
port = int(_setting("port", "5555"))

persistent = True
db = _setting("db", str(_HERE / "var" / "flower" / "flower.db"))
state_save_interval = int(_setting("state_save_interval", "5000"))
max_tasks = int(_setting("max_tasks", "10000"))

# The result before the uuid: on a laptop screen the summary stays readable, the uuid (the link
# to the task's page) is cut first.
tasks_columns = _setting("tasks_columns", "name,state,received,runtime,worker,result,uuid")

_CYCLE_TASKS = ("allot.assign", "allot.rebalance", "allot.apply_plan")


def cycle_summary(result: Any) -> str | None:
    """One line for a cycle report (the result of ``allot.assign`` and its siblings), or None.

    Suspect and offline nodes are named only when there are some.

    >>> cycle_summary({"outcome": "applied", "trigger": "beat", "epoch": 4, "moves": 12,
    ...                "live": ["a", "b"], "suspect": [], "offline": ["c"]})
    'applied (beat): epoch 4, 2 live, 1 offline, 12 moves'
    """
    if not isinstance(result, dict) or "outcome" not in result or "epoch" not in result:
        return None
    parts = [f"{result['outcome']} ({result.get('trigger', '?')}): epoch {result['epoch']}"]
    for state in ("live", "suspect", "offline"):
        nodes = result.get(state)
        if isinstance(nodes, list) and (nodes or state == "live"):
            parts.append(f"{len(nodes)} {state}")
    moves = result.get("moves")
    if isinstance(moves, int):
        parts.append(f"{moves} move" if moves == 1 else f"{moves} moves")
    if result.get("plan_id"):
        parts.append(f"plan {str(result['plan_id'])[:12]}")
    line = ", ".join(parts)
    if result.get("reason"):
        line += f": {result['reason']}"
    return line


def format_task(task: Any) -> Any:
    """Flower's hook for the task list and page: lead an allot cycle's result with its summary."""
    if getattr(task, "name", None) in _CYCLE_TASKS and isinstance(task.result, str):
        try:
            summary = cycle_summary(ast.literal_eval(task.result))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            summary = None
        if summary:
            task.result = f"{summary} | {task.result}"
    return task


Path(db).parent.mkdir(parents=True, exist_ok=True)

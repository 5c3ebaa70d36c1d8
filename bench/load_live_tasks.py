"""The table task of bench/load_live.py (workers import this through ALLOT_TASK_MODULES).

``load.periodic`` runs every ``LOAD_PERIOD`` seconds for every table and sleeps the table's
cost: the seconds named for it in the JSON file ``LOAD_COSTS`` (``{"table": seconds}``, read
again when it changes, so the benchmark chooses its slow tables once it knows which node owns
which bucket), ``LOAD_BASE_COST`` for any other table.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from allot.work import TableContext, table_task

EVERY = float(os.environ.get("LOAD_PERIOD", "3"))
BASE_COST = float(os.environ.get("LOAD_BASE_COST", "0.05"))
COSTS = Path(os.environ.get("LOAD_COSTS", "/nonexistent"))
_read: dict[str, object] = {"mtime": None, "costs": {}}


def cost(table: str) -> float:
    """The seconds a run of ``table`` takes now."""
    try:
        mtime = COSTS.stat().st_mtime_ns
    except OSError:
        return BASE_COST
    if mtime != _read["mtime"]:
        _read["costs"] = json.loads(COSTS.read_text())
        _read["mtime"] = mtime
    costs = _read["costs"]
    assert isinstance(costs, dict)
    return float(costs.get(table, BASE_COST))


@table_task(name="load.periodic", every=EVERY)
def periodic(ctx: TableContext) -> None:
    """Sleep the table's cost, then commit (empty)."""
    time.sleep(cost(str(ctx.table)))

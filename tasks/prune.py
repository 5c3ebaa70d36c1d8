"""``allot.prune``: keep the run and plan history bounded (:mod:`allot.history`).

Beat sends it every :data:`~tasks.app.PRUNE_INTERVAL` seconds with an ``expires`` shorter than
that. A thin wrapper: it deletes what is older than ``ALLOT_RUN_HISTORY_DAYS`` /
``ALLOT_PLAN_HISTORY_DAYS`` in batches for at most :data:`allot.history.TIME_BUDGET` seconds
and returns what it deleted (Flower shows it). It needs SQL only, never ZooKeeper. Idempotent
and safe on several workers at once, so it acknowledges late.
"""

from __future__ import annotations

from allot.history import Cutoffs, prune
from allot.work.database import work_sql
from models.base import utcnow
from tasks.app import app


@app.task(name="allot.prune", acks_late=True)
def prune_history() -> dict[str, object]:
    """Delete the history older than the settings keep; return the :class:`PruneReport`."""
    sql = work_sql()
    return prune(sql.sessions, Cutoffs.at(utcnow(), sql.settings)).to_json()

"""Bounded history: how long the run and plan history is kept, and the pruning that keeps it
so, in bounded batches (``allot.prune`` every few minutes from beat; ``allot db prune``).

What is kept:
    Attempts (``table_task_run``) for ``ALLOT_RUN_HISTORY_DAYS`` (7), and never less than
    ``ALLOT_REDELIVERY_TIMEOUT``: a run's ``committed`` row is what a message delivered again
    is checked against (exactly once), so it outlives the time in which Redis can hand the
    message out again. That bound assumes the message was not then left waiting in a queue
    nobody consumes for longer than the history is kept. A row is written once, when its
    attempt has ended, so any old row may go.
    Plans (``plan`` and their ``plan_move`` rows) for ``ALLOT_PLAN_HISTORY_DAYS`` (30), except
    an ``applying`` plan, the newest plan and the newest applied one.

How: one transaction per batch of at most ``batch_size`` rows, oldest first, until nothing old
is left or the time budget is spent (the next run goes on where this one stopped). Every batch
is a ``DELETE ... WHERE id IN (SELECT id ... ORDER BY ... LIMIT n)``: idempotent, and safe in
several processes at once (PostgreSQL picks the rows ``FOR UPDATE SKIP LOCKED``). Takes a
session factory and commits each batch itself, so a long prune holds no lock for long.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from allot.cycle.plans import count_prunable_plans, prune_plans
from allot.settings import Settings
from allot.work.runs import count_prunable_runs, prune_runs

BATCH_SIZE = 5_000
"""Rows deleted per transaction: small enough that a batch holds its locks for well under a
second on PostgreSQL and SQLite, large enough that a day of busy history goes in minutes."""

TIME_BUDGET = 60.0
"""Seconds one prune may spend before it stops (between batches) and leaves the rest."""

DAY = 86_400.0

Progress = Callable[[str, int], None]
"""Told ``(kind, deleted so far)`` after every batch; ``kind`` is ``runs`` or ``plans``."""


@dataclass(frozen=True)
class Cutoffs:
    """Rows older than these go: attempts started before ``runs``, plans created before
    ``plans``."""

    runs: dt.datetime
    plans: dt.datetime

    @classmethod
    def at(cls, now: dt.datetime, settings: Settings) -> Cutoffs:
        """The cutoffs ``settings`` give at ``now`` (see the module docstring)."""
        kept_runs = max(settings.run_history_days * DAY, settings.redelivery_timeout)
        return cls(
            runs=now - dt.timedelta(seconds=kept_runs),
            plans=now - dt.timedelta(days=settings.plan_history_days),
        )


@dataclass
class PruneReport:
    """What one prune deleted (or, dry, would delete); ``complete`` is False when the time
    budget ran out with old rows left."""

    cutoffs: Cutoffs
    runs: int = 0
    plans: int = 0
    batches: int = 0
    complete: bool = True
    dry_run: bool = False
    seconds: float = field(default=0.0)

    def to_json(self) -> dict[str, object]:
        return {
            "runs_before": self.cutoffs.runs.isoformat(),
            "plans_before": self.cutoffs.plans.isoformat(),
            "runs": self.runs,
            "plans": self.plans,
            "batches": self.batches,
            "complete": self.complete,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
        }


def count_prunable(sessions: sessionmaker[Session], cutoffs: Cutoffs) -> PruneReport:
    """What :func:`prune` would delete now, deleting nothing (a count over the old rows)."""
    with sessions() as session:
        runs = count_prunable_runs(session, cutoffs.runs)
        plans = count_prunable_plans(session, cutoffs.plans)
    return PruneReport(cutoffs, runs=runs, plans=plans, dry_run=True)


def prune(
    sessions: sessionmaker[Session],
    cutoffs: Cutoffs,
    *,
    batch_size: int = BATCH_SIZE,
    budget: float = TIME_BUDGET,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> PruneReport:
    """Delete the attempts and plans older than ``cutoffs``, ``batch_size`` rows per committed
    transaction, attempts first, until none is left or ``budget`` seconds have passed.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: SQL failed; the batches committed before stay deleted.
    """
    report = PruneReport(cutoffs)
    started = clock()
    steps: list[tuple[str, Callable[[Session], int]]] = [
        ("runs", lambda session: prune_runs(session, cutoffs.runs, batch_size)),
        ("plans", lambda session: prune_plans(session, cutoffs.plans, batch_size)),
    ]
    for kind, step in steps:
        while True:
            if clock() - started >= budget:
                report.complete = False
                report.seconds = clock() - started
                return report
            with sessions.begin() as session:
                deleted = step(session)
            report.batches += 1
            setattr(report, kind, getattr(report, kind) + deleted)
            if progress is not None:
                progress(kind, getattr(report, kind))
            if deleted < batch_size:
                break
    report.seconds = clock() - started
    return report

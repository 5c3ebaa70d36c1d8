"""The tasks: ``allot.assign`` (the cycle), ``allot.rebalance`` (by hand), ``allot.apply_plan``.

Thin wrappers: each builds nothing but calls :class:`allot.cycle.AssignmentCycle` through the
process's :func:`~tasks.runtime.get_runtime` and returns the cycle's JSON report, which Flower
shows as the task result. All three are idempotent (a repeated cycle plans from the current
state; a repeated plan apply is refused or recognised), so they acknowledge late: a worker that
dies mid-task leaves the message for another worker.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from allot.cycle import AssignmentCycle
from allot.cycle.report import CycleOutcome, CycleReport
from allot.metrics.instruments import record_cycle, record_failed_cycle
from allot.zk.last_cycle import read_last_cycle
from tasks.app import app
from tasks.runtime import get_runtime

log = logging.getLogger(__name__)

# A grace-period follow-up is due this long after the deadline (an absolute time, taken from the
# clock of the cycle that saw the node go), so the node is offline when it runs. Workers' clocks
# that disagree by more than this make it run early: it then finds the node still suspect and
# schedules itself again for the deadline, by its own clock.
GRACE_MARGIN = 0.02
# Event-driven cycles (not beat ticks) that are skipped, aborted or fail retry once a second,
# this many times.
EVENT_TRIGGERS = ("membership", "grace")
EVENT_ATTEMPTS = 30


def _follow_up(report: CycleReport) -> None:
    """Schedule one cycle for the end of a grace period this cycle started (or, for a grace
    cycle, the next one still running), due at the deadline itself: the time this cycle took
    is not added to the wait."""
    if report.next_deadline_at is None or not (report.departed or report.trigger == "grace"):
        return
    due = dt.datetime.fromisoformat(report.next_deadline_at) + dt.timedelta(seconds=GRACE_MARGIN)
    assign.apply_async(kwargs={"trigger": "grace"}, eta=due)
    log.info("grace period of %s ends at %s: cycle scheduled", report.suspect, due.isoformat())


@app.task(name="allot.assign", acks_late=True)
def assign(
    trigger: str = "beat", attempt: int = 1, membership: int | None = None
) -> dict[str, Any]:
    """Run one assignment cycle; a held lock means ``skipped``.

    A membership or grace-period cycle that does not get its work done (skipped: the cycle
    holding the lock may have read the cluster before the event; aborted; or failed with an
    error) tries again a second later, up to :data:`EVENT_ATTEMPTS` times: an event must not
    wait for the next beat tick. A membership cycle (``membership``: the version of
    ``{root}/nodes`` it was sent for) stops retrying as soon as a finished cycle saw that
    version, so a burst of joins costs a handful of cycles, not one per join.
    """
    runtime = get_runtime()
    if attempt > 1 and membership is not None and _seen(runtime.cycle, membership):
        reason = f"a finished cycle already saw membership version {membership}"
        return CycleReport(CycleOutcome.SKIPPED, trigger, reason=reason).to_json()
    try:
        report = runtime.cycle.run(trigger, membership=membership)
    except Exception:
        record_failed_cycle(trigger)
        _retry_event(trigger, attempt, "failed", membership)
        raise
    record_cycle(report)
    if report.outcome in (CycleOutcome.SKIPPED, CycleOutcome.ABORTED):
        _retry_event(trigger, attempt, str(report.outcome), membership)
    _follow_up(report)
    return report.to_json()


def _seen(cycle: AssignmentCycle, membership: int) -> bool:
    """True when the last published cycle read membership version ``membership`` or later."""
    published = read_last_cycle(cycle.client, cycle.paths) or {}
    seen = published.get("membership")
    return isinstance(seen, int) and seen >= membership


def _retry_event(trigger: str, attempt: int, outcome: str, membership: int | None) -> None:
    if trigger in EVENT_TRIGGERS and attempt < EVENT_ATTEMPTS:
        kwargs = {"trigger": trigger, "attempt": attempt + 1, "membership": membership}
        assign.apply_async(kwargs=kwargs, countdown=1)
        log.info("%s cycle %s (attempt %d): trying again in 1 s", trigger, outcome, attempt)


@app.task(name="allot.rebalance", acks_late=True)
def rebalance(
    dry_run: bool = False, max_moves: int | None = None, lock_timeout: float = 30.0
) -> dict[str, Any]:
    """Run a cycle by hand, waiting up to ``lock_timeout`` s for the lock (calls serialize).

    ``dry_run`` records the plan as ``generated`` for ``allot plans apply``; ``max_moves``
    bounds the moves (orphans first).
    """
    report = get_runtime().cycle.run(
        "manual", dry_run=dry_run, max_moves=max_moves, lock_timeout=lock_timeout
    )
    record_cycle(report)
    _follow_up(report)
    return report.to_json()


@app.task(name="allot.apply_plan", acks_late=True)
def apply_plan(plan_id: str, lock_timeout: float = 30.0) -> dict[str, Any]:
    """Apply a ``generated`` plan unless it is stale (then it is ``rejected``)."""
    report = get_runtime().cycle.apply_stored(plan_id, lock_timeout=lock_timeout)
    record_cycle(report)
    return report.to_json()

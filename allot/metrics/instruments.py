"""The instruments allot's processes observe: cycles, moves, handoffs and table tasks.

Defined once here, with their help texts, and registered in no registry at import
(``registry=None``): :func:`allot.metrics.metrics_registry` adds them to the registry it builds,
or, in multiprocess mode, reads what every process of the node wrote instead.

In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before ``prometheus_client`` is first
imported) each process keeps its values in files of its own in that directory and the
collector sums them at scrape time, so a value observed in a Celery pool child is counted by the
node's main process, which serves the metrics. Counters and histograms need nothing more. There
is no gauge here on purpose: a gauge would need a ``multiprocess_mode`` and a
``mark_process_dead`` call when a child exits.

Every counter counts what happened in the processes of one node (one scrape target); the
cluster's total is ``sum without(instance) (...)`` in PromQL.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from allot.cycle.report import CycleOutcome, CycleReport
from models.states import RunStatus

CYCLE_FAILED = "failed"
"""The ``outcome`` of a cycle that raised instead of returning a report
(:func:`record_failed_cycle`); the other outcomes are
:class:`~allot.cycle.report.CycleOutcome`'s."""

CYCLE_OUTCOMES = (*(str(outcome) for outcome in CycleOutcome), CYCLE_FAILED)
"""Every value the ``outcome`` label of ``allot_cycles_total`` takes."""

TABLE_TASK_STATUSES = (RunStatus.COMMITTED, RunStatus.FENCED, RunStatus.FAILED)
"""The ``status`` values of ``allot_table_tasks_total``: how an attempt ended (not ``running``)."""

CYCLE_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
HANDOFF_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

CYCLES = Counter(
    "allot_cycles",
    "Assignment cycles run by this node's processes, by trigger (beat, membership, grace, "
    "manual, apply) and outcome (applied, unchanged, generated, skipped, aborted, rejected; "
    "failed: the cycle raised an error).",
    ["trigger", "outcome"],
    registry=None,
)
CYCLE_DURATION = Histogram(
    "allot_cycle_duration_seconds",
    "Seconds an assignment cycle held the lock (recovery, planning rounds, the ZooKeeper and "
    "SQL writes); cycles that did not get the lock are not observed.",
    buckets=CYCLE_DURATION_BUCKETS,
    registry=None,
)
MOVES = Counter(
    "allot_moves",
    "Buckets moved to another node by the plans this node's processes applied.",
    registry=None,
)
HANDOFF_DURATION = Histogram(
    "allot_handoff_duration_seconds",
    "Seconds this node took to hand over a bucket it lost: from dropping the bucket's queue to "
    "releasing its lease (running table tasks drain meanwhile, at most ALLOT_HANDOFF_TIMEOUT).",
    buckets=HANDOFF_DURATION_BUCKETS,
    registry=None,
)
TABLE_TASKS = Counter(
    "allot_table_tasks",
    "Table task attempts that ended in this node's processes, by task name and status "
    "(committed; fenced: the commit was refused because the bucket moved; failed).",
    ["task", "status"],
    registry=None,
)

INSTRUMENTS = (CYCLES, CYCLE_DURATION, MOVES, HANDOFF_DURATION, TABLE_TASKS)
"""Every process-local instrument, for :func:`allot.metrics.metrics_registry`."""


def record_cycle(report: CycleReport) -> None:
    """Count a cycle that returned ``report``: its trigger and outcome, how long it held the
    lock (``duration_ms``, when it planned at all) and, for an applied plan, its moves."""
    CYCLES.labels(trigger=report.trigger, outcome=str(report.outcome)).inc()
    if report.duration_ms > 0:
        CYCLE_DURATION.observe(report.duration_ms / 1000)
    if report.outcome is CycleOutcome.APPLIED and report.moves:
        MOVES.inc(report.moves)


def record_failed_cycle(trigger: str) -> None:
    """Count a cycle that raised instead of returning a report (outcome ``failed``)."""
    CYCLES.labels(trigger=trigger, outcome=CYCLE_FAILED).inc()


def record_table_task(task: str, status: RunStatus | str) -> None:
    """Count one attempt at table task ``task`` that ended with ``status``.

    Raises:
        ValueError: ``status`` is not ``committed``, ``fenced`` or ``failed`` (an attempt
            still ``running`` has not ended).
    """
    if status not in TABLE_TASK_STATUSES:
        raise ValueError(f"a table task ends committed, fenced or failed, not {str(status)!r}")
    TABLE_TASKS.labels(task=task, status=str(status)).inc()

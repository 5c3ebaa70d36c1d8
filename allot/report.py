"""The summary of one assignment cycle: what Flower shows as the task's result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from allot.planner import Plan

APPLIED, UNCHANGED, GENERATED, SKIPPED, ABORTED, REJECTED = (
    "applied",
    "unchanged",
    "generated",
    "skipped",
    "aborted",
    "rejected",
)


def moves_by_node(plan: Plan) -> dict[str, dict[str, int]]:
    """``{node: {"in": n, "out": m}}`` for every node a plan moves buckets to or from."""
    counts: dict[str, dict[str, int]] = {}
    for move in plan.moves:
        counts.setdefault(move.target, {"in": 0, "out": 0})["in"] += 1
        if move.source is not None:
            counts.setdefault(move.source, {"in": 0, "out": 0})["out"] += 1
    return dict(sorted(counts.items()))


@dataclass
class CycleReport:
    """What one cycle did, JSON-able (the Celery task returns :meth:`to_json`).

    ``outcome``: ``applied`` (a plan was written to ZooKeeper and SQL), ``unchanged`` (nothing
    to move), ``generated`` (a dry run recorded a plan), ``skipped`` (another cycle held the
    lock), ``aborted`` (the session was interrupted or someone else applied first; nothing was
    written by this cycle), ``rejected`` (a stored plan was refused, e.g. as stale).
    """

    outcome: str
    trigger: str
    epoch: int = 0
    plan_id: str | None = None
    live: list[str] = field(default_factory=list)
    suspect: list[str] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)
    joined: list[str] = field(default_factory=list)
    departed: list[str] = field(default_factory=list)
    moves: int = 0
    min_moves: int = 0
    moves_by_node: dict[str, dict[str, int]] = field(default_factory=dict)
    spread_before: float = 0
    spread_after: float = 0
    buckets: dict[str, int] = field(default_factory=dict)
    next_deadline: float | None = None
    recovered: list[str] = field(default_factory=list)
    corrupt: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    reason: str | None = None
    rounds: int = 1
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: float = 0

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-able dict (what Flower shows and ``allot status`` prints)."""
        return asdict(self)

    def headline(self) -> str:
        """One line for logs: outcome, epoch, nodes, moves."""
        text = (
            f"cycle {self.outcome} ({self.trigger}): epoch {self.epoch}, "
            f"{len(self.live)} live / {len(self.suspect)} suspect / {len(self.offline)} offline, "
            f"{self.moves} move(s)"
        )
        return text if self.reason is None else f"{text}: {self.reason}"

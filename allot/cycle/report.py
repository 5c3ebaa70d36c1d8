"""The summary of one assignment cycle: what Flower shows as the task's result (its copy at
``{root}/last-cycle``, which ``allot status`` shows, is kept by :mod:`allot.zk.last_cycle`)."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field, fields
from typing import Any

from allot.cycle.observe import Observation
from allot.planner import Plan


class CycleOutcome(enum.StrEnum):
    """What a cycle did.

    ``applied``: a plan was written to ZooKeeper and SQL. ``unchanged``: nothing to move.
    ``generated``: a dry run recorded a plan. ``skipped``: another cycle held the lock.
    ``aborted``: the session was interrupted or someone else applied first; nothing was
    written by this cycle. ``rejected``: a stored plan was refused, e.g. as stale.
    """

    APPLIED = "applied"
    UNCHANGED = "unchanged"
    GENERATED = "generated"
    SKIPPED = "skipped"
    ABORTED = "aborted"
    REJECTED = "rejected"


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

    ``outcome`` is a :class:`CycleOutcome`. A report of a cycle that read the cluster is built
    by :meth:`from_round`; one that stopped before (``skipped``, ``aborted``) names only its
    outcome, trigger and ``reason``. ``repaired`` says what was dropped from stored lists a
    foreign writer made unplannable, ``foreign`` which ``nodes/`` children were ignored, ``sql``
    why SQL fell behind (None while it keeps up), ``worker`` which process ran the cycle
    (``host:pid``, its lock identifier), ``membership`` the version of ``{root}/nodes`` its
    last round read. ``load_ratio_before``/``load_ratio_after``: the largest load of a live
    node over its fair share, before and after the plan (None when the cycle read no load: a
    strategy other than ``load``); ``pins_ignored``: the pins the plan could not keep,
    ``{"bucket","node","reason"}`` (the node is not live: the bucket is placed as if unpinned).
    ``next_deadline`` is in seconds from the round's clock,
    ``next_deadline_at`` the same moment as an ISO time (when the first suspect node turns
    offline). ``steps`` is where the cycle's time went, in ms per step (``lock``, ``recover``,
    ``settle``, ``read``, ``plan``, ``records``, ``zookeeper``, ``sql``, ``finish``; summed
    over rounds).
    """

    outcome: CycleOutcome
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
    load_ratio_before: float | None = None
    load_ratio_after: float | None = None
    pins_ignored: list[dict[str, Any]] = field(default_factory=list)
    buckets: dict[str, int] = field(default_factory=dict)
    next_deadline: float | None = None
    next_deadline_at: str | None = None
    recovered: list[str] = field(default_factory=list)
    corrupt: dict[str, str] = field(default_factory=dict)
    repaired: dict[str, str] = field(default_factory=dict)
    foreign: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    sql: str | None = None
    worker: str = ""
    membership: int = -1
    reason: str | None = None
    rounds: int = 1
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: float = 0
    steps: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_round(
        cls,
        outcome: CycleOutcome,
        trigger: str,
        seen: Observation,
        planned: Plan,
        plan_id: str | None = None,
        *,
        epoch: int | None = None,
        reason: str | None = None,
    ) -> CycleReport:
        """The report of a round that read the cluster (``seen``) and made ``planned``.

        ``epoch`` is the assignment epoch after the round (default: the epoch ``seen`` read;
        an applied plan gives its new one). ``departed`` lists the nodes first seen gone by
        this round.
        """
        stats = planned.stats
        classes = seen.classes
        measured = seen.measured.load
        return cls(
            outcome=outcome,
            trigger=trigger,
            epoch=seen.snapshot.version.epoch if epoch is None else epoch,
            plan_id=plan_id,
            live=sorted(classes.live),
            suspect=sorted(classes.suspect),
            offline=list(classes.offline),
            joined=list(classes.joined),
            departed=list(classes.newly_departed),
            moves=stats.moves,
            min_moves=stats.min_moves,
            moves_by_node=moves_by_node(planned),
            spread_before=stats.spread_before,
            spread_after=stats.spread_after,
            buckets={key: len(buckets) for key, buckets in planned.assignments.items()},
            next_deadline=classes.next_deadline,
            next_deadline_at=(
                None
                if classes.next_deadline is None
                else (seen.now + dt.timedelta(seconds=classes.next_deadline)).isoformat()
            ),
            membership=seen.members.version,
            corrupt=dict(seen.snapshot.corrupt),
            repaired=dict(seen.repairs),
            foreign=seen.members.ignored(),
            warnings=list(stats.warnings) + list(seen.measured.problems),
            reason=reason,
            load_ratio_before=None if measured is None else stats.load_ratio_before,
            load_ratio_after=None if measured is None else stats.load_ratio_after,
            pins_ignored=[pin.to_json() for pin in stats.pins_ignored],
        )

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-able dict (what Flower shows and ``allot status`` prints);
        the outcome is its plain string."""
        # shallow: every field is JSON-able already (a deep copy costs ~20 ms at 1,000 nodes)
        data = {item.name: getattr(self, item.name) for item in fields(self)}
        data["outcome"] = str(self.outcome)
        return data

    def headline(self) -> str:
        """One line for logs: outcome, epoch, nodes, moves."""
        text = (
            f"cycle {self.outcome} ({self.trigger}): epoch {self.epoch}, "
            f"{len(self.live)} live / {len(self.suspect)} suspect / {len(self.offline)} offline, "
            f"{self.moves} move(s)"
        )
        return text if self.reason is None else f"{text}: {self.reason}"

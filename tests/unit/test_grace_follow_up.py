"""When the grace period's follow-up cycle is due (tasks.assign._follow_up), pure: the send is
captured instead of reaching a broker."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from allot.cycle.report import CycleOutcome, CycleReport
from tasks import assign

DEADLINE = dt.datetime(2026, 12, 7, 12, 0, 2, tzinfo=dt.UTC)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(assign.assign, "apply_async", lambda **kwargs: calls.append(kwargs))
    return calls


def report(trigger: str, departed: list[str]) -> CycleReport:
    return CycleReport(
        CycleOutcome.UNCHANGED,
        trigger,
        suspect=["b@h"],
        departed=departed,
        next_deadline=2.0,
        next_deadline_at=DEADLINE.isoformat(),
    )


def test_the_follow_up_is_due_at_the_deadline_not_after_the_cycle(
    sent: list[dict[str, Any]],
) -> None:
    # Given a cycle that saw b go, however long it took afterwards
    assign._follow_up(report("membership", ["b@h"]))
    # Then the grace cycle is due at the deadline by that cycle's clock, plus the margin
    [call] = sent
    assert call["eta"] == DEADLINE + dt.timedelta(seconds=assign.GRACE_MARGIN)
    assert call["kwargs"] == {"trigger": "grace"}


def test_a_grace_cycle_that_ran_early_schedules_itself_again(sent: list[dict[str, Any]]) -> None:
    assign._follow_up(report("grace", []))
    assert [call["eta"] for call in sent] == [DEADLINE + dt.timedelta(seconds=assign.GRACE_MARGIN)]


def test_a_beat_cycle_with_a_known_suspect_schedules_nothing(sent: list[dict[str, Any]]) -> None:
    assign._follow_up(report("beat", []))
    assert sent == []

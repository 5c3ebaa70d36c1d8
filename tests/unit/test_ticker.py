"""The periodic ticker: one tick per bucket per period, a period still running is not doubled,
and a tick whose result never shows up (expired, lost with Redis) holds its bucket back only
for a bounded time."""

from __future__ import annotations

from celery import Celery

from allot.work import TableContext, table_task
from allot.work.periodic import Ticker


@table_task(name="unit.every10", every=10)
def every10(ctx: TableContext) -> None:
    """A periodic table task of this test."""


def test_an_unfinished_tick_holds_its_bucket_back_only_until_its_patience_ends() -> None:
    app = Celery("unit-ticker", broker="memory://", backend="cache+memory://")
    now = [1000.0]
    ticker = Ticker(app, "c", wall=lambda: now[0], patience=30)
    assert ticker.tick(frozenset({1})) == 1
    assert ticker.tick(frozenset({1})) == 0  # same period: nothing more
    now[0] = 1010.0  # next period; the first tick never reported a result
    assert ticker.tick(frozenset({1})) == 0
    now[0] = 1041.0  # one period plus the patience after it was sent
    assert ticker.tick(frozenset({1})) == 1

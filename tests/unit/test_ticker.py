"""Periodic work: the ticker sends one tick per bucket per period, and the tick's decision
(:func:`due_tables`) sends a table its next period only once its previous run finished, never
twice for one period, and gives up waiting on a lost result after a bounded time."""

from __future__ import annotations

from celery import Celery

from allot.work import TableContext, table_task
from allot.work.periodic import Ticker, due_tables, period_run_id, tick_id
from allot.work.task import table_tasks


@table_task(name="unit.every10", every=10)
def every10(ctx: TableContext) -> None:
    """A periodic table task of this test."""


def sent_ticks(app: Celery) -> list[str]:
    return [str(call["task_id"]) for call in app.sent]


def recording_app() -> Celery:
    """A Celery app whose ``send_task`` only records what it was asked to send."""
    app = Celery("unit-ticker", broker="memory://", backend="cache+memory://")
    app.sent = []

    def send_task(name: str, **options: object) -> None:
        app.sent.append({"name": name, **options})

    app.send_task = send_task
    return app


def test_the_ticker_sends_one_tick_per_bucket_per_period_whatever_the_previous_ticks() -> None:
    # Given a node serving buckets 1 and 2
    app = recording_app()
    now = [1000.0]
    ticker = Ticker(app, "c", wall=lambda: now[0])
    # When it passes twice in a period, then once in the next (the first ticks never finished)
    # (other periodic table tasks the process registered tick too: only this one is counted)
    periodic = [spec.name for spec in table_tasks().values() if spec.every is not None]
    assert "unit.every10" in periodic
    assert ticker.tick(frozenset({1, 2})) >= 2
    assert ticker.tick(frozenset({1, 2})) == 0
    now[0] = 1010.0
    assert ticker.tick(frozenset({1, 2})) >= 2
    # Then each bucket got one tick per period: the tick decides per table, not the ticker
    ticks = [t for t in sent_ticks(app) if t.startswith("tick:unit.every10:")]
    assert ticks == [
        tick_id("unit.every10", 1, 100),
        tick_id("unit.every10", 2, 100),
        tick_id("unit.every10", 1, 101),
        tick_id("unit.every10", 2, 101),
    ]


def test_a_table_is_due_when_its_previous_run_finished_or_never_ran() -> None:
    # Given table 1 never sent, 2 whose run of period 9 finished, 3 whose run of 9 still runs
    last = {2: 9, 3: 9}
    # When period 10 is ticked: Then 1 and 2 are sent, 3 skips the period
    assert due_tables([1, 2, 3], 10, last, finished={2}, every=10, patience=30) == [1, 2]


def test_a_period_is_never_sent_twice_nor_after_a_later_one() -> None:
    # Given a table sent period 10 (its run finished)
    last = {1: 10}
    # When period 10 is ticked again (a duplicate tick) or period 9 comes late: Then nothing
    assert due_tables([1], 10, last, finished={1}, every=10, patience=30) == []
    assert due_tables([1], 9, last, finished={1}, every=10, patience=30) == []


def test_an_unfinished_run_holds_its_table_back_only_until_its_patience_ends() -> None:
    # Given a table whose run of period 100 never reported a result (every 10 s, patience 30 s)
    last = {1: 100}
    # Then periods up to one period plus the patience later are skipped, the next is sent
    assert due_tables([1], 104, last, finished=set(), every=10, patience=30) == []
    assert due_tables([1], 105, last, finished=set(), every=10, patience=30) == [1]


def test_a_period_run_id_names_the_task_the_table_and_the_period() -> None:
    assert period_run_id("demo.compact", 42, 7) == "demo.compact:42:7"

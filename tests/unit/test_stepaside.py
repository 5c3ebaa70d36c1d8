"""When :class:`allot.work.stepaside.BrokerWatch` steps aside and comes back (a clock of the
test's own; the probes' outcomes given directly)."""

from __future__ import annotations

import pytest

from allot.work.stepaside import BrokerWatch, ProbeFailed, Standing, consumer_probe


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def watch(clock: Clock, calls: list[str], fail_actions: int = 0) -> BrokerWatch:
    failures = [fail_actions]

    def step_aside(why: str) -> None:
        if failures[0] > 0:
            failures[0] -= 1
            raise RuntimeError("ZooKeeper refused")
        calls.append(f"aside: {why}")

    return BrokerWatch(
        [], 10.0, step_aside=step_aside, come_back=lambda: calls.append("back"), clock=clock
    )


def run(broker: BrokerWatch, clock: Clock, outcomes: str) -> list[Standing]:
    """One probe per second: ``.`` passed, ``x`` failed."""
    seen = []
    for outcome in outcomes:
        clock.now += 1.0
        seen.append(broker.observe("" if outcome == "." else "cut"))
    return seen


def test_failures_shorter_than_the_limit_never_step_aside() -> None:
    clock, calls = Clock(), list[str]()
    broker = watch(clock, calls)
    run(broker, clock, "xxxxxxxxx." * 5)
    assert calls == []
    assert broker.standing is Standing.SERVING


def test_it_steps_aside_once_no_probe_passed_for_the_limit_and_says_why() -> None:
    clock, calls = Clock(), list[str]()
    broker = watch(clock, calls)
    seen = run(broker, clock, "." + "x" * 15)
    assert seen.index(Standing.STEPPED_ASIDE) == 10  # 10 s after the last probe that passed
    assert calls == ["aside: cut"]


def test_it_comes_back_only_after_passing_for_the_limit_in_a_row() -> None:
    clock, calls = Clock(), list[str]()
    broker = watch(clock, calls)
    run(broker, clock, "x" * 10)
    assert broker.standing is Standing.STEPPED_ASIDE
    run(broker, clock, "........x" * 3)  # flapping: never 10 s in a row
    assert calls == ["aside: cut"]
    seen = run(broker, clock, "." * 12)
    assert seen.index(Standing.SERVING) == 10
    assert calls == ["aside: cut", "back"]


def test_a_step_aside_that_fails_is_tried_again_at_the_next_probe() -> None:
    clock, calls = Clock(), list[str]()
    broker = watch(clock, calls, fail_actions=2)
    assert run(broker, clock, "x" * 10)[-1] is Standing.SERVING
    assert run(broker, clock, "xx")[-1] is Standing.STEPPED_ASIDE
    assert calls == ["aside: cut"]


def test_the_consumer_probe_fails_when_the_heartbeat_was_not_stamped() -> None:
    beats = iter([True, False])
    probe = consumer_probe(lambda: next(beats))
    probe()
    with pytest.raises(ProbeFailed, match="wedged"):
        probe()


def test_a_limit_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="> 0"):
        BrokerWatch([], 0.0, step_aside=print, come_back=print)


def test_it_marks_itself_at_each_change_between_passing_and_failing_only() -> None:
    clock, marks = Clock(), list[bool]()
    broker = BrokerWatch(
        [], 10.0, step_aside=print, come_back=print, mark=marks.append, clock=clock
    )
    run(broker, clock, "..xxx..x")
    assert marks == [False, True, False, True]


def test_it_stays_while_no_other_node_reaches_the_broker_and_goes_once_one_does() -> None:
    clock, calls = Clock(), list[str]()
    others = [False]
    broker = BrokerWatch(
        [],
        10.0,
        step_aside=lambda why: calls.append("aside"),
        come_back=lambda: calls.append("back"),
        others_consume=lambda: others[0],
        clock=clock,
    )
    run(broker, clock, "x" * 30)  # the broker is down for everyone
    assert broker.standing is Standing.SERVING
    assert calls == []
    others[0] = True  # the others reach it again; this node still does not
    assert run(broker, clock, "x") == [Standing.STEPPED_ASIDE]
    assert calls == ["aside"]

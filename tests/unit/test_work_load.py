"""The sliding window of bucket load (allot.work.load.LoadWindow), pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from allot.work.load import LoadWindow


def test_the_window_sums_what_ran_within_it_and_forgets_the_rest() -> None:
    window = LoadWindow(10)
    assert window.observe(0, {}) == {}
    assert window.observe(1, {1: 2.0}) == {1: 2.0}
    assert window.observe(5, {1: 3.0, 2: 1.0}) == {1: 3.0, 2: 1.0}
    assert window.observe(11, {1: 3.0, 2: 1.0}) == {1: 1.0, 2: 1.0}
    assert window.observe(15, {1: 3.0, 2: 1.0}) == {}


def test_an_unchanged_total_adds_nothing() -> None:
    window = LoadWindow(10)
    window.observe(1, {4: 2.0})
    assert window.observe(2, {4: 2.0}) == {4: 2.0}


def test_a_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        LoadWindow(0)


@given(
    st.lists(st.tuples(st.integers(1, 5), st.floats(0.001, 100, allow_nan=False)), min_size=1),
    st.floats(1, 50),
)
def test_the_window_equals_the_sum_of_the_increments_it_covers(
    runs: list[tuple[int, float]], width: float
) -> None:
    # one run ends per tick (time t = its index); the window covers the ticks in (t - width, t]
    window = LoadWindow(width)
    totals: dict[int, float] = {}
    for now, (bucket, seconds) in enumerate(runs):
        totals[bucket] = totals.get(bucket, 0.0) + seconds
        sums = window.observe(float(now), totals)
        expected: dict[int, float] = {}
        for then, (b, s) in enumerate(runs[: now + 1]):
            if then > now - width:
                expected[b] = expected.get(b, 0.0) + s
        assert sums.keys() == expected.keys()
        for b, s in expected.items():
            assert sums[b] == pytest.approx(s, rel=1e-6, abs=1e-6)

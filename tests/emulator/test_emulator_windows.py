"""The emulator's own rate windows, exactly, with injected times.

Every zero-429 test trusts these windows, so they are checked against plain reference models:
the sliding log admits an arrival iff fewer than ``count`` admissions lie in
``(now - period, now]``; Laravel's fixed window is opened by the first hit and admits ``count``
hits in ``[start, start + period)``; refusals count in neither. Times are multiples of 1/8 so
every boundary is hit exactly in floating point.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esim_async import Rate
from esim_async.testing.limits import Window

from ..arrivals import max_in_any_window


def run(window: Window, times: list[float]) -> list[float | None]:
    """The window's answer to each arrival: ``None`` (admitted) or the wait it announced."""
    return [window.hit(t) for t in times]


def admitted(times: list[float], answers: list[float | None]) -> list[float]:
    return [t for t, a in zip(times, answers, strict=True) if a is None]


def sliding_reference(rate: Rate, times: list[float]) -> list[float | None]:
    """A sliding log, the slow and obvious way."""
    kept: list[float] = []
    out: list[float | None] = []
    for now in times:
        inside = [h for h in kept if now - rate.period < h <= now]
        if len(inside) < rate.count:
            kept.append(now)
            out.append(None)
        else:
            out.append(min(inside) + rate.period - now)
    return out


def fixed_reference(rate: Rate, times: list[float]) -> list[float | None]:
    """Laravel's limiter: the first hit opens a window of ``period``; refusals do not count."""
    start: float | None = None
    hits = 0
    out: list[float | None] = []
    for now in times:
        if start is None or now >= start + rate.period:
            start, hits = now, 0
        if hits >= rate.count:
            out.append(start + rate.period - now)
        else:
            hits += 1
            out.append(None)
    return out


# ------------------------------------------------------------------ sliding


def test_sliding_admits_count_per_window_and_not_one_more() -> None:
    w = Window(Rate(3, 10.0), "sliding")
    assert run(w, [0.0, 1.0, 2.0]) == [None, None, None]
    # The fourth inside the window is refused until the oldest admission leaves it.
    assert w.hit(3.0) == 7.0
    assert w.hit(9.875) == 0.125
    assert w.remaining() == 0


def test_sliding_boundary_is_half_open() -> None:
    w = Window(Rate(3, 10.0), "sliding")
    run(w, [0.0, 1.0, 2.0])
    # Exactly one period after an admission it has left the window: [t, t + period).
    assert w.hit(10.0) is None
    assert w.hit(10.5) == 0.5  # window (0.5, 10.5] holds 1, 2, 10
    assert w.hit(11.0) is None
    assert w.hit(12.0) is None
    assert w.hit(12.0) == 8.0  # 10, 11, 12 fill (2, 12]


def test_sliding_refusals_do_not_count() -> None:
    w = Window(Rate(2, 4.0), "sliding")
    assert run(w, [0.0, 0.0]) == [None, None]
    assert run(w, [1.0, 2.0, 3.0, 3.5]) == [3.0, 2.0, 1.0, 0.5]
    # The refused arrivals above did not renew the window.
    assert run(w, [4.0, 4.0, 4.0]) == [None, None, 4.0]


@pytest.mark.parametrize(("first", "period"), [(0.1, 0.2), (0.7, 0.1), (1.1, 2.2), (0.3, 0.6)])
def test_sliding_admits_at_the_instant_it_announced(first: float, period: float) -> None:
    """A client that waits exactly the announced time is admitted, whatever float rounding
    does to ``first + period - period``."""
    w = Window(Rate(1, period), "sliding")
    assert w.hit(first) is None
    wait = w.hit(first)
    assert wait is not None and abs(wait - period) < 1e-12
    assert w.hit(first + wait) is None


@given(
    first=st.floats(min_value=0.0, max_value=1e6),
    period=st.floats(min_value=1e-3, max_value=1e4),
    algorithm=st.sampled_from(["sliding", "fixed"]),
)
def test_any_window_admits_at_the_instant_it_announced(
    first: float, period: float, algorithm: str
) -> None:
    w = Window(Rate(1, period), algorithm)  # type: ignore[arg-type]
    assert w.hit(first) is None
    wait = w.hit(first)
    assert wait is not None and wait > 0
    assert w.hit(first + wait) is None


eighths = st.lists(st.integers(min_value=0, max_value=24), min_size=1, max_size=60)


@given(
    gaps=eighths,
    count=st.integers(min_value=1, max_value=5),
    period8=st.integers(min_value=1, max_value=24),
)
def test_sliding_matches_the_reference(gaps: list[int], count: int, period8: int) -> None:
    rate = Rate(count, period8 / 8)
    times: list[float] = []
    t = 0
    for g in gaps:
        t += g
        times.append(t / 8)
    answers = run(Window(rate, "sliding"), times)
    assert answers == sliding_reference(rate, times)
    assert max_in_any_window(admitted(times, answers), rate.period) <= rate.count


# ------------------------------------------------------------------ fixed (Laravel)


def test_fixed_window_is_opened_by_the_first_hit() -> None:
    w = Window(Rate(3, 10.0), "fixed")
    # Not aligned to a clock grid: the first hit at 5 opens [5, 15).
    assert run(w, [5.0, 6.0, 14.5]) == [None, None, None]
    assert w.hit(14.875) == 0.125
    # At 15 the window has ended: the next hit opens [15, 25).
    assert run(w, [15.0, 16.0, 17.0]) == [None, None, None]
    assert w.hit(18.0) == 7.0
    assert w.hit(24.875) == 0.125
    # After a quiet spell the next window starts at the hit, not at a multiple of the period.
    assert run(w, [37.25, 37.5, 46.0, 47.0]) == [None, None, None, 0.25]
    assert w.hit(47.25) is None


def test_fixed_window_refusals_do_not_count_or_reopen() -> None:
    w = Window(Rate(1, 2.0), "fixed")
    assert w.hit(0.0) is None
    assert run(w, [0.5, 1.0, 1.5]) == [1.5, 1.0, 0.5]
    assert w.hit(2.0) is None  # the window the first hit opened ended at 2
    assert w.hit(2.0) == 2.0


def test_fixed_window_admits_a_double_burst_across_its_boundary() -> None:
    """Laravel's fixed windows admit ``count - 1`` at the end of one window (its first hit
    opened it) and ``count`` more at the start of the next: ``2 x count - 1`` inside one
    period. Clients must not rely on it."""
    rate = Rate(3, 10.0)
    w = Window(rate, "fixed")
    times = [0.0, 9.5, 9.75, 10.0, 10.25, 10.5, 10.75]
    answers = run(w, times)
    assert answers == [None, None, None, None, None, None, 9.25]
    assert max_in_any_window(admitted(times, answers), rate.period) == 5


@given(
    gaps=eighths,
    count=st.integers(min_value=1, max_value=5),
    period8=st.integers(min_value=1, max_value=24),
)
def test_fixed_matches_the_reference(gaps: list[int], count: int, period8: int) -> None:
    rate = Rate(count, period8 / 8)
    times: list[float] = []
    t = 0
    for g in gaps:
        t += g
        times.append(t / 8)
    answers = run(Window(rate, "fixed"), times)
    assert answers == fixed_reference(rate, times)
    # Never more than 2 x count - 1 in any window of one period (see the double burst above).
    assert max_in_any_window(admitted(times, answers), rate.period) <= 2 * rate.count - 1


@pytest.mark.parametrize("algorithm", ["sliding", "fixed"])
def test_a_waiting_client_is_never_refused(algorithm: str) -> None:
    """Arrivals that each wait what the window announced are all admitted on that retry, and a
    dense stream then admits exactly ``count`` per ``period`` on average."""
    rate = Rate(4, 1.0)
    w = Window(rate, algorithm)  # type: ignore[arg-type]
    rng = random.Random(5)
    now, done = 0.0, []
    for _ in range(200):
        now += rng.choice([0.0, 0.0, 0.03125, 0.0625])
        wait = w.hit(now)
        if wait is not None:
            now += wait
            assert w.hit(now) is None
        done.append(now)
    assert max_in_any_window(done, rate.period) <= (
        rate.count if algorithm == "sliding" else 2 * rate.count - 1
    )
    assert done[-1] >= (len(done) / rate.count - 1) * rate.period

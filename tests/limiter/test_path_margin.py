"""The margin follows the path over both window stores: the spread a limiter observes widens
the windows it asks its store for (each process its own), and a 429 at the limit of a jittery
path widens it further instead of halving the rate."""

from __future__ import annotations

import pytest

from ..arrivals import max_in_any_window
from .conftest import Rig
from .test_contract import send


def jitter(rig: Rig, lim: object, low: float, high: float) -> None:
    """Twenty requests answered now, after ``low`` and ``high`` periods alternately."""
    now = rig.clock.now()
    for i in range(20):
        lim.observe(now - (high if i % 2 else low) * rig.unit, now)  # type: ignore[attr-defined]


async def test_the_windows_widen_by_the_observed_spread(rig: Rig) -> None:
    lim = rig.limiter(rig.rate(2), rig.rate(1, 2))
    jitter(rig, lim, 0.1, 0.4)  # a spread of 0.3 periods
    state = lim.state()
    assert state.margin == pytest.approx(0.3)
    assert state.path_spread == pytest.approx(0.3 * rig.unit)
    sends: list[float] = []
    for key in "abcd":
        await send(rig, await lim.acquire(key), sends)
    # 2 per period widened by 0.3 periods: never 3 in 1.3 periods
    assert max_in_any_window(sends, 1.3 * rig.unit) == 2
    keyed: list[float] = []
    for _ in range(2):
        await send(rig, await lim.acquire("k"), keyed)
    assert max_in_any_window(keyed, 2.3 * rig.unit) == 1  # the key's window widens alike


async def test_a_clean_path_keeps_the_windows_at_their_margin(rig: Rig) -> None:
    lim = rig.limiter(rig.rate(2))
    jitter(rig, lim, 0.1, 0.1)
    assert lim.state().margin == 0.0
    sends: list[float] = []
    for _ in range(4):
        await send(rig, await lim.acquire(), sends)
    assert max_in_any_window(sends, rig.unit) == 2


async def test_a_429_at_the_limit_of_a_jittery_path_keeps_the_rate(rig: Rig) -> None:
    lim = rig.limiter(rig.rate(5))
    jitter(rig, lim, 0.05, 0.15)
    for _ in range(5):
        await send(rig, await lim.acquire(), [])
    await lim.penalize(rig.unit)
    state = lim.state()
    assert state.cooldown_remaining > 0
    assert state.effective_per_second == pytest.approx(5 / rig.unit)  # not halved
    assert state.margin == pytest.approx(0.1 * 1.25, rel=1e-2)  # widened beyond the spread
    quiet = rig.limiter(rig.rate(5))
    jitter(rig, quiet, 0.05, 0.15)
    await send(rig, await quiet.acquire(), [])  # well under the window: someone else's
    await quiet.penalize(rig.unit)
    assert quiet.state().effective_per_second == pytest.approx(2.5 / rig.unit)

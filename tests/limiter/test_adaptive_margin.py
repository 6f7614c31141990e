"""A client pacing its sends keeps a server's arrival limit across a jittered path.

The margin follows the path: the spread estimator on a manual clock (slowest minus fastest,
decay, floor), the limiter's windows and its reaction to a 429 (a 429 at the limit of a jittery
path widens the margin instead of halving the rate; any other keeps the AIMD rules), and sweeps
against the emulator's delay injection (counts, never durations).
"""

from __future__ import annotations

import itertools
import math

import pytest

import esim_async.limits as L
from esim_async import AiraloClient, ManualClock, Rate
from esim_async.limits import EndpointLimiter, PathSpread
from esim_async.testing import Emulator, Fleet, PathDelay, ServerLimits
from tests.arrivals import ArrivalLog, max_in_any_window

#: Airalo's 5/s and a 50-200 ms path, scaled down by 4 in time.
RATE = Rate(5, 0.25)
PATH = PathDelay(min=0.0125, max=0.05, seed=2026)


@pytest.mark.parametrize("algorithm", ["sliding", "fixed"])
async def test_no_429_across_a_jittered_path(algorithm: str) -> None:
    fleet = Fleet.generate(61, seed=7)
    log = ArrivalLog()
    limits = ServerLimits(
        usage_company=RATE,
        usage_iccid=None,
        algorithm=algorithm,  # type: ignore[arg-type]
    )
    async with (
        Emulator(fleet=fleet, limits=limits, path=PATH, middlewares=[log.middleware]) as emu,
        AiraloClient("a", "b", base_url=emu.url, company_rate=RATE, iccid_rate=None) as client,
        client.sims.usage_many(fleet.iccids()) as results,
    ):
        answered = [r async for r in results]
    assert all(r.ok for r in answered)
    assert emu.stats.rate_limited == 0
    assert log.violations(company=RATE) == []


async def test_a_stray_429_on_a_jittered_path_widens_the_margin_not_halves_the_rate() -> None:
    """One 429 the windows did not cause, at the limit of a jittery path: a cool-down and a
    wider margin, the rate stays whole, and no other 429 follows."""
    fleet = Fleet.generate(41, seed=11)
    limits = ServerLimits(usage_company=RATE, usage_iccid=None)
    async with (
        Emulator(fleet=fleet, limits=limits, path=PATH) as emu,
        AiraloClient("a", "b", base_url=emu.url, company_rate=RATE, iccid_rate=None) as client,
    ):
        ok = 0
        async with client.sims.usage_many(fleet.iccids()) as results:
            async for r in results:
                ok += r.ok
                if ok == 20:
                    emu.inject("usage", "429")
        state = client.rate_limit_state()
    usage = next(s for s in state.values() if s.configured == RATE)
    assert ok == 41
    assert emu.stats.rate_limited == 1  # the injected one only
    assert usage.effective_per_second == pytest.approx(RATE.per_second)  # not halved
    assert usage.margin > 0.02  # the path widened it


# ------------------------------------------------------------------ the spread estimator


def feed(spread: PathSpread | EndpointLimiter, clock: ManualClock, rtts: list[float]) -> None:
    """Requests answered now after ``rtts`` seconds each."""
    now = clock.now()
    for rtt in rtts:
        spread.observe(now - rtt, now)


def test_a_constant_delay_has_no_spread() -> None:
    clock = ManualClock()
    spread = PathSpread(clock)
    feed(spread, clock, [0.03] * 40)
    assert spread.spread() == 0.0
    assert len(spread) == 40


def test_the_spread_is_the_slowest_minus_the_fastest_recent_answer() -> None:
    clock = ManualClock()
    spread = PathSpread(clock)
    feed(spread, clock, [0.05 + 0.15 * i / 63 for i in range(64)])  # 50 to 200 ms
    assert spread.spread() == pytest.approx(0.15)
    rare = PathSpread(clock)
    feed(rare, clock, [0.05] * 40 + [0.25] + [0.05] * 23)  # one late answer in 64 counts ...
    assert rare.spread() == pytest.approx(0.2)
    feed(rare, clock, [0.05] * 41)  # ... until newer answers have pushed it out
    assert rare.spread() == 0.0


def test_few_samples_are_scaled_up_to_the_width_they_suggest() -> None:
    clock = ManualClock()
    spread = PathSpread(clock)
    feed(spread, clock, [0.05])
    assert spread.spread() == 0.0  # one sample: no variation known
    feed(spread, clock, [0.15])
    assert spread.spread() == pytest.approx(0.1 * 3)  # two samples span a third on average
    feed(spread, clock, [0.1] * 18)
    assert spread.spread() == pytest.approx(0.1)  # 20: not scaled


def test_the_spread_decays_as_samples_leave() -> None:
    clock = ManualClock()
    spread = PathSpread(clock)
    feed(spread, clock, [0.05, 0.2] * 20)
    assert spread.spread() == pytest.approx(0.15)
    clock.advance(L.PATH_HORIZON / 2)
    feed(spread, clock, [0.05] * (L.PATH_SAMPLES - 10))  # newer samples push most out
    assert spread.spread() == pytest.approx(0.15)  # 10 jittery ones left
    clock.advance(L.PATH_HORIZON / 2 + 1)  # the jittery ones are too old now
    assert spread.spread() == 0.0
    assert len(spread) == L.PATH_SAMPLES - 10
    clock.advance(L.PATH_HORIZON)
    assert spread.spread() == 0.0 and len(spread) == 0


def test_widening_raises_the_spread_then_the_extra_halves_per_half_life() -> None:
    clock = ManualClock()
    spread = PathSpread(clock)
    feed(spread, clock, [0.05, 0.15] * 10)
    extra = 0.1 * (L.PATH_WIDEN_FACTOR - 1)
    assert spread.widen() == pytest.approx(0.1 + extra)
    assert spread.spread() == pytest.approx(0.1 + extra)
    clock.advance(L.PATH_WIDEN_HALF_LIFE)
    assert spread.spread() == pytest.approx(0.1 + extra / 2)
    spread.widen()  # on top of what is in force
    assert spread.spread() == pytest.approx((0.1 + extra / 2) * L.PATH_WIDEN_FACTOR)
    clock.advance(30 * L.PATH_WIDEN_HALF_LIFE)
    feed(spread, clock, [0.05, 0.15] * 10)
    assert spread.spread() == pytest.approx(0.1)  # back to the measured spread


def test_nonsense_samples_are_ignored() -> None:
    clock = ManualClock()
    spread = PathSpread(clock)
    spread.observe(1.0, 0.5)  # answered before it was sent
    spread.observe(0.0, math.inf)
    assert len(spread) == 0


# ------------------------------------------------------------------ the limiter's windows


def limiter(clock: ManualClock, **kw: object) -> EndpointLimiter:
    return EndpointLimiter(
        "acct:usage",
        shared=Rate(5, 1.0),
        per_key=None,
        clock=clock,
        stamp_sends=True,
        **{"margin": 0.02, **kw},  # type: ignore[arg-type]
    )


async def sweep(lim: EndpointLimiter, clock: ManualClock, n: int) -> list[float]:
    """``n`` requests sent as soon as admitted; their send times."""
    sends = []
    for _ in range(n):
        slot = await lim.acquire()
        slot.mark(clock.now())
        sends.append(clock.now())
    return sends


async def test_on_a_clean_path_the_margin_stays_at_its_floor() -> None:
    clock = ManualClock()
    lim = limiter(clock)
    feed(lim, clock, [0.002] * 30)
    state = lim.state()
    assert state.margin == pytest.approx(0.02) and state.path_spread == 0.0
    sends = await sweep(lim, clock, 10)
    assert max_in_any_window(sends, 1.02) == 5
    assert sends[5] == pytest.approx(1.02)  # (virtual time) nothing more than the floor


async def test_the_window_widens_by_the_spread_and_not_beyond_the_cap() -> None:
    clock = ManualClock()
    lim = limiter(clock)
    feed(lim, clock, [0.05, 0.2] * 10)  # a spread of 150 ms
    assert lim.state().margin == pytest.approx(0.02 + 0.15)
    sends = await sweep(lim, clock, 15)
    assert max_in_any_window(sends, 1.17) == 5
    assert sends[5] == pytest.approx(1.17)  # (virtual time)
    half = limiter(clock, spread_factor=0.5)
    feed(half, clock, [0.05, 0.2] * 10)
    assert half.state().margin == pytest.approx(0.02 + 0.075)
    wild = limiter(clock)
    feed(wild, clock, [0.05, 3.0] * 10)  # never more than half a period wider
    assert wild.state().margin == pytest.approx(0.02 + L.PATH_MAX_MARGIN)


def test_a_negative_spread_factor_is_refused() -> None:
    with pytest.raises(ValueError, match="spread_factor"):
        limiter(ManualClock(), spread_factor=-1.0)


# ------------------------------------------------------------------ 429s


async def full_window(lim: EndpointLimiter, clock: ManualClock) -> None:
    for _ in range(5):
        (await lim.acquire()).mark(clock.now())


async def test_a_429_at_the_limit_of_a_jittery_path_widens_the_margin() -> None:
    clock = ManualClock()
    lim = limiter(clock)
    feed(lim, clock, [0.05, 0.15] * 10)
    await full_window(lim, clock)
    await lim.penalize(1.0)
    state = lim.state()
    assert state.cooldown_remaining == pytest.approx(1.0)  # Retry-After is honoured
    assert state.effective_per_second == pytest.approx(5.0)  # the rate stays whole
    assert state.path_spread == pytest.approx(0.1 * L.PATH_WIDEN_FACTOR)  # widened
    # The other 429s of the same bunching, within its cool-down, change nothing more.
    clock.advance(0.5)
    await lim.penalize(1.0)
    assert lim.state().effective_per_second == pytest.approx(5.0)
    # After the cool-down the window is not more than full with the wider margin either.
    clock.advance(1.0)
    sends = await sweep(lim, clock, 10)
    assert max_in_any_window(sends, 1.02 + 0.1 * L.PATH_WIDEN_FACTOR - 0.001) == 5
    # A 429 after that cool-down but within the guard is not the path's doing: halved.
    await lim.penalize(1.0)
    assert lim.state().effective_per_second == pytest.approx(2.5)


async def test_a_429_when_the_window_was_not_full_halves_the_rate() -> None:
    clock = ManualClock()
    lim = limiter(clock)
    feed(lim, clock, [0.05, 0.15] * 10)
    (await lim.acquire()).mark(clock.now())  # one send of five: someone else used the rest
    await lim.penalize(1.0)
    state = lim.state()
    assert state.effective_per_second == pytest.approx(2.5)
    assert state.path_spread == pytest.approx(0.1)  # not widened


async def test_a_429_on_a_clean_path_halves_the_rate() -> None:
    clock = ManualClock()
    lim = limiter(clock)
    feed(lim, clock, [0.03] * 20)
    await full_window(lim, clock)
    await lim.penalize(1.0)
    assert lim.state().effective_per_second == pytest.approx(2.5)


async def test_a_429_naming_a_lower_limit_is_not_the_paths_doing() -> None:
    clock = ManualClock()
    lim = limiter(clock)
    feed(lim, clock, [0.05, 0.15] * 10)
    await full_window(lim, clock)
    await lim.penalize(1.0, 3)  # X-RateLimit-Limit: 3
    state = lim.state()
    assert state.ceiling == 3
    assert state.effective_per_second == pytest.approx(1.5)  # 3 at half the rate
    long = limiter(clock)
    feed(long, clock, [0.05, 0.15] * 10)
    await full_window(long, clock)
    await long.penalize(30.0)  # a Retry-After no 1 s window asks for
    assert long.state().effective_per_second == pytest.approx(2.5)


async def test_a_429_storm_on_a_jittery_path_still_backs_off() -> None:
    """One 429 widens the margin; every one that keeps coming after its cool-down lowers
    the rate as before."""
    clock = ManualClock()
    lim = limiter(clock)
    feed(lim, clock, [0.05, 0.15] * 10)
    rates = []
    for _ in range(6):
        await full_window(lim, clock)
        await lim.penalize(1.0)
        rates.append(lim.state().effective_per_second)
        clock.advance(1.0)
    assert rates[0] == pytest.approx(5.0)
    assert rates[1] == pytest.approx(2.5)
    assert all(later < earlier for earlier, later in itertools.pairwise(rates[1:]))

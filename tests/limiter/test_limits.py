"""The limiter guarantee: never more than ``count`` sends in any window of ``period``.

Exact, on virtual time: the AIMD and ceiling rules (pure functions of a ``LimitState``), the
in-memory window store through its protocol, and the limiter over it. The same promises are
checked over both stores, Redis included, in tests/limiter/.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esim_async import ManualClock, Priority, Rate
from esim_async.backends.memory import MemoryStore
from esim_async.limits import (
    EndpointLimiter,
    LimiterClosedError,
    LimitState,
    Window,
    effective_count,
    factor,
    penalized,
)
from esim_async.limits import ceiling_recovers_in as recovers_in


def max_in_any_window(times: list[float], period: float) -> int:
    """Most admissions inside any half-open window [t, t + period).

    Two admissions exactly one period apart (up to float rounding, 1e-9 relative) are in
    different windows.
    """
    best = 0
    j = 0
    edge = period * (1 - 1e-9)
    for i in range(len(times)):
        while times[i] - times[j] >= edge:
            j += 1
        best = max(best, i - j + 1)
    return best


rates = st.builds(
    Rate,
    st.integers(min_value=1, max_value=12),
    st.floats(min_value=0.05, max_value=120.0, allow_nan=False, allow_infinity=False),
)
gaps = st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=1, max_size=120)


def limiter(
    clock: ManualClock, shared: Rate | None, per_key: Rate | None = None, **kw: object
) -> EndpointLimiter:
    return EndpointLimiter(
        "acct:usage",
        shared=shared,
        per_key=per_key,
        clock=clock,
        **{"margin": 0.0, **kw},  # type: ignore[arg-type]
    )


def test_rate_rejects_nonsense() -> None:
    for bad in [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -1.0), (1, math.inf), (1, math.nan)]:
        with pytest.raises(ValueError, match="Rate"):
            Rate(*bad)
    with pytest.raises(ValueError, match="count"):
        Rate(True, 1.0)  # bool is not a count
    assert Rate(5, 1.0).per_second == 5.0


# ------------------------------------------------------------------ the AIMD rules


def test_cooldown_then_aimd_recovery() -> None:
    rate = Rate(10, 1.0)
    state = penalized(LimitState(), 0.0, rate, 2.0)
    assert state.cooldown_until == 2.0
    assert factor(state, 2.0, 1.0) == pytest.approx(0.5)
    # A second 429 inside the same cool-down extends it but does not halve again.
    state = penalized(state, 1.0, rate, 2.0)
    assert state.cooldown_until == 3.0
    assert factor(state, 3.0, 1.0) == pytest.approx(0.5)
    # Additive increase: +0.1 of the rate per period after the cool-down, capped at 1.
    assert factor(state, 5.0, 1.0) == pytest.approx(0.7)
    assert factor(state, 13.0, 1.0) == 1.0
    # A 429 after the cool-down ended halves the current rate again.
    state = penalized(state, 3.5, rate, 1.0)
    assert factor(state, 4.5, 1.0) == pytest.approx(0.55 * 0.5)
    assert state.version == 3


def test_rate_limit_header_is_a_ceiling_that_recovers() -> None:
    rate = Rate(10, 1.0)
    state = penalized(LimitState(), 0.0, rate, 2.0, limit=3)
    assert effective_count(state, 1.0, rate) == 3  # in force through the cool-down ...
    assert recovers_in(state, 1.0, rate) == pytest.approx(8.0)
    state = penalized(state, 2.5, rate, 0.0, limit=50)  # (a larger header never raises it)
    assert effective_count(state, 2.5, rate) == 3
    # ... then wins back 10 % of the configured count per period, like the rate.
    assert effective_count(state, 4.0, rate) == 5
    assert effective_count(state, 9.0, rate) == 10
    assert recovers_in(state, 9.0, rate) == 0.0
    # A lower header while it recovers lowers it again, from where it stands.
    state = penalized(state, 5.0, rate, 1.0, limit=2)
    assert effective_count(state, 5.5, rate) == 2
    assert effective_count(state, 100.0, rate) == 10


def test_a_cool_down_beyond_the_cap_refuses_until_it_ends() -> None:
    rate = Rate(5, 1.0)
    assert penalized(LimitState(), 0.0, rate, 30.0, cap=60.0).refuse_until == -math.inf
    assert penalized(LimitState(), 0.0, rate, 3600.0, cap=60.0).refuse_until == 3600.0
    assert penalized(LimitState(), 0.0, rate, None, cap=0.5).refuse_until == 1.0  # default
    assert penalized(LimitState(), 0.0, None, 4.0).cooldown_until == 4.0  # unlimited: cools


@given(
    rate=rates,
    events=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=2.0),
            st.one_of(st.none(), st.floats(min_value=0.0, max_value=5.0)),
            st.booleans(),
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_penalties_only_make_it_stricter(
    rate: Rate, events: list[tuple[float, float | None, bool]]
) -> None:
    async def run() -> tuple[list[float], list[tuple[int, float]]]:
        clock = ManualClock()
        lim = limiter(clock, rate, margin=0.02)
        admitted: list[float] = []
        cooldowns: list[tuple[int, float]] = []
        for gap, retry_after, penalize in events:
            clock.advance(gap * rate.period)
            if penalize:
                await lim.penalize(retry_after)
                wait = retry_after if retry_after is not None else rate.period
                cooldowns.append((len(admitted), clock.now() + wait))
            await lim.acquire()
            admitted.append(clock.now())
        return admitted, cooldowns

    admitted, cooldowns = asyncio.run(run())
    assert max_in_any_window(admitted, rate.period) <= rate.count
    for first_after, end in cooldowns:
        assert all(a >= end for a in admitted[first_after:]), "admitted during a cool-down"


# ------------------------------------------------------------------ the in-memory store


async def test_store_counts_reservations_until_they_are_sent() -> None:
    clock = ManualClock()
    store = MemoryStore(clock)
    window = Window(2, 1.0)

    async def reserve() -> float:
        reply = await store.reserve(window, None, None, not_before=0.0, version=0)
        if not reply.wait:
            tokens.append(reply.token)
        return reply.wait

    tokens: list[object] = []
    assert await reserve() == 0 and await reserve() == 0
    clock.advance(0.5)
    # Both reserved, neither sent (their connections are being set up): a third must wait
    # for a send instead of trusting the reservation times.
    assert await reserve() > 0
    store.confirm(tokens[0], None, 0.3)  # it really went out at 0.3
    assert await reserve() == pytest.approx(0.8)  # the window of 0.3 ends at 1.3
    store.confirm(tokens[1], None, 0.4)
    clock.advance(0.8)
    assert await reserve() == 0
    store.confirm(tokens[2], None, 1.3)
    # The window now holds the sends of 0.4 and 1.3: the next may go at 1.4.
    assert await reserve() == pytest.approx(0.1)


@given(
    rate=rates,
    events=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=2.0),
            st.one_of(st.none(), st.floats(min_value=0.0, max_value=3.0)),
        ),
        min_size=1,
        max_size=60,
    ),
    keyed=st.booleans(),
)
def test_store_keeps_the_window_over_sends_in_any_order_and_releases(
    rate: Rate, events: list[tuple[float, float | None]], keyed: bool
) -> None:
    """Reservations that go out after arbitrary lags (``confirm``, in any order) or never go
    out (``release``) keep at most ``count`` sends in any window, shared or one key's."""
    clock = ManualClock()
    store = MemoryStore(clock)
    window = Window(rate.count, rate.period)
    shared, per_key = (None, window) if keyed else (window, None)
    key = "k" if keyed else None
    sends: list[float] = []
    pending: list[tuple[float, bool, object]] = []  # (when, sent?, token)

    def settle(upto: float) -> None:
        nonlocal pending
        for when, sent, token in sorted(pending, key=lambda p: p[0]):
            if when <= upto:
                if sent:
                    sends.append(when)
                    store.confirm(token, key, when)
                else:
                    store.release(token, key)
        pending = [p for p in pending if p[0] > upto]

    async def run() -> None:
        for gap, lag in events:
            clock.advance(gap * rate.period)
            while True:
                settle(clock.now())
                reply = await store.reserve(shared, key, per_key, not_before=0.0, version=0)
                if not reply.wait:
                    break
                clock.advance(min([reply.wait, *[w - clock.now() for w, _, _ in pending]]))
            # lag None: the request fails before anything goes out, half a period later.
            when = clock.now() + (0.5 if lag is None else lag) * rate.period
            pending.append((when, lag is not None, reply.token))
        settle(math.inf)

    asyncio.run(run())
    assert max_in_any_window(sorted(sends), rate.period) <= rate.count


async def test_store_drops_a_keys_state_once_its_window_passed() -> None:
    clock = ManualClock()
    lim = limiter(clock, None, Rate(10, 60.0), stamp_sends=True)
    for i in range(1000):
        (await lim.acquire(f"{i:020d}")).mark(0.0)
    assert lim.state().live_keys == 1000
    clock.advance(59.9)
    (await lim.acquire("x" * 20)).mark(clock.now())
    assert lim.state().live_keys == 1001
    clock.advance(0.1)
    assert lim.state().live_keys == 1  # the 1000 keys of t=0 left the window
    # Admissions evict by themselves too (amortised, every 64 admissions).
    clock.advance(200.0)
    for i in range(64):
        (await lim.acquire(f"z{i}")).release()
    assert lim.state().live_keys <= 64


# ------------------------------------------------------------------ the limiter, exactly


@given(rate=rates, gaps=gaps, margin=st.sampled_from([0.0, 0.02, 0.1]))
def test_admissions_keep_the_window_and_never_wait_longer_than_it_needs(
    rate: Rate, gaps: list[float], margin: float
) -> None:
    async def run() -> tuple[list[float], list[float]]:
        clock = ManualClock()
        lim = limiter(clock, rate, margin=margin)
        arrivals, admitted = [], []
        for g in gaps:
            clock.advance(g * rate.period)
            arrivals.append(clock.now())
            await lim.acquire()
            admitted.append(clock.now())
        return arrivals, admitted

    arrivals, admitted = asyncio.run(run())
    assert max_in_any_window(admitted, rate.period) <= rate.count
    # Each admission happens on arrival or exactly when the count-th previous one leaves.
    span = rate.period * (1 + margin)
    for i, at in enumerate(admitted):
        if at > arrivals[i]:
            assert i >= rate.count
            assert at == pytest.approx(admitted[i - rate.count] + span)


async def test_plain_burst_then_exactly_one_window_later() -> None:
    clock = ManualClock()
    lim = limiter(clock, Rate(5, 1.0), margin=0.02)
    times = []
    for _ in range(10):
        await lim.acquire()
        times.append(clock.now())
    assert times[:5] == [0.0] * 5
    assert times[5:] == pytest.approx([1.02] * 5)


async def test_after_a_cool_down_requests_are_spaced_not_bursted() -> None:
    clock = ManualClock()
    lim = limiter(clock, Rate(10, 1.0))
    await lim.penalize(2.0)
    times = []
    for _ in range(3):
        await lim.acquire()
        times.append(clock.now())
    assert times[0] == 2.0
    # spaced at period / (count * factor) = 0.2 s (the factor recovers meanwhile)
    assert times[1] - times[0] == pytest.approx(0.2, abs=0.01)
    assert lim.state().effective_per_second < 10.0
    clock.advance(10.0)
    assert lim.state().effective_per_second == pytest.approx(10.0)


async def test_fifo_and_keeps_the_window() -> None:
    clock = ManualClock()
    lim = limiter(clock, Rate(3, 1.0))
    order: list[int] = []
    times: list[float] = []

    async def worker(i: int) -> None:
        slot = await lim.acquire(None, Priority.BULK)
        order.append(i)
        times.append(slot.time)

    await asyncio.gather(*(worker(i) for i in range(9)))
    assert order == list(range(9))
    assert times == [0.0] * 3 + [1.0] * 3 + [2.0] * 3
    await lim.aclose()


async def test_priority_lane_goes_first_and_bulk_uses_the_rest() -> None:
    clock = ManualClock()
    lim = limiter(clock, Rate(1, 1.0))
    order: list[str] = []

    async def take(name: str, priority: Priority) -> None:
        await lim.acquire(None, priority)
        order.append(name)

    bulk = [asyncio.create_task(take(f"b{i}", Priority.BULK)) for i in range(4)]
    await asyncio.sleep(0)
    interactive = asyncio.create_task(take("i", Priority.INTERACTIVE))
    await asyncio.gather(*bulk, interactive)
    # b0 took the free slot at once; the interactive call then jumped the queued sweep.
    assert order == ["b0", "i", "b1", "b2", "b3"]
    # Work-conserving: five admissions in five consecutive slots, no slot left idle.
    assert clock.now() == 4.0
    await lim.aclose()


async def test_cancelled_waiter_gives_its_slot_up() -> None:
    clock = ManualClock()
    lim = limiter(clock, Rate(1, 1.0))
    await lim.acquire()
    first = asyncio.create_task(lim.acquire())
    second = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    first.cancel()
    await second
    assert clock.now() == 1.0  # the slot first would have had went to second
    assert first.cancelled()
    assert lim.waiters() == 0
    await lim.aclose()


async def test_cooldown_holds_every_caller() -> None:
    clock = ManualClock()
    lim = limiter(clock, Rate(100, 1.0))
    await lim.penalize(5.0)
    times = []
    for _ in range(3):
        await lim.acquire()
        times.append(clock.now())
    assert times[0] == 5.0
    await lim.aclose()


async def test_unlimited_limiter_still_honours_cooldown() -> None:
    clock = ManualClock()
    lim = limiter(clock, None)
    for _ in range(10_000):
        assert (await lim.acquire()).sent  # nothing to settle, no wait
    assert clock.now() == 0.0
    await lim.penalize(2.0)
    await lim.acquire()
    assert clock.now() == 2.0
    assert lim.state().effective_per_second is None
    await lim.aclose()


async def test_huge_rate_does_not_throttle() -> None:
    clock = ManualClock()
    lim = limiter(clock, Rate(10**9, 1.0), stamp_sends=True)
    for _ in range(10_000):
        clock.advance(1e-6)
        (await lim.acquire()).mark(clock.now())
    assert clock.now() == pytest.approx(0.01)  # 1,000,000 per second is far below it
    await lim.aclose()


async def test_endpoint_limiter_records_key_at_shared_admission() -> None:
    clock = ManualClock()
    lim = limiter(clock, Rate(1, 1.0), Rate(2, 10.0))
    times = []
    for _ in range(3):
        await lim.acquire("k")
        times.append(clock.now())
    # Two per 10 s for the key; the shared limit spaces the first two one second apart.
    assert times == [0.0, 1.0, 10.0]
    state = lim.state()
    assert state.per_key == Rate(2, 10.0)
    assert state.live_keys == 1
    assert lim.waited == pytest.approx(10.0)
    await lim.aclose()


@given(gaps=gaps, count=st.integers(min_value=1, max_value=5))
def test_keyed_windows_guarantee_per_key(gaps: list[float], count: int) -> None:
    rate = Rate(count, 10.0)

    async def run() -> dict[str, list[float]]:
        clock = ManualClock()
        lim = limiter(clock, None, rate)
        admitted: dict[str, list[float]] = {"a": [], "b": []}
        for i, g in enumerate(gaps):
            key = "a" if i % 3 else "b"
            clock.advance(g)
            await lim.acquire(key)
            admitted[key].append(clock.now())
        return admitted

    for times in asyncio.run(run()).values():
        assert max_in_any_window(times, rate.period) <= count


async def test_closed_limiter_refuses_and_releases_waiters() -> None:
    clock = ManualClock()
    lim = limiter(clock, Rate(1, 100.0))
    await lim.acquire()
    waiter = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    await lim.aclose()
    with pytest.raises(LimiterClosedError):
        await waiter
    with pytest.raises(LimiterClosedError):
        await lim.acquire()


async def test_released_admissions_give_the_budget_back() -> None:
    clock = ManualClock()
    lim = limiter(clock, Rate(2, 10.0), Rate(1, 60.0), stamp_sends=True)
    first = await lim.acquire("a")
    second = await lim.acquire("b")
    first.release()  # neither window counts it
    second.mark(3.0)
    again = await lim.acquire("a")
    assert clock.now() == 0.0  # a's window and the shared one both had room
    again.mark(5.0)
    # "a" went out at 5: its next request waits a full period from the send, not the admission.
    await lim.acquire("a")
    assert clock.now() == 65.0
    await lim.aclose()

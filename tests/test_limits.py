"""The limiter guarantee: never more than ``count`` admissions in any window of ``period``."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esim_async import ManualClock, Priority, Rate
from esim_async.limits import (
    EndpointLimiter,
    KeyedWindows,
    LimiterClosedError,
    SharedLimiter,
    WindowLog,
)


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


def test_rate_rejects_nonsense() -> None:
    for bad in [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -1.0), (1, math.inf), (1, math.nan)]:
        with pytest.raises(ValueError, match="Rate"):
            Rate(*bad)
    with pytest.raises(ValueError, match="count"):
        Rate(True, 1.0)  # bool is not a count
    assert Rate(5, 1.0).per_second == 5.0


@given(rate=rates, gaps=gaps, margin=st.sampled_from([0.0, 0.02, 0.1]))
def test_window_log_never_exceeds_count_in_any_window(
    rate: Rate, gaps: list[float], margin: float
) -> None:
    log = WindowLog(rate, margin=margin)
    arrivals = []
    t = 0.0
    for g in gaps:
        t += g * rate.period
        arrivals.append(t)
    admitted: list[float] = []
    last = 0.0
    for a in arrivals:
        at = log.earliest(max(a, last))
        assert at >= max(a, last)
        log.admit(at)
        admitted.append(at)
        last = at
    assert max_in_any_window(admitted, rate.period) <= rate.count
    # ... and it never waits longer than the guarantee needs: each admission happens either on
    # arrival (or behind the previous one) or exactly when the count-th previous one leaves.
    span = rate.period * (1 + margin)
    for i, at in enumerate(admitted):
        free = max(arrivals[i], admitted[i - 1] if i else 0.0)
        if at > free:
            assert i >= rate.count
            assert at == pytest.approx(admitted[i - rate.count] + span)


@given(
    rate=rates,
    events=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=2.0),
            st.one_of(st.none(), st.floats(min_value=0.0, max_value=5.0)),
            st.booleans(),
        ),
        min_size=1,
        max_size=80,
    ),
)
def test_penalties_only_make_it_stricter(
    rate: Rate, events: list[tuple[float, float | None, bool]]
) -> None:
    log = WindowLog(rate, margin=0.02)
    now = 0.0
    admitted: list[float] = []
    cooldowns: list[tuple[int, float]] = []
    for gap, retry_after, penalize in events:
        now += gap * rate.period
        if penalize:
            log.penalize(now, retry_after, limit=None)
            wait = retry_after if retry_after is not None else rate.period
            cooldowns.append((len(admitted), now + wait))
        at = log.earliest(now)
        log.admit(at)
        admitted.append(at)
        now = at
    assert max_in_any_window(admitted, rate.period) <= rate.count
    for first_after, end in cooldowns:
        later = admitted[first_after:]
        assert all(a >= end for a in later), "admitted during a cool-down"


def test_plain_burst_then_exactly_one_window_later() -> None:
    log = WindowLog(Rate(5, 1.0), margin=0.02)
    times = []
    for _ in range(10):
        t = log.earliest(0.0 if not times else times[-1])
        log.admit(t)
        times.append(t)
    assert times[:5] == [0.0] * 5
    assert times[5:] == pytest.approx([1.02] * 5)


def test_cooldown_then_aimd_recovery_without_bursts() -> None:
    rate = Rate(10, 1.0)
    log = WindowLog(rate, margin=0.0, recovery_step=0.1)
    log.penalize(0.0, 2.0)
    assert log.cooldown_until == 2.0
    assert log.factor(2.0) == pytest.approx(0.5)
    # A second 429 inside the same cool-down extends it but does not halve again.
    log.penalize(1.0, 2.0)
    assert log.cooldown_until == 3.0
    assert log.factor(3.0) == pytest.approx(0.5)
    # After the cool-down: spaced at period / (count * factor) = 0.2 s, no burst.
    t = log.earliest(0.0)
    assert t == 3.0
    log.admit(t)
    t2 = log.earliest(t)
    assert t2 == pytest.approx(3.2, abs=0.02)
    # Additive increase: +0.1 of the rate per period after the cool-down, capped at 1.
    assert log.factor(3.0 + 2.0) == pytest.approx(0.7)
    assert log.factor(3.0 + 10.0) == 1.0
    assert log.effective_per_second(100.0) == pytest.approx(10.0)
    # A 429 after the cool-down ended halves the current rate again.
    log.penalize(3.5, 1.0)
    assert log.factor(4.5) == pytest.approx(0.55 * 0.5)


def test_rate_limit_header_is_a_ceiling_that_recovers() -> None:
    log = WindowLog(Rate(10, 1.0), margin=0.0, recovery_step=0.1)
    log.penalize(0.0, 2.0, limit=3)
    assert log.effective_count(1.0) == 3  # in force through the cool-down ...
    assert log.ceiling_recovers_in(1.0) == pytest.approx(8.0)
    log.penalize(2.5, 0.0, limit=50)  # (a larger header never raises the count)
    assert log.effective_count(2.5) == 3
    # ... then wins back 10 % of the configured count per period, like the rate.
    assert log.effective_count(4.0) == 5
    assert log.effective_count(9.0) == 10
    assert log.ceiling_recovers_in(9.0) == 0.0
    # A lower header while it recovers lowers it again, from where it stands.
    log.penalize(5.0, 1.0, limit=2)
    assert log.effective_count(5.5) == 2
    assert log.effective_count(100.0) == 10
    assert log.effective_per_second(100.0) == pytest.approx(10.0)


def test_huge_rate_costs_no_memory_and_does_not_throttle() -> None:
    log = WindowLog(Rate(10**9, 1.0), margin=0.02)
    for i in range(10_000):
        t = i * 1e-6
        assert log.earliest(t) == t  # 1,000,000 per second is far below 10**9 per second
        log.admit(t)
    assert len(log._log) <= 1  # the slotted mode keeps no per-admission log


@given(gaps=gaps, count=st.integers(min_value=WindowLog.MAX_LOG + 1, max_value=3000))
def test_slotted_mode_keeps_the_guarantee_and_most_of_the_budget(
    gaps: list[float], count: int
) -> None:
    rate = Rate(count, 1.0)
    log = WindowLog(rate, margin=0.0)
    now, admitted = 0.0, []
    for g in gaps * 60:
        now = log.earliest(now + g / count)
        log.admit(now)
        admitted.append(now)
    assert max_in_any_window(admitted, rate.period) <= count
    assert len(log._slots) <= WindowLog.SLOTS + 2


def test_slotted_mode_saturates_within_a_slot_of_the_limit() -> None:
    rate = Rate(6400, 1.0)
    log = WindowLog(rate, margin=0.0)
    now, admitted = 0.0, []
    for _ in range(64_000):
        now = log.earliest(now)
        log.admit(now)
        admitted.append(now)
    assert max_in_any_window(admitted, rate.period) <= 6400
    # N admissions at the full rate take (N / count - 1) periods after the first burst.
    achieved = len(admitted) / (admitted[-1] + rate.period)
    assert achieved >= 6400 * 63 / 65


def test_keyed_windows_with_a_huge_rate_stay_small() -> None:
    keys = KeyedWindows(Rate(10**9, 1.0), margin=0.0)
    for i in range(1000):
        assert keys.earliest("k", i * 1e-6) == i * 1e-6
        keys.admit("k", i * 1e-6)
    assert isinstance(keys._logs["k"], float)  # one float per key


@given(gaps=gaps)
def test_keyed_spacing_mode_keeps_the_guarantee(gaps: list[float]) -> None:
    rate = Rate(KeyedWindows.MAX_PER_KEY + 72, 1.0)
    keys = KeyedWindows(rate, margin=0.0)
    now, admitted = 0.0, []
    for g in gaps * 20:
        now = keys.earliest("k", now + g / 1000)
        keys.admit("k", now)
        admitted.append(now)
    assert max_in_any_window(admitted, rate.period) <= rate.count


def test_keyed_windows_drop_state_once_the_window_passed() -> None:
    keys = KeyedWindows(Rate(10, 60.0), margin=0.0)
    for i in range(1000):
        keys.admit(f"{i:020d}", 0.0)
    assert len(keys) == 1000
    keys.admit("x" * 20, 59.9)
    keys.evict(59.9)
    assert len(keys) == 1001
    keys.admit("y" * 20, 60.0)
    keys.evict(60.0)
    assert len(keys) == 2  # the 1000 keys of t=0 left the window
    # Admissions evict by themselves too (amortised, every 64 admissions).
    for i in range(64):
        keys.admit(f"z{i}", 200.0)
    assert len(keys) == 64


@given(gaps=gaps, count=st.integers(min_value=1, max_value=5))
def test_keyed_windows_guarantee_per_key(gaps: list[float], count: int) -> None:
    rate = Rate(count, 10.0)
    keys = KeyedWindows(rate, margin=0.0)
    now = 0.0
    admitted: dict[str, list[float]] = {"a": [], "b": []}
    for i, g in enumerate(gaps):
        key = "a" if i % 3 else "b"
        now = keys.earliest(key, now + g)
        keys.admit(key, now)
        admitted[key].append(now)
    for times in admitted.values():
        assert max_in_any_window(times, rate.period) <= count


class RecordingLimiter(SharedLimiter):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.admitted: list[float] = []

    def _admit(self, now: float) -> None:
        self.admitted.append(now)
        super()._admit(now)


async def test_shared_limiter_is_fifo_and_keeps_the_window() -> None:
    clock = ManualClock()
    limiter = RecordingLimiter(Rate(3, 1.0), clock=clock, margin=0.0)
    order: list[int] = []

    async def worker(i: int) -> None:
        await limiter.acquire(Priority.BULK)
        order.append(i)

    await asyncio.gather(*(worker(i) for i in range(9)))
    assert order == list(range(9))
    # Admission times (a ManualClock moves while the dispatcher sleeps, so record them there).
    assert limiter.admitted == [0.0] * 3 + [1.0] * 3 + [2.0] * 3
    await limiter.aclose()


async def test_priority_lane_goes_first_and_bulk_uses_the_rest() -> None:
    clock = ManualClock()
    limiter = SharedLimiter(Rate(1, 1.0), clock=clock, margin=0.0)
    order: list[str] = []

    async def take(name: str, priority: Priority) -> None:
        await limiter.acquire(priority)
        order.append(name)

    bulk = [asyncio.create_task(take(f"b{i}", Priority.BULK)) for i in range(4)]
    await asyncio.sleep(0)
    interactive = asyncio.create_task(take("i", Priority.INTERACTIVE))
    await asyncio.gather(*bulk, interactive)
    # b0 took the free slot at once; the interactive call then jumped the queued sweep.
    assert order == ["b0", "i", "b1", "b2", "b3"]
    # Work-conserving: five admissions in five consecutive slots, no slot left idle.
    assert clock.now() == 4.0
    await limiter.aclose()


async def test_cancelled_waiter_gives_its_slot_up() -> None:
    clock = ManualClock()
    limiter = SharedLimiter(Rate(1, 1.0), clock=clock, margin=0.0)
    await limiter.acquire()
    first = asyncio.create_task(limiter.acquire())
    second = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    first.cancel()
    await second
    assert clock.now() == 1.0  # the slot first would have had went to second
    assert first.cancelled()
    assert limiter.waiters() == 0
    await limiter.aclose()


async def test_cooldown_holds_every_caller() -> None:
    clock = ManualClock()
    limiter = SharedLimiter(Rate(100, 1.0), clock=clock, margin=0.0)
    limiter.penalize(5.0)
    times = []
    for _ in range(3):
        await limiter.acquire()
        times.append(clock.now())
    assert times[0] == 5.0
    await limiter.aclose()


async def test_unlimited_limiter_still_honours_cooldown() -> None:
    clock = ManualClock()
    limiter = SharedLimiter(None, clock=clock)
    await limiter.acquire()
    assert clock.now() == 0.0
    limiter.penalize(2.0)
    await limiter.acquire()
    assert clock.now() == 2.0
    assert limiter.effective_per_second() is None
    await limiter.aclose()


async def test_endpoint_limiter_records_key_at_shared_admission() -> None:
    clock = ManualClock()
    lim = EndpointLimiter(
        "usage", shared=Rate(1, 1.0), per_key=Rate(2, 10.0), clock=clock, margin=0.0
    )
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


async def test_closed_limiter_refuses_and_releases_waiters() -> None:
    clock = ManualClock()
    limiter = SharedLimiter(Rate(1, 100.0), clock=clock)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    await limiter.aclose()
    with pytest.raises(LimiterClosedError):
        await waiter
    with pytest.raises(LimiterClosedError):
        await limiter.acquire()


def test_send_times_stamp_the_window() -> None:
    log = WindowLog(Rate(2, 1.0), margin=0.0)
    first = log.admit(0.0, pending=True)
    second = log.admit(0.0, pending=True)
    # Both admitted, neither sent yet (their connections are being set up): a third request
    # must wait for a send instead of trusting the admission times.
    assert log.earliest(0.5) > 0.5
    first.mark(0.3)  # it really went out at 0.3
    assert log.earliest(0.5) == pytest.approx(1.3)
    second.mark(0.4)
    assert log.earliest(0.5) == pytest.approx(1.3)
    third = log.admit(1.3, pending=True)
    third.mark(1.3)
    # The window now holds the sends of 0.4 and 1.3: the next may go at 1.4.
    assert log.earliest(1.3) == pytest.approx(1.4)
    first.mark(99.0)  # marking twice changes nothing
    assert first.time == 0.3


@given(
    rate=rates,
    events=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=2.0), st.floats(min_value=0.0, max_value=3.0)),
        min_size=1,
        max_size=60,
    ),
)
def test_stamped_sends_never_exceed_the_window(
    rate: Rate, events: list[tuple[float, float]]
) -> None:
    """Admissions whose sends are delayed by arbitrary lags (connection set-up) still never put
    more than `count` sends in any window, as the server counts them."""
    log = WindowLog(rate, margin=0.0)
    now = 0.0
    sends: list[float] = []
    pending: list[tuple[float, object]] = []
    for gap, lag in events:
        now += gap * rate.period
        while True:
            # Deliver the sends whose time has come.
            for when, slot in sorted(pending, key=lambda p: p[0]):
                if when <= now:
                    slot.mark(when)  # type: ignore[attr-defined]
                    sends.append(when)
            pending = [(w, s) for w, s in pending if w > now]
            at = log.earliest(now)
            if at <= now:
                break
            now = min([at, *[w for w, _ in pending]])
        slot = log.admit(now, pending=True)
        pending.append((now + lag * rate.period, slot))
    for when, slot in pending:
        slot.mark(when)  # type: ignore[attr-defined]
        sends.append(when)
    assert max_in_any_window(sorted(sends), rate.period) <= rate.count


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
def test_stamped_or_released_admissions_never_exceed_the_window(
    rate: Rate, events: list[tuple[float, float | None]], keyed: bool
) -> None:
    """Admissions that go out after arbitrary lags (``mark``, in any order) or never go out
    (``release``) keep at most ``count`` sends in any window, for the shared log and for one
    key alike."""
    log = WindowLog(rate, margin=0.0)
    keys = KeyedWindows(rate, margin=0.0)
    now = 0.0
    sends: list[float] = []
    pending: list[tuple[float, bool, object]] = []  # (when, sent?, slot)

    def earliest(t: float) -> float:
        return keys.earliest("k", t) if keyed else log.earliest(t)

    def settle(upto: float) -> None:
        nonlocal pending
        for when, sent, slot in sorted(pending, key=lambda p: p[0]):
            if when > upto:
                continue
            if sent:
                sends.append(when)
                if keyed:
                    keys.mark("k", when)
                else:
                    slot.mark(when)  # type: ignore[attr-defined]
            elif keyed:
                keys.release("k")
            else:
                slot.release()  # type: ignore[attr-defined]
        pending = [p for p in pending if p[0] > upto]

    for gap, lag in events:
        now += gap * rate.period
        while True:
            settle(now)
            at = earliest(now)
            if at <= now:
                break
            now = min([at, *[w for w, _, _ in pending]])
        slot = None if keyed else log.admit(now, pending=True)
        if keyed:
            assert keys.admit("k", now, pending=True)
        # lag None: the request fails before anything goes out, half a period later.
        when = now + (0.5 if lag is None else lag) * rate.period
        pending.append((when, lag is not None, slot))
    settle(math.inf)
    assert max_in_any_window(sorted(sends), rate.period) <= rate.count
    if not keyed:
        assert log.recent(math.inf) == 0  # nothing left pending


async def test_released_admissions_give_the_budget_back() -> None:
    clock = ManualClock()
    lim = EndpointLimiter(
        "usage",
        shared=Rate(2, 10.0),
        per_key=Rate(1, 60.0),
        clock=clock,
        margin=0.0,
        stamp_sends=True,
    )
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

"""The limiter's promises, kept alike over the in-memory store and the Redis store.

Sends are what a server sees: each test marks a slot when its "request goes out" and checks the
send times, never the limiter's own bookkeeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esim_async import RateLimitedError
from esim_async.limits import (
    EndpointLimiter,
    LimiterClosedError,
    Priority,
    QueueTicket,
    Reply,
    Slot,
)

from ..arrivals import max_in_any_window
from ..conftest import RedisServer
from .conftest import Rig

INTERACTIVE, BULK = Priority.INTERACTIVE, Priority.BULK


async def until(rig: Rig, condition: Callable[[], bool]) -> None:
    """Let the limiter run until ``condition`` holds (a hang guard, not a timing assertion)."""
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0 if rig.kind == "memory" else 0.001)
    raise AssertionError("the condition never held")


async def send(rig: Rig, slot: Slot, log: list[float]) -> None:
    """The request goes out now."""
    now = rig.clock.now()
    slot.mark(now)
    log.append(now)


# ------------------------------------------------------------------ the window guarantee

events = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=1.0),  # gap before the request, in periods
        st.sampled_from([None, "a", "b"]),  # its key
        st.sampled_from(["send", "send", "send", "release", "cancel"]),
        st.floats(min_value=0.0, max_value=2.0),  # lag until it goes out (or gives up)
        st.sampled_from([INTERACTIVE, BULK]),
    ),
    min_size=1,
    max_size=30,
)


async def run_schedule(
    rig: Rig, count: int, key_count: int, schedule: list[tuple[Any, ...]]
) -> tuple[list[float], dict[str, list[float]]]:
    lim = rig.limiter(rig.rate(count), rig.rate(key_count, 3.0))
    sends: list[float] = []
    per_key: dict[str, list[float]] = {"a": [], "b": []}

    async def request(key: str | None, outcome: str, lag: float, priority: Priority) -> None:
        slot = await lim.acquire(key, priority)
        try:
            # a token fetch, a slow connection (a cancelled one is cancelled long before)
            await rig.sleep(lag if outcome != "cancel" else lag + 100)
            if outcome == "send":
                await send(rig, slot, sends)
                if key is not None:
                    per_key[key].append(slot.time)
        finally:
            slot.release()  # nothing went out (a no-op once sent)

    async def cancel_later(task: asyncio.Task[None], lag: float) -> None:
        await rig.sleep(lag)
        task.cancel()

    tasks: list[asyncio.Task[None]] = []
    for gap, key, outcome, lag, priority in schedule:
        await rig.sleep(gap)
        task = asyncio.create_task(request(key, outcome, lag, priority))
        tasks.append(task)
        if outcome == "cancel":
            tasks.append(asyncio.create_task(cancel_later(task, lag)))
    async with asyncio.timeout(60):  # a hang guard only
        await asyncio.gather(*tasks, return_exceptions=True)
    return sends, per_key


def check_schedule(rig: Rig, count: int, key_count: int, schedule: list[tuple[Any, ...]]) -> None:
    async def run() -> tuple[list[float], dict[str, list[float]]]:
        try:
            return await run_schedule(rig, count, key_count, schedule)
        finally:
            await rig.aclose()

    sends, per_key = asyncio.run(run())
    assert max_in_any_window(sorted(sends), rig.unit) <= count
    for times in per_key.values():
        assert max_in_any_window(sorted(times), 3 * rig.unit) <= key_count
    expected = sum(1 for _, _, outcome, _, _ in schedule if outcome == "send")
    assert len(sends) == expected  # every request that was not given up went out


def test_never_more_than_count_in_any_window(
    store_kind: str, rig_server: RedisServer | None
) -> None:
    """Arbitrary arrivals, send delays, releases, cancellations, keys and lanes: no window of
    the period ever holds more than ``count`` sends, nor one key's more than its count. (On
    virtual time in memory; on real time, fewer and shorter schedules, through Redis.)"""
    examples, longest = (80, 30) if store_kind == "memory" else (6, 6)

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        count=st.integers(min_value=1, max_value=4),
        key_count=st.integers(min_value=1, max_value=3),
        schedule=events,
    )
    def check(count: int, key_count: int, schedule: list[tuple[Any, ...]]) -> None:
        check_schedule(Rig(store_kind, rig_server), count, key_count, schedule[:longest])

    check()


# ------------------------------------------------------------------ send times, release


async def test_a_slot_counts_from_its_send_not_its_admission(rig: Rig) -> None:
    lim = rig.limiter(rig.rate(2))
    first, second = await lim.acquire(), await lim.acquire()
    third = asyncio.create_task(lim.acquire())
    await rig.sleep(0.5)  # both admitted, neither sent: the third may not go yet
    assert not third.done()
    sends: list[float] = []
    await send(rig, first, sends)
    await rig.sleep(0.25)
    await send(rig, second, sends)
    await send(rig, await third, sends)
    assert sends[2] >= sends[0] + rig.unit  # the first send had left the window


async def test_a_released_slot_gives_its_budget_back(rig: Rig) -> None:
    lim = rig.limiter(rig.rate(1, 100), rig.rate(1, 100))
    start = rig.clock.now()
    (await lim.acquire("a")).release()
    slot = await lim.acquire("a")  # neither window counts the released one
    slot.release()
    (await lim.acquire(None)).mark(rig.clock.now())
    assert rig.clock.now() - start < 50 * rig.unit


async def test_admission_without_stamping_counts_at_once(rig: Rig) -> None:
    lim = rig.limiter(rig.rate(2), stamp_sends=False)
    slots = [await lim.acquire() for _ in range(3)]
    assert all(slot.sent for slot in slots)
    assert slots[2].time >= slots[0].time + rig.unit


# ------------------------------------------------------------------ per-key windows


async def test_each_key_has_its_own_window(rig: Rig) -> None:
    lim = rig.limiter(rig.rate(10), rig.rate(2, 10))
    sends: list[float] = []
    order: list[str] = []

    async def take(key: str) -> None:
        await send(rig, await lim.acquire(key), sends)
        order.append(key)

    k = [asyncio.create_task(take("k")) for _ in range(3)]
    await until(rig, lambda: order.count("k") == 2)
    await take("j")  # not held back by the other key's window
    await asyncio.gather(*k)
    assert order == ["k", "k", "j", "k"]
    assert sends[3] >= sends[0] + 10 * rig.unit


# ------------------------------------------------------------------ lanes, tickets, cancelling


async def test_interactive_calls_go_first_and_bulk_takes_the_rest(rig: Rig) -> None:
    lim = rig.limiter(rig.rate(1, 3))
    await send(rig, await lim.acquire(), [])
    order: list[str] = []

    async def take(name: str, priority: Priority) -> None:
        await send(rig, await lim.acquire(None, priority), [])
        order.append(name)

    tasks = []
    for i in range(3):
        tasks.append(asyncio.create_task(take(f"b{i}", BULK)))
        await until(rig, lambda i=i: lim.waiters() == i + 1)  # type: ignore[misc]
    tasks.append(asyncio.create_task(take("i", INTERACTIVE)))
    await until(rig, lambda: lim.waiters() == 4)
    await asyncio.gather(*tasks)
    assert order == ["i", "b0", "b1", "b2"]


async def test_a_raised_ticket_moves_a_queued_wait_to_the_better_lane(rig: Rig) -> None:
    lim = rig.limiter(rig.rate(1, 3))
    await send(rig, await lim.acquire(), [])
    order: list[str] = []
    ticket = QueueTicket(BULK)

    async def take(name: str, priority: Priority, with_ticket: bool = False) -> None:
        if with_ticket:
            with ticket.bind():
                slot = await lim.acquire(None, priority)
        else:
            slot = await lim.acquire(None, priority)
        await send(rig, slot, [])
        order.append(name)

    tasks = []
    for i in range(4):
        tasks.append(asyncio.create_task(take(f"bulk{i}", BULK, i == 2)))
        await until(rig, lambda i=i: lim.waiters() == i + 1)  # type: ignore[misc]
    tasks.append(asyncio.create_task(take("interactive", INTERACTIVE)))
    await until(rig, lambda: lim.waiters() == 5)
    ticket.raise_to(INTERACTIVE)  # behind the interactive waiter, ahead of the bulk
    ticket.raise_to(BULK)  # a ticket never drops
    await asyncio.gather(*tasks)
    assert order == ["interactive", "bulk2", "bulk0", "bulk1", "bulk3"]
    assert lim.waiters() == 0


async def test_a_cancelled_waiter_gives_its_place_up(rig: Rig) -> None:
    lim = rig.limiter(rig.rate(1, 3))
    await send(rig, await lim.acquire(), [])
    first = asyncio.create_task(lim.acquire())
    await until(rig, lambda: lim.waiters() == 1)
    second = asyncio.create_task(lim.acquire())
    await until(rig, lambda: lim.waiters() == 2)
    first.cancel()
    (await second).release()
    assert first.cancelled()
    assert lim.waiters() == 0


class CancelOnGrant:
    """A store that cancels a chosen task the moment a reservation for it is granted."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.victim: asyncio.Task[Any] | None = None

    async def reserve(self, *args: Any, **kwargs: Any) -> Reply:
        reply = await self.inner.reserve(*args, **kwargs)
        if self.victim is not None and reply.wait == 0 and reply.state is None:
            self.victim.cancel()
            self.victim = None
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_waiter_cancelled_as_it_is_admitted_gives_the_slot_back(rig: Rig) -> None:
    stores: list[CancelOnGrant] = []

    def wrap(inner: Any) -> CancelOnGrant:
        stores.append(CancelOnGrant(inner))
        return stores[0]

    lim = rig.limiter(rig.rate(1, 100), wrap=wrap)
    store = stores[0]
    held = await lim.acquire()
    victim = asyncio.create_task(lim.acquire())
    await until(rig, lambda: lim.waiters() == 1)
    store.victim = victim
    held.release()  # room for the victim, which is cancelled as it gets it
    with pytest.raises(asyncio.CancelledError):
        await victim
    start = rig.clock.now()
    (await lim.acquire()).release()  # the victim's slot came back
    assert rig.clock.now() - start < 50 * rig.unit


async def test_closing_fails_every_waiter_and_refuses_new_calls(rig: Rig) -> None:
    lim = rig.limiter(rig.rate(1, 100), rig.rate(1, 100))
    await lim.acquire("k")
    waiters = [asyncio.create_task(lim.acquire()) for _ in range(3)]
    await until(rig, lambda: lim.waiters() == 3)
    await lim.aclose()
    for waiter in waiters:
        with pytest.raises(LimiterClosedError):
            await waiter
    with pytest.raises(LimiterClosedError):
        await lim.acquire()


# ------------------------------------------------------------------ 429s


async def test_a_cool_down_holds_every_caller_then_the_rate_recovers(rig: Rig) -> None:
    lim = rig.limiter(rig.rate(10))
    start = rig.clock.now()
    await lim.penalize(2 * rig.unit)
    state = lim.state()
    assert state.cooldown_remaining > 0
    assert state.effective_per_second == pytest.approx(5 / rig.unit)  # halved
    sends: list[float] = []
    for _ in range(3):
        await send(rig, await lim.acquire(), sends)
    assert sends[0] >= start + 2 * rig.unit
    # After the cool-down: no burst, spaced at period / (count * factor).
    assert sends[2] - sends[0] >= 2 * rig.unit / 6
    await rig.sleep(7)  # + 0.1 of the rate per period: back to full
    assert lim.state().effective_per_second == pytest.approx(10 / rig.unit)


async def test_a_learned_ceiling_recovers(rig: Rig) -> None:
    lim = rig.limiter(rig.rate(4))
    await lim.penalize(rig.unit, 2)
    state = lim.state()
    assert state.ceiling == 2
    assert state.ceiling_recovers_in > 0
    await rig.sleep(7)  # one period of cool-down, then 2 more of 4 at 0.4 per period
    assert lim.state().ceiling is None
    sends: list[float] = []
    for _ in range(4):
        await send(rig, await lim.acquire(), sends)
    assert max_in_any_window(sends, rig.unit) == 4


async def test_a_429_is_charged_to_the_limit_the_evidence_points_to(rig: Rig) -> None:
    def limiter() -> EndpointLimiter:
        return rig.limiter(rig.rate(5), rig.rate(10, 600))

    quiet = limiter()
    await send(rig, await quiet.acquire("a"), [])
    charged = rig.clock.now()
    await quiet.penalize(rig.unit, 5, key="a")  # one send in the window: not the company's
    assert quiet.state().cooldown_remaining == 0 and quiet.state().key_cooldowns == 1

    busy = limiter()
    for key in "abcde":
        await send(rig, await busy.acquire(key), [])
    await busy.penalize(rig.unit, 5, key="e")  # a full window: the company's
    assert busy.state().cooldown_remaining > 0 and busy.state().key_cooldowns == 0

    longer = limiter()
    for key in "abcde":
        await send(rig, await longer.acquire(key), [])
    await longer.penalize(45.0, None, key="e")  # a 1-period window never asks for 45 s
    assert longer.state().cooldown_remaining == 0 and longer.state().key_cooldowns == 1

    per_key = limiter()
    for key in "abcde":
        await send(rig, await per_key.acquire(key), [])
    await per_key.penalize(rig.unit, 10, key="e")  # the per-key count, not the company's
    assert per_key.state().cooldown_remaining == 0 and per_key.state().key_cooldowns == 1

    neither = limiter()
    for key in "abcde":
        await send(rig, await neither.acquire(key), [])
    await neither.penalize(rig.unit, 2, key="e")  # not the company's count: not the company's
    assert neither.state().cooldown_remaining == 0 and neither.state().key_cooldowns == 1

    sends: list[float] = []
    await send(rig, await quiet.acquire("b"), sends)  # other keys go
    await send(rig, await quiet.acquire("a"), sends)  # the cooled key waits its cool-down
    assert sends[1] >= charged + rig.unit


async def test_a_cool_down_beyond_the_cap_is_refused_not_slept_through(rig: Rig) -> None:
    lim = rig.limiter(rig.rate(1, 100), rig.rate(1, 600))
    await send(rig, await lim.acquire("a"), [])
    waiter = asyncio.create_task(lim.acquire("b"))
    await until(rig, lambda: lim.waiters() == 1)
    await lim.penalize(3600.0, cap=60.0)
    with pytest.raises(RateLimitedError) as info:
        await waiter
    assert info.value.retry_after is not None and 3000 < info.value.retry_after <= 3600
    with pytest.raises(RateLimitedError):
        await lim.acquire("c")
    assert lim.waiters() == 0

    keyed = rig.limiter(rig.rate(5), rig.rate(10, 600))
    await keyed.penalize(3600.0, 10, key="x", cap=60.0)  # one key's, not the company's
    with pytest.raises(RateLimitedError) as info:
        await keyed.acquire("x")
    assert info.value.retry_after is not None and info.value.retry_after > 3000
    (await keyed.acquire("y")).release()  # other keys go


async def test_a_default_cool_down_longer_than_the_cap_is_refused_too(rig: Rig) -> None:
    """Without a usable Retry-After the cool-down is one period of the limit charged: when
    that is longer than callers wait, they are refused as for an explicit one."""
    lim = rig.limiter(rig.rate(5), rig.rate(10, 600))
    await lim.penalize(None, None, key="x", cap=30 * rig.unit)  # the key's period: 600
    with pytest.raises(RateLimitedError) as info:
        await lim.acquire("x")
    assert info.value.retry_after is not None and info.value.retry_after > 30 * rig.unit
    await lim.penalize(None, None, cap=rig.unit / 2)  # the company's period
    with pytest.raises(RateLimitedError):
        await lim.acquire("y")

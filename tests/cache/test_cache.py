"""The usage cache (TTL, long-lived entries, max_age, maxsize) and single flight."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from esim_async import ManualClock, TransportError
from esim_async.cache import CacheEntry, CallScope, SingleFlight, TTLStore


def entry(value: str | None, stored: float, long_lived: bool = False) -> CacheEntry[str]:
    return CacheEntry(value, 1.7e9, stored, long_lived)


def test_entries_expire_after_their_ttl() -> None:
    clock = ManualClock()
    store: TTLStore[str, str] = TTLStore(ttl=1200, long_ttl=86400, maxsize=10, clock=clock)
    store.set("a", entry("usage", 0.0))
    store.set("n", entry(None, 0.0, long_lived=True))
    clock.advance(1199.9)
    assert store.get("a") is not None
    clock.advance(0.2)
    assert store.get("a") is None
    assert store.get("n") is not None  # negative / recycled entries live 24 h
    clock.advance(86400)
    assert store.get("n") is None


def test_an_entry_lives_its_ttl_from_its_own_stored_time() -> None:
    # A copy of an entry fetched elsewhere 90 s ago arrives aged: it lives 10 s more, not 100.
    clock = ManualClock(1000.0)
    store: TTLStore[str, int] = TTLStore(ttl=100.0, long_ttl=500.0, clock=clock)
    store.set("a", CacheEntry(1, 0.0, clock.now() - 90.0))
    store.set("gone", CacheEntry(None, 0.0, clock.now() - 499.0, True))
    assert store.get("a") is not None
    assert store.get("gone") is not None
    clock.advance(9.0)
    assert store.get("a") is not None
    assert store.get("gone") is None  # long-lived entries count from their stored time too
    clock.advance(1.0)
    assert store.get("a") is None


def test_max_age_rejects_older_entries() -> None:
    clock = ManualClock()
    store: TTLStore[str, str] = TTLStore(ttl=1200, maxsize=10, clock=clock)
    store.set("a", entry("usage", 0.0))
    clock.advance(300)
    assert store.get("a", max_age=600) is not None
    assert store.get("a", max_age=299) is None
    assert store.get("a") is not None  # still cached for callers without max_age


def test_maxsize_is_respected_and_expired_then_oldest_go_first() -> None:
    clock = ManualClock()
    store: TTLStore[str, str] = TTLStore(ttl=100, long_ttl=1000, maxsize=3, clock=clock)
    store.set("old", entry("x", 0.0))
    store.set("soon-expired", entry("x", 0.0))
    store.set("k0", entry("x", 0.0))
    clock.advance(50)
    assert store.get("old") is not None  # a read makes it recently used
    store.set("k1", entry("v", clock.now()))
    assert len(store) == 3
    assert store.get("soon-expired") is None  # least recently used went first
    assert store.get("old") is not None
    clock.advance(60)  # "old" and "k0" expired now
    store.set("k2", entry("v", clock.now()))
    store.set("k3", entry("v", clock.now()))
    assert len(store) == 3
    assert store.get("k1") is not None and store.get("k3") is not None


def test_zero_ttl_disables_caching_and_invalidate_forgets() -> None:
    clock = ManualClock()
    store: TTLStore[str, str] = TTLStore(ttl=0, maxsize=3, clock=clock)
    store.set("a", entry("v", 0.0))
    assert store.get("a") is None
    store2: TTLStore[str, str] = TTLStore(ttl=10, maxsize=3, clock=clock)
    store2.set("a", entry("v", 0.0))
    store2.invalidate("a")
    store2.invalidate("missing")
    assert store2.get("a") is None
    with pytest.raises(ValueError, match="maxsize"):
        TTLStore(maxsize=0, clock=clock)


async def test_single_flight_merges_concurrent_calls() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    calls = 0
    gate = asyncio.Event()

    async def work() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 42

    tasks = [asyncio.create_task(flight.run("k", work)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert [r for r, _ in results] == [42] * 5
    assert sorted(j for _, j in results) == [False, True, True, True, True]
    assert len(flight) == 0


async def test_cancelled_waiter_does_not_disturb_the_others() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    gate = asyncio.Event()
    started = 0

    async def work() -> int:
        nonlocal started
        started += 1
        await gate.wait()
        return 7

    leader = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(flight.run("k", work))
    other = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0)
    gate.set()
    assert await leader == (7, False)
    assert await other == (7, True)
    assert waiter.cancelled()
    assert started == 1


async def test_cancelled_first_caller_hands_the_call_over_to_the_others() -> None:
    """The first caller runs the call in its own task: cancelled, it takes its call with it,
    and the call runs again, in a task of its own, for the callers still waiting."""
    flight: SingleFlight[str, int] = SingleFlight()
    gate = asyncio.Event()
    started = 0

    async def work() -> int:
        nonlocal started
        started += 1
        await gate.wait()
        return 7

    first = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    second = asyncio.create_task(flight.run("k", work))
    third = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    first.cancel()  # the caller that started the request leaves ...
    await asyncio.sleep(0)
    gate.set()
    # ... and the others still get an answer, from one request more.
    assert [await second, await third] == [(7, True), (7, True)]
    assert first.cancelled()
    assert started == 2
    assert len(flight) == 0


async def test_last_caller_leaving_cancels_the_work() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    running = asyncio.Event()
    cancelled = asyncio.Event()

    async def work() -> int:
        running.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    caller = asyncio.create_task(flight.run("k", work))
    await asyncio.wait_for(running.wait(), 5)
    caller.cancel()
    await asyncio.wait_for(cancelled.wait(), 5)
    assert "k" not in flight


async def test_errors_reach_every_caller_and_are_not_kept() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    attempts = 0

    async def work() -> int:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    results = await asyncio.gather(
        flight.run("k", work), flight.run("k", work), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    with pytest.raises(RuntimeError):
        await flight.run("k", work)
    assert attempts == 2  # a failure is not remembered


class Options:
    def __init__(self, level: int) -> None:
        self.level = level

    def join(self, other: Options) -> None:
        self.level = max(self.level, other.level)


async def test_fresh_call_never_joins_and_later_callers_join_the_newest() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    gates = [asyncio.Event(), asyncio.Event()]
    started = 0

    async def work() -> int:
        nonlocal started
        started += 1
        n = started
        await gates[n - 1].wait()
        return n

    old = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    fresh = asyncio.create_task(flight.run("k", work, fresh=True))
    await asyncio.sleep(0)
    later = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    for gate in gates:
        gate.set()
    assert await asyncio.gather(old, fresh, later) == [(1, False), (2, False), (2, True)]
    assert started == 2
    assert len(flight) == 0


async def test_joiners_options_are_merged_into_the_shared_call() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    leader_options = Options(1)
    gate = asyncio.Event()

    async def work() -> int:
        await gate.wait()
        return leader_options.level

    first = asyncio.create_task(flight.run("k", work, options=leader_options))
    await asyncio.sleep(0)
    joiners = [
        asyncio.create_task(flight.run("k", work, options=Options(level))) for level in (3, 2)
    ]
    await asyncio.sleep(0)
    gate.set()
    assert await first == (3, False)
    assert [await j for j in joiners] == [(3, True), (3, True)]


async def test_closed_flight_answers_waiters_and_refuses_later_calls() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    async def work() -> int:
        await asyncio.sleep(3600)
        return 1

    waiting = [
        asyncio.create_task(flight.run("k", work)),
        asyncio.create_task(flight.run("k", work, fresh=True)),
    ]
    await asyncio.sleep(0)
    await asyncio.wait_for(flight.aclose(), 2)
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, TransportError) for r in results), results
    with pytest.raises(TransportError):
        await flight.run("k", work)


async def test_call_scope_close_answers_callers_and_a_cancelled_caller_cancels_its_call() -> None:
    scope = CallScope()
    cancelled = asyncio.Event()

    async def wait() -> int:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    leaving = asyncio.create_task(scope.run(wait()))
    for _ in range(3):
        await asyncio.sleep(0)  # the call is waiting
    leaving.cancel()
    await asyncio.wait_for(cancelled.wait(), 2)
    with pytest.raises(asyncio.CancelledError):
        await leaving
    staying = asyncio.create_task(scope.run(wait()))
    await asyncio.sleep(0)
    assert len(scope) == 1
    await asyncio.wait_for(scope.aclose(), 2)
    with pytest.raises(TransportError):
        await staying
    assert len(scope) == 0
    with pytest.raises(TransportError):
        await scope.run(wait())


class CountingLoop(asyncio.SelectorEventLoop):
    """Counts the callbacks scheduled on the loop (one per task step, wake-up or done
    callback): the work single flight adds to a call."""

    scheduled = 0

    def call_soon(self, *args: Any, **kwargs: Any) -> asyncio.Handle:  # type: ignore[override]
        self.scheduled += 1
        return super().call_soon(*args, **kwargs)


def test_a_shared_call_costs_the_loop_one_callback() -> None:
    """The first caller runs the call in its own task, from the loop's next pass: no task of
    its own to start, no wake-up of a waiting caller, no shield, no done callbacks."""
    loop = CountingLoop()
    flight: SingleFlight[str, int] = SingleFlight()

    async def work() -> int:
        return 42

    async def counted() -> tuple[int, tuple[int, bool]]:
        before = loop.scheduled
        result = await flight.run("k", work)
        return loop.scheduled - before, result

    try:
        scheduled, result = loop.run_until_complete(counted())
    finally:
        loop.close()
    assert result == (42, False)
    assert scheduled == 1
    assert len(flight) == 0


async def test_a_caller_cancelled_as_the_answer_arrives_leaves_no_unretrieved_error() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    gate = asyncio.Event()
    unretrieved: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: unretrieved.append(ctx))

    async def work() -> int:
        await gate.wait()
        raise RuntimeError("boom")

    callers = [asyncio.create_task(flight.run("k", work)) for _ in range(2)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.sleep(0)
    callers[0].cancel()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert isinstance(results[1], RuntimeError)
    import gc

    gc.collect()
    assert unretrieved == []

"""What only a shared store has: several processes, processes that die, a Redis that loses its
state or goes away. Real redis-server on 127.0.0.1 (skipped without one, unless
ESIM_REQUIRE_REDIS=1); counts, errors and lower bounds on send times are asserted."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from esim_async.clock import ManualClock, MonotonicClock
from esim_async.limits import BackendUnavailableError, EndpointLimiter, Rate

from ..arrivals import max_in_any_window
from ..conftest import RedisServer
from .redis_rig import redis_store

CLOCK = MonotonicClock()


class Processes:
    """Limiters of one endpoint in several "processes" (each its own store and connection)."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.closers: list[Any] = []
        self.limiters: list[EndpointLimiter] = []

    def limiter(
        self,
        shared: Rate | None,
        per_key: Rate | None = None,
        *,
        name: str = "acct:usage",
        clock: Any = CLOCK,
        fail_open: int | None = None,
        **store: Any,
    ) -> EndpointLimiter:
        s, close = redis_store(self.server.url, name, clock, **store)
        self.closers.append(close)
        lim = EndpointLimiter(
            name,
            shared=shared,
            per_key=per_key,
            clock=clock,
            margin=0.0,
            stamp_sends=True,
            store=s,
            fail_open=fail_open,
        )
        self.limiters.append(lim)
        return lim

    async def aclose(self) -> None:
        for lim in self.limiters:
            await lim.aclose()
        for close in self.closers:
            await close()


@pytest.fixture
async def procs(redis_server: RedisServer) -> Any:
    p = Processes(redis_server)
    try:
        yield p
    finally:
        await p.aclose()


async def test_processes_share_one_window_counted_at_send_time(procs: Processes) -> None:
    """Four processes, each request held up 0-60 ms between admission and send (a token, a
    slow connection): the sends of all of them together keep the window."""
    rate = Rate(3, 0.2)
    limiters = [procs.limiter(rate) for _ in range(4)]
    sends: list[float] = []

    async def request(lim: EndpointLimiter, lag: float) -> None:
        slot = await lim.acquire()
        await asyncio.sleep(lag)
        slot.mark(CLOCK.now())
        sends.append(CLOCK.now())

    async with asyncio.timeout(20):  # a hang guard only
        await asyncio.gather(*(request(lim, 0.015 * (i % 5)) for i in range(6) for lim in limiters))
    assert len(sends) == 24
    assert max_in_any_window(sorted(sends), rate.period) <= rate.count


async def test_a_reservation_of_a_dead_process_counts_as_sent_at_the_bound(
    procs: Processes,
) -> None:
    dead = procs.limiter(Rate(1, 0.2), pending_ttl=0.5)
    alive = procs.limiter(Rate(1, 0.2), pending_ttl=0.5)
    await dead.acquire()  # reserved, never confirmed nor released
    start = CLOCK.now()
    async with asyncio.timeout(5):  # never stuck on it for good
        slot = await alive.acquire()
    slot.mark(CLOCK.now())
    assert CLOCK.now() >= start + 0.5 + 0.2 * 0.99  # counted as sent at the bound


async def test_state_lost_holds_every_process_for_the_shared_period(
    procs: Processes, redis_server: RedisServer
) -> None:
    one = procs.limiter(Rate(5, 0.3), Rate(10, 60.0))
    two = procs.limiter(Rate(5, 0.3), Rate(10, 60.0))
    for lim, key in ((one, "a"), (two, "b")):
        (await lim.acquire(key)).mark(CLOCK.now())
    client = __import__("redis").Redis.from_url(redis_server.url)
    client.flushall()  # as after a restart without persistence
    client.close()
    lost = CLOCK.now()
    sends = []
    for lim, key in ((one, "c"), (two, "d")):
        slot = await lim.acquire(key)
        slot.mark(CLOCK.now())
        sends.append(CLOCK.now())
    assert one.state().quarantines + two.state().quarantines == 1
    # Both held one shared period (0.3 s), not the per-key minute.
    assert all(t >= lost + 0.3 * 0.99 for t in sends)
    assert all(t < lost + 30.0 for t in sends)


async def test_a_state_that_expired_idle_is_not_lost_state(procs: Processes) -> None:
    lim = procs.limiter(Rate(5, 0.2), state_ttl=0.3)
    (await lim.acquire()).mark(CLOCK.now())
    await asyncio.sleep(0.5)  # idle longer than the state lives
    (await lim.acquire()).mark(CLOCK.now())
    assert lim.state().quarantines == 0


async def test_queued_callers_fail_together_when_redis_dies(
    procs: Processes, redis_server: RedisServer
) -> None:
    lim = procs.limiter(Rate(1, 1.0), wait=0.5)
    (await lim.acquire()).mark(CLOCK.now())
    queued = [asyncio.create_task(lim.acquire()) for _ in range(5)]
    while lim.waiters() < 5:
        await asyncio.sleep(0.005)
    await asyncio.to_thread(redis_server.stop)
    async with asyncio.timeout(5):  # a hang guard only
        results = await asyncio.gather(*queued, return_exceptions=True)
    assert all(isinstance(r, BackendUnavailableError) for r in results), results
    with pytest.raises(BackendUnavailableError):
        await lim.acquire()


async def test_fail_open_runs_on_a_share_of_the_budget_then_goes_back(
    procs: Processes, redis_server: RedisServer
) -> None:
    clock = ManualClock()
    lim = procs.limiter(Rate(10, 1.0), Rate(10, 60.0), clock=clock, fail_open=2, wait=0.3)
    (await lim.acquire("first")).mark(clock.now())
    os.kill(redis_server.proc.pid, signal.SIGSTOP)  # unreachable, state kept
    sends = []
    try:
        async with asyncio.timeout(10):  # a hang guard only
            for i in range(20):
                slot = await lim.acquire(f"iccid-{i}")
                slot.mark(clock.now())
                sends.append(clock.now())
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    assert max_in_any_window(sends, 1.0) <= 5  # budget / 2
    assert sends[-1] < 10.0  # steady, no stop for the per-key period
    clock.advance(5.0)  # time to try Redis again
    slot = await lim.acquire("again")
    slot.mark(clock.now())
    # back on Redis one shared period after the last local send (not the per-key minute)
    assert sends[-1] + 1.0 <= clock.now() < sends[-1] + 30.0

"""A Redis that lost a limiter's state (restart without persistence, failover, flush) while
a process that never saw that state is the first to use it again. Real redis-server on
127.0.0.1 (skipped without one, unless ESIM_REQUIRE_REDIS=1); counts and lower bounds on send
times are asserted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from esim_async.clock import MonotonicClock
from esim_async.limits import Rate

from ..arrivals import max_in_any_window
from ..conftest import RedisServer
from .test_redis_store import Processes

CLOCK = MonotonicClock()


@pytest.fixture
async def procs(redis_server: RedisServer) -> Any:
    p = Processes(redis_server)
    try:
        yield p
    finally:
        await p.aclose()


def flush(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url)
    client.flushall()  # as after a restart without persistence
    client.close()


async def test_a_process_that_saw_the_state_is_held_when_a_newcomer_recreated_it(
    procs: Processes, redis_server: RedisServer
) -> None:
    """The state is lost while the first process has just used the whole window; a process
    started meanwhile cannot tell the loss from idleness and goes first. The first process
    must still find the state lost (it is not the one it saw) and hold everyone one period,
    instead of sending into the empty window as if nothing had happened."""
    rate = Rate(5, 0.4)
    old = procs.limiter(rate)
    for _ in range(5):
        (await old.acquire()).mark(CLOCK.now())
    flush(redis_server)
    lost = CLOCK.now()
    newcomer = procs.limiter(rate)
    (await newcomer.acquire()).mark(CLOCK.now())  # it cannot know: it goes at once
    sends = []
    for lim in (old, old, newcomer):
        (await lim.acquire()).mark(CLOCK.now())
        sends.append(CLOCK.now())
    assert old.state().quarantines == 1
    assert newcomer.state().quarantines == 0  # it saw nothing lost: it follows the hold
    assert all(t >= lost + rate.period * 0.99 for t in sends), [t - lost for t in sends]


async def test_a_newcomer_after_idleness_holds_no_one(procs: Processes) -> None:
    """The counterpart: a state that expired while idle and is recreated by a newcomer is not
    lost for a process whose last contact is older than the state's lifetime."""
    rate = Rate(5, 0.2)
    old = procs.limiter(rate, state_ttl=0.3)
    (await old.acquire()).mark(CLOCK.now())
    await asyncio.sleep(0.5)  # idle longer than the state lives
    newcomer = procs.limiter(rate, state_ttl=0.3)
    (await newcomer.acquire()).mark(CLOCK.now())
    (await old.acquire()).mark(CLOCK.now())
    assert old.state().quarantines == 0
    assert newcomer.state().quarantines == 0


async def test_falling_back_to_local_limits_waits_out_the_shared_sends(
    procs: Processes, redis_server: RedisServer
) -> None:
    """fail_open=N: two processes have just used the whole shared window when Redis dies.
    Each falls back to budget / 2, but the sends of the last period still count: together the
    two must stay within the budget in any window of the period, not send budget more."""
    rate = Rate(10, 1.0)
    one = procs.limiter(rate, fail_open=2, wait=0.3)
    two = procs.limiter(rate, fail_open=2, wait=0.3)
    sends: list[float] = []

    async def send(lim: Any) -> None:
        (await lim.acquire()).mark(CLOCK.now())
        sends.append(CLOCK.now())

    async with asyncio.timeout(10):  # hang guard
        for _ in range(5):
            await send(one)
            await send(two)
        await asyncio.to_thread(redis_server.stop)
        await asyncio.gather(*(send(lim) for lim in (one, two) for _ in range(5)))
    assert len(sends) == 20
    assert max_in_any_window(sorted(sends), rate.period) <= rate.count

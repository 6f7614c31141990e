"""The Redis limiter charges a 429 like the memory one: per key or shared, ceilings that do not
stay lowered for good, long cool-downs refused instead of slept through. Needs redis-server
(skipped without one, unless ESIM_REQUIRE_REDIS=1)."""

from __future__ import annotations

import asyncio

import pytest

from esim_async import MonotonicClock, Rate, RateLimitedError
from esim_async.backends.redis import RedisBackend
from esim_async.limits import EndpointLimiter

from ..conftest import RedisServer
from ..limiter.test_limits import max_in_any_window


def backend(server: RedisServer) -> RedisBackend:
    return RedisBackend.from_url(server.url, prefix="f")


async def test_a_per_esim_429_cools_that_esim_only(redis_server: RedisServer) -> None:
    b = backend(redis_server)
    limiter = b.limiter(
        "acct:usage",
        shared=Rate(5, 1.0),
        per_key=Rate(10, 60.0),
        margin=0.0,
        clock=MonotonicClock(),
    )
    await limiter.acquire("a")
    await limiter.penalize(30.0, 10, key="a", cap=60.0)  # a 1 s window never asks for 30 s
    await limiter.penalize(3600.0, 10, key="b", cap=60.0)
    state = await b.redis.hgetall(b.key("acct:usage", "state"))
    assert b"cooldown_until" not in state  # the company budget is untouched
    assert limiter.state().key_cooldowns == 2
    assert limiter.state().cooldown_remaining == 0
    async with asyncio.timeout(5):  # a hang guard only
        await limiter.acquire("c")  # another eSIM goes
    with pytest.raises(RateLimitedError) as info:
        await limiter.acquire("b")  # refused at once, not slept through
    assert info.value.retry_after is not None and 3000 < info.value.retry_after <= 3600
    await limiter.aclose()
    await b.aclose()


async def test_a_shared_cool_down_beyond_the_cap_is_refused(redis_server: RedisServer) -> None:
    b = backend(redis_server)
    limiter = b.limiter(
        "acct:packages", shared=Rate(80, 60.0), per_key=None, margin=0.0, clock=MonotonicClock()
    )
    await limiter.penalize(3600.0, None, cap=60.0)
    with pytest.raises(RateLimitedError):
        await limiter.acquire()
    state = await b.redis.hgetall(b.key("acct:packages", "state"))
    assert float(state[b"cooldown_until"]) > 0  # other processes cool down too
    await limiter.aclose()
    await b.aclose()


async def test_a_ceiling_learned_from_a_header_expires(redis_server: RedisServer) -> None:
    b = backend(redis_server)
    clock = MonotonicClock()
    limiter = b.limiter("acct:token", shared=Rate(10, 0.1), per_key=None, margin=0.0, clock=clock)
    await limiter.penalize(0.1, 2)
    state = await b.redis.hgetall(b.key("acct:token", "state"))
    assert int(state[b"ceiling"]) == 2
    assert limiter.state().ceiling == 2
    # One period of cool-down, then 10 % of the count back per period: 0.9 s in all.
    await asyncio.sleep(1.2)
    assert limiter.state().ceiling is None
    sends = []
    for _ in range(10):
        (await limiter.acquire()).mark(clock.now())
        sends.append(clock.now())
    assert max_in_any_window(sends, 0.1) == 10  # the configured count is back
    await limiter.aclose()
    await b.aclose()


async def test_an_ambiguous_429_is_the_companys_only_when_its_window_was_full(
    redis_server: RedisServer,
) -> None:
    b = backend(redis_server)
    clock = MonotonicClock()

    def limiter(name: str) -> EndpointLimiter:
        return b.limiter(name, shared=Rate(5, 1.0), per_key=Rate(10, 60.0), margin=0.0, clock=clock)

    quiet = limiter("acct:quiet")
    (await quiet.acquire("a")).mark(clock.now())
    await quiet.penalize(1.0, None, key="a")
    busy = limiter("acct:busy")
    for key in "bcdef":
        (await busy.acquire(key)).mark(clock.now())
    await busy.penalize(1.0, None, key="f")
    assert b"cooldown_until" not in await b.redis.hgetall(b.key("acct:quiet", "state"))
    assert b"cooldown_until" in await b.redis.hgetall(b.key("acct:busy", "state"))
    assert busy.state().cooldown_remaining > 0
    assert quiet.state().cooldown_remaining == 0
    await b.aclose()

"""The monitor's lease under faults: a take whose reply was lost, a renewal that failed for a
moment, and two hosts of one account id (a sandbox and production are two accounts)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from esim_async import AiraloClient, MonotonicClock
from esim_async.monitor import FleetMonitor, LocalMonitorLock, RedisMonitorLock

from .rig import COMPANY, PER_KEY, rig

pytest.importorskip("redis")
from redis.exceptions import TimeoutError as RedisTimeout


class LostReplies:
    """A Redis client whose next ``lost`` commands run on the server but whose replies never
    come back (a socket timeout after the command was sent)."""

    def __init__(self, redis: Any, lost: int) -> None:
        self.redis = redis
        self.lost = lost
        self.commands = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.redis, name)

    def register_script(self, source: str) -> Any:
        script = self.redis.register_script(source)

        async def run(**kwargs: Any) -> Any:
            return await self._answer(script(**kwargs))

        return run

    async def set(self, *args: Any, **kwargs: Any) -> Any:
        return await self._answer(self.redis.set(*args, **kwargs))

    async def _answer(self, command: Any) -> Any:
        self.commands += 1
        result = await command
        if self.lost > 0:
            self.lost -= 1
            raise RedisTimeout("Timeout reading from socket")
        return result


class CountingClock(MonotonicClock):
    def __init__(self) -> None:
        super().__init__()
        self.sleeps = 0

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        await super().sleep(seconds)


async def test_a_take_whose_reply_was_lost_is_the_takers_own(redis_server: object) -> None:
    """The first take ran on the server but its reply was lost: the next try finds the lease
    its own instead of waiting for it to lapse (no other monitor ever held it)."""
    import redis.asyncio as aioredis

    real = aioredis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
    flaky = LostReplies(real, lost=1)
    lock, rival = RedisMonitorLock(flaky), RedisMonitorLock(real)
    clock = CountingClock()
    try:
        await asyncio.wait_for(lock.acquire("airalo:acct:monitor", 3.0, clock), 10)
        assert clock.sleeps == 1  # one failed try, then held: not a lease's life spent waiting
        # ... and it really is held by it alone.
        assert await lock.renew("airalo:acct:monitor", 3.0)
        assert not await rival.renew("airalo:acct:monitor", 3.0)
        waiting = asyncio.ensure_future(rival.acquire("airalo:acct:monitor", 3.0, MonotonicClock()))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        waiting.cancel()
        await lock.release("airalo:acct:monitor")
    finally:
        await real.aclose()


async def test_a_renewal_lost_in_transit_does_not_stop_the_holder_for_a_lease(
    redis_server: object,
) -> None:
    """A renewal whose reply was lost: the holder stands by, and takes its own lease straight
    back rather than waiting for it to lapse."""
    import redis.asyncio as aioredis

    real = aioredis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
    flaky = LostReplies(real, lost=0)
    lock = RedisMonitorLock(flaky)
    clock = CountingClock()
    try:
        await lock.acquire("airalo:acct:monitor", 3.0, clock)
        flaky.lost = 1
        assert not await lock.renew("airalo:acct:monitor", 3.0)  # unknown: treated as lost
        sleeps = clock.sleeps
        await asyncio.wait_for(lock.acquire("airalo:acct:monitor", 3.0, clock), 10)
        assert clock.sleeps == sleeps  # taken back at the first try
    finally:
        await real.aclose()


async def test_one_account_id_on_two_hosts_takes_two_leases() -> None:
    """Monitors of the same account id on two base URLs (a sandbox and production) are not
    one account: both run, neither stands by for the other."""
    async with rig(size=4) as r:
        lock = LocalMonitorLock()
        other_host = AiraloClient(
            "id",  # the rig's client's id
            "secret",
            base_url="http://127.0.0.1:9",  # a closed port: its reads fail, it still runs
            company_rate=COMPANY,
            iccid_rate=PER_KEY,
            cache_ttl=10.0,
            clock=r.clock,
            max_retries=0,
        )
        try:
            here, there = r.monitor(lock=lock), FleetMonitor(other_host, expiring_within=0.0)
            await here.start()
            await there.start()
            await r.clock.run(5, 0.5)
            assert here.active and there.active
            await here.stop()
            await there.stop()
        finally:
            await other_host.aclose()

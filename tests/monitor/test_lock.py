"""One running monitor per account: a second one stands by and takes over when the first stops
or dies (in process, and across processes through Redis)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from esim_async import AiraloClient, MonotonicClock, Rate
from esim_async.clock import Clock
from esim_async.monitor import FleetMonitor, LocalMonitorLock, RedisMonitorLock

from .fleets import fleet, iccid, record
from .rig import rig


class DyingLock(LocalMonitorLock):
    """A holder that dies: it stops renewing and never releases (the process is gone)."""

    def __init__(self) -> None:
        super().__init__()
        self.dead = False

    async def renew(self, name: str, ttl: float) -> bool:
        if self.dead:
            await asyncio.Event().wait()  # hangs, as a frozen process would
        return await super().renew(name, ttl)

    async def release(self, name: str) -> None:
        if not self.dead:
            await super().release(name)


async def test_a_second_monitor_stands_by_and_takes_over_when_the_first_stops(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fleet.db"
    sims = [iccid(n) for n in range(1, 9)]
    records = [record(n, 200 if n == 1 else 900) for n in range(1, 9)]
    async with rig(fleet=fleet(*records)) as r:
        first, standby = r.monitor(store=path), r.monitor(store=path)
        await first.track(sims)
        await first.start()
        await r.clock.run(5, 0.5)
        await standby.start()
        await r.clock.run(30, 0.5)
        assert first.active and not standby.active
        assert standby.stats.reads == 0 and first.stats.reads > 0
        await first.stop()
        await r.clock.run(30, 0.5)
        assert standby.active
        assert standby.stats.reads > 0
        # It resumed from what the first one stored: the 75 % crossing is not reported again.
        assert first.stats.events["threshold"] == 1
        assert standby.stats.events["threshold"] == 0
        assert standby.stats.loads == 2  # loaded at start, reloaded on taking over
        await standby.stop()
        assert r.rate_limited == 0


async def test_a_standby_takes_over_when_the_holder_dies() -> None:
    async with rig(size=6) as r:
        dying = DyingLock()
        first = r.monitor(lock=dying)
        standby = r.monitor()
        await first.track(r.emu.fleet.iccids())
        await standby.track(r.emu.fleet.iccids())
        await first.start()
        await standby.start()
        await r.clock.run(20, 0.5)
        assert first.active and not standby.active
        dying.dead = True  # from now on the holder neither renews nor releases
        await r.clock.run(20, 0.5)
        assert standby.active
        reads = standby.stats.reads
        await r.clock.run(20, 0.5)
        assert standby.stats.reads > reads
        await standby.stop()
        first_runner_stopped = asyncio.ensure_future(first.stop())
        await r.clock.run(1, 0.5)
        await first_runner_stopped
        assert r.rate_limited == 0


async def wait_for(predicate: object, clock: Clock, rounds: int = 500) -> bool:
    """Poll ``predicate`` (a callable) on the clock for a bounded number of rounds."""
    assert callable(predicate)
    for _ in range(rounds):
        if predicate():
            return True
        await clock.sleep(0.01)
    return bool(predicate())


async def test_redis_lease_is_exclusive_renewable_and_taken_over(redis_server: object) -> None:
    url = redis_server.url  # type: ignore[attr-defined]
    clock = MonotonicClock()
    holder, standby = RedisMonitorLock(url), RedisMonitorLock(url)
    try:
        await holder.acquire("airalo:acct:monitor", 0.3, clock)
        waiting = asyncio.ensure_future(standby.acquire("airalo:acct:monitor", 0.3, clock))
        for _ in range(6):  # renewed for longer than a lease lasts: the standby keeps waiting
            assert await holder.renew("airalo:acct:monitor", 0.3)
            await clock.sleep(0.1)
        assert not waiting.done()
        # The holder dies (stops renewing): the lease lapses and the standby has it.
        assert await wait_for(waiting.done, clock)
        await waiting
        assert not await holder.renew("airalo:acct:monitor", 0.3)
        await standby.release("airalo:acct:monitor")
        await asyncio.wait_for(holder.acquire("airalo:acct:monitor", 0.3, clock), 5)
        await holder.release("airalo:acct:monitor")
    finally:
        await holder.aclose()
        await standby.aclose()


async def test_redis_lock_keeps_one_monitor_of_an_account_running(redis_server: object) -> None:
    pytest.importorskip("redis")
    from esim_async.backends.redis import RedisBackend

    url = redis_server.url  # type: ignore[attr-defined]
    rate = Rate(50, 1.0)
    limits_fleet = fleet(*(record(n, 900) for n in range(1, 6)))
    from esim_async.testing import Emulator, ServerLimits

    limits = ServerLimits(usage_company=rate, usage_iccid=None, token=None)
    async with Emulator(fleet=limits_fleet, limits=limits, cache_ttl=2.0) as emu:
        clients = [
            AiraloClient(
                "acct",
                "secret",
                base_url=emu.url,
                company_rate=rate,
                iccid_rate=None,
                cache_ttl=2.0,
                backend=RedisBackend.from_url(url),
            )
            for _ in range(2)
        ]
        locks = [RedisMonitorLock(url), RedisMonitorLock(url)]
        monitors = [
            FleetMonitor(c, lock=lock, expiring_within=0.0)
            for c, lock in zip(clients, locks, strict=True)
        ]
        clock = MonotonicClock()
        try:
            for m in monitors:
                await m.track(emu.fleet.iccids())
                await m.start()
            assert await wait_for(lambda: any(m.active for m in monitors), clock)
            await clock.sleep(0.3)
            assert sum(m.active for m in monitors) == 1
            holder = next(m for m in monitors if m.active)
            other = next(m for m in monitors if m is not holder)
            assert other.stats.reads == 0
            await holder.stop()
            assert await wait_for(lambda: other.active and other.stats.reads > 0, clock)
        finally:
            for m in monitors:
                await m.stop()
            for c in clients:
                await c.aclose()
            for lock in locks:
                await lock.aclose()
        assert emu.stats.rate_limited == 0


async def test_a_client_with_a_redis_backend_gets_a_redis_lease(redis_server: object) -> None:
    from esim_async.backends.redis import RedisBackend

    backend = RedisBackend.from_url(redis_server.url)  # type: ignore[attr-defined]
    async with AiraloClient("acct", "secret", cache_ttl=1.0, backend=backend) as client:
        assert isinstance(FleetMonitor(client).lock, RedisMonitorLock)
    async with AiraloClient("acct", "secret", cache_ttl=1.0) as client:
        assert isinstance(FleetMonitor(client).lock, LocalMonitorLock)

"""A fleet monitor on the emulator, on one virtual clock shared by emulator, client and monitor.

Time moves only when a test advances it (:meth:`VirtualClock.advance`); sleepers wake in
deadline order and the loop settles after each, so what the monitor does is stated in counts
and virtual times, never in real durations. Every usage request that reaches the emulator is
logged with its virtual arrival time (:attr:`Rig.arrivals`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from esim_async import AiraloClient, BaseClient, PressOneClient, Rate
from esim_async.monitor import FleetMonitor, UsageEvent
from esim_async.testing import Emulator, Fleet, ServerLimits

Provider = Literal["airalo", "pressone"]
_USAGE = re.compile(r"/sims/(\d+)/usage$")
WALL = 1_900_000_000.0
#: Airalo's usage limits (5 per second, 10 per minute per eSIM), on both sides by default.
COMPANY = Rate(5, 1.0)
PER_KEY = Rate(10, 60.0)


class VirtualClock:
    """Time moves only when the test advances it; sleepers wake in deadline order."""

    def __init__(self) -> None:
        self._now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        #: What the server has seen so far (requests arrived, requests in its handlers):
        #: time only moves on once it stops changing and nothing is in a handler, so a request
        #: is never stamped later on the clock than when it was sent.
        self.activity: Callable[[], tuple[int, int]] = lambda: (0, 0)

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return WALL + self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    async def advance(self, seconds: float) -> None:
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, fut = heapq.heappop(self._sleepers)
            if fut.done():
                continue
            self._now = max(self._now, when)
            fut.set_result(None)
            await self.settle()
        self._now = target
        await self.settle()

    async def settle(self) -> None:
        """Let every runnable task run, loopback HTTP included, until all wait for time."""
        seen = None
        for _ in range(200):
            await settle()
            now = self.activity()
            if now == seen and now[1] == 0:
                return
            seen = now

    async def run(self, seconds: float, step: float) -> None:
        """Advance ``seconds`` in steps of ``step``, settling after each."""
        steps = round(seconds / step)
        for _ in range(steps):
            await self.advance(step)


async def settle() -> None:
    """Let every runnable task run (loopback HTTP included) until it waits for time."""
    for _ in range(2):
        for _ in range(20):
            await asyncio.sleep(0)
        await asyncio.sleep(0.001)


@dataclass
class Rig:
    clock: VirtualClock
    emu: Emulator
    client: BaseClient
    #: (virtual arrival time, ICCID) of every usage request that reached the emulator.
    arrivals: list[tuple[float, str]] = field(default_factory=list)
    events: list[UsageEvent] = field(default_factory=list)

    def reads(self, iccid: str | None = None) -> list[float]:
        return [t for t, i in self.arrivals if iccid is None or i == iccid]

    def per_iccid(self) -> Counter[str]:
        return Counter(i for _, i in self.arrivals)

    @property
    def rate_limited(self) -> int:
        return self.emu.stats.rate_limited

    def monitor(self, **options: Any) -> FleetMonitor:
        options.setdefault("expiring_within", 0.0)
        return FleetMonitor(self.client, **options)

    @asynccontextmanager
    async def running(self, monitor: FleetMonitor) -> AsyncIterator[FleetMonitor]:
        """Run ``monitor`` and collect its events into :attr:`events`."""

        async def collect() -> None:
            async for event in monitor.events():
                self.events.append(event)

        async with monitor:
            task = asyncio.get_running_loop().create_task(collect())
            try:
                yield monitor
            finally:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        await settle()

    def kinds(self, iccid: str | None = None) -> list[tuple[str, float | None]]:
        return [(e.kind, e.threshold) for e in self.events if iccid is None or e.iccid == iccid]


def limited_fleet(size: int, seed: int = 5) -> Fleet:
    return Fleet.generate(size, seed=seed)


@asynccontextmanager
async def rig(
    *,
    provider: Provider = "airalo",
    fleet: Fleet | None = None,
    size: int = 20,
    cache_ttl: float = 10.0,
    company: Rate | None = COMPANY,
    per_key: Rate | None = PER_KEY,
    clock: VirtualClock | None = None,
) -> AsyncIterator[Rig]:
    """An emulator and a client on one virtual clock, the limits the same on both sides."""
    clock = clock or VirtualClock()
    arrivals: list[tuple[float, str]] = []
    seen = [0, 0]  # requests arrived, requests in a handler
    clock.activity = lambda: (seen[0], seen[1])

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        match = _USAGE.search(request.path)
        if match is not None:
            arrivals.append((clock.now(), match.group(1)))
        seen[0] += 1
        seen[1] += 1
        try:
            return await handler(request)
        finally:
            seen[1] -= 1

    limits = ServerLimits(usage_company=company, usage_iccid=per_key, token=None)
    emu = Emulator(
        fleet=fleet if fleet is not None else limited_fleet(size),
        limits=limits,
        cache_ttl=cache_ttl,
        clock=clock,
        middlewares=[record],
    )
    async with emu:
        client: BaseClient
        if provider == "airalo":
            client = AiraloClient(
                "id",
                "secret",
                base_url=emu.url,
                company_rate=company,
                iccid_rate=per_key,
                cache_ttl=cache_ttl,
                clock=clock,
            )
        else:
            client = PressOneClient(
                "id",
                "secret",
                base_url=emu.url,
                company_rate=company,
                iccid_rate=per_key,
                cache_ttl=cache_ttl,
                clock=clock,
            )
        async with client:
            yield Rig(clock, emu, client, arrivals)


def our_tasks() -> list[asyncio.Task[Any]]:
    """Tasks of the library still alive (the monitor's, the client's)."""
    current = asyncio.current_task()
    return [
        t
        for t in asyncio.all_tasks()
        if t is not current
        and not t.done()
        and ("esim_async" in t.get_name() or "monitor" in repr(t.get_coro()))
    ]

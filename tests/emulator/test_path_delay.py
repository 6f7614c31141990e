"""The emulator's network path: a one-way delay with jitter before the limits count a request.

Everything runs on a virtual clock: a request is held until the test advances the clock past its
delay, so the assertions are about counts and virtual arrival times, never about how long the
test took.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from esim_async import Rate
from esim_async.testing import Emulator, Fleet, PathDelay, ServerLimits
from esim_async.testing.path import PathMiddleware
from tests.arrivals import ArrivalLog


class VirtualClock:
    """Time moves only when the test advances it; sleepers wake in deadline order."""

    def __init__(self) -> None:
        self._now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    @property
    def sleeping(self) -> int:
        return sum(1 for *_, fut in self._sleepers if not fut.done())

    async def advance(self, seconds: float) -> None:
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            if not fut.done():
                fut.set_result(None)
            await settle()
        self._now = target
        await settle()


async def settle() -> None:
    """Let every runnable task run until it waits for time."""
    for _ in range(3):
        for _ in range(30):
            await asyncio.sleep(0)
        await asyncio.sleep(0.001)


def fake_request(connection: int) -> web.Request:
    """A stand-in request on the client connection numbered ``connection``."""
    peer = ("127.0.0.1", 40000 + connection)
    transport = SimpleNamespace(get_extra_info=lambda name: peer if name == "peername" else None)
    return cast(web.Request, SimpleNamespace(transport=transport))


async def send(
    path: PathDelay, connections: list[int], clock: VirtualClock
) -> tuple[list[tuple[int, float]], PathMiddleware]:
    """Pass one request per entry of ``connections`` (index = send order) through the path.

    Returns (send index, virtual arrival time) in arrival order.
    """
    mw = PathMiddleware(path, lambda: clock)
    arrived: list[tuple[int, float]] = []

    def handler_for(index: int) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            arrived.append((index, clock.now()))
            return web.Response()

        return handler

    tasks = [
        asyncio.create_task(mw.middleware(fake_request(c), handler_for(i)))
        for i, c in enumerate(connections)
    ]
    await settle()
    await clock.advance(10.0)
    await asyncio.gather(*tasks)
    return arrived, mw


async def test_each_request_arrives_after_a_delay_drawn_within_the_path() -> None:
    clock = VirtualClock()
    arrived, mw = await send(PathDelay(min=0.05, max=0.2, seed=3), list(range(60)), clock)
    assert len(arrived) == mw.stats.delayed == 60
    times = sorted(t for _, t in arrived)
    assert all(0.05 <= t <= 0.2 for t in times)
    # independent connections: each arrives after exactly its own draw
    assert sorted(mw.stats.drawn) == times
    # the delay varies: the spread covers most of [min, max]
    assert times[-1] - times[0] > 0.1
    assert mw.stats.held_for_order == 0


async def test_the_seed_repeats_the_draws() -> None:
    first, _ = await send(PathDelay(min=0.05, max=0.2, seed=11), list(range(20)), VirtualClock())
    again, _ = await send(PathDelay(min=0.05, max=0.2, seed=11), list(range(20)), VirtualClock())
    other, _ = await send(PathDelay(min=0.05, max=0.2, seed=12), list(range(20)), VirtualClock())
    assert first == again
    assert first != other


async def test_order_is_kept_within_a_connection_but_not_across() -> None:
    path = PathDelay(min=0.05, max=0.2, seed=5)
    one_connection, mw = await send(path, [0] * 30, VirtualClock())
    assert [i for i, _ in one_connection] == list(range(30))
    assert mw.stats.held_for_order > 0
    many_connections, _ = await send(path, list(range(30)), VirtualClock())
    assert [i for i, _ in many_connections] != list(range(30))


async def test_a_constant_path_delays_every_request_by_the_same_amount() -> None:
    arrived, mw = await send(PathDelay(min=0.03), list(range(10)) + [0] * 5, VirtualClock())
    assert {t for _, t in arrived} == {0.03}
    assert mw.stats.held_for_order == 0


def test_a_path_must_have_min_at_most_max() -> None:
    with pytest.raises(ValueError, match="min <= max"):
        PathDelay(min=0.2, max=0.1)
    with pytest.raises(ValueError, match="min <= max"):
        PathDelay(min=-0.1)


@pytest.mark.parametrize(
    ("low", "high"), [(float("nan"), None), (0.0, float("nan")), (0.0, float("inf"))]
)
def test_a_path_delay_must_be_a_finite_number(low: float, high: float | None) -> None:
    """A NaN delay would slip past the range check and an infinite one would hold every
    request for ever."""
    with pytest.raises(ValueError, match="finite"):
        PathDelay(min=low, max=high)


async def test_the_emulator_counts_a_request_only_once_it_crossed_the_path() -> None:
    """Nothing reaches a limit, a middleware or a handler before its delay has passed."""
    clock = VirtualClock()
    log = ArrivalLog(clock=clock.now)
    fleet = Fleet.generate(8, seed=1)
    emu = Emulator(
        fleet=fleet,
        limits=ServerLimits.unlimited(),
        clock=clock,
        middlewares=[log.middleware],
        path=PathDelay(min=1.0, max=2.0, seed=9),
    )
    async with emu, aiohttp.ClientSession() as session:
        token_task = asyncio.create_task(
            session.post(
                f"{emu.url}/v2/token",
                data={
                    "client_id": "a",
                    "client_secret": "b",
                    "grant_type": "client_credentials",
                },
            )
        )
        await settle()
        assert emu.path_stats.delayed == 1
        assert log.count() == 0 and emu.stats.usage_requests == 0
        await clock.advance(2.0)
        async with await token_task as response:
            token = (await response.json())["data"]["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        async def usage(iccid: str) -> int:
            async with session.get(f"{emu.url}/v2/sims/{iccid}/usage", headers=headers) as r:
                return r.status

        start = clock.now()
        tasks = [asyncio.create_task(usage(i)) for i in fleet.iccids()]
        await settle()
        assert emu.path_stats.delayed == 1 + 8
        assert log.count() == 0 and emu.stats.usage_requests == 0
        await clock.advance(0.999)
        assert log.count() == 0 and emu.stats.usage_requests == 0
        await clock.advance(1.001)
        assert await asyncio.gather(*tasks) == [200] * 8
    assert log.count() == emu.stats.usage_requests == 8
    assert all(t - start >= 1.0 for t in log.times())


async def test_the_path_can_be_changed_mid_run() -> None:
    clock = VirtualClock()
    emu = Emulator(limits=ServerLimits.unlimited(), clock=clock)
    assert emu.path is None
    async with emu, aiohttp.ClientSession() as session:
        async with session.get(f"{emu.url}/v2/balance") as r:
            assert r.status in (200, 401)
        assert emu.path_stats.delayed == 0
        emu.path = PathDelay(min=0.5)
        task = asyncio.create_task(session.get(f"{emu.url}/v2/balance"))
        await settle()
        assert emu.path_stats.delayed == 1 and clock.sleeping == 1
        await clock.advance(0.5)
        async with await task as r:
            assert r.status in (200, 401)


@pytest.mark.parametrize("algorithm", ["sliding", "fixed"])
async def test_sends_a_period_apart_can_arrive_closer_and_be_refused(algorithm: str) -> None:
    """The provider counts arrivals: a slow request followed, more than one period later, by a
    fast one lands two arrivals in one window, and the second is refused by either window."""
    clock = VirtualClock()
    fleet = Fleet.generate(4, seed=1)
    limits = ServerLimits.unlimited()
    limits.usage_company = Rate(1, 1.0)
    limits.algorithm = cast(Any, algorithm)
    emu = Emulator(fleet=fleet, limits=limits, clock=clock)
    async with emu, aiohttp.ClientSession() as session:
        form = {"client_id": "a", "client_secret": "b", "grant_type": "client_credentials"}
        async with session.post(f"{emu.url}/v2/token", data=form) as response:
            token = (await response.json())["data"]["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        async def usage(iccid: str) -> int:
            async with session.get(f"{emu.url}/v2/sims/{iccid}/usage", headers=headers) as r:
                return r.status

        first_iccid, second_iccid, third_iccid, fourth_iccid = fleet.iccids()
        emu.path = PathDelay(min=0.2)
        first = asyncio.create_task(usage(first_iccid))
        await settle()
        await clock.advance(1.02)  # sent 1.02 s apart: more than the period plus 2 %
        emu.path = PathDelay(min=0.05)
        second = asyncio.create_task(usage(second_iccid))
        await settle()
        await clock.advance(0.05)
        statuses = [await first, await second]
        assert statuses == [200, 429]
        assert emu.stats.rate_limited == 1

        # the same two sends on a constant path are both admitted
        await clock.advance(2.0)
        emu.path = PathDelay(min=0.2)
        third = asyncio.create_task(usage(third_iccid))
        await settle()
        await clock.advance(1.02)
        fourth = asyncio.create_task(usage(fourth_iccid))
        await settle()
        await clock.advance(0.2)
        assert [await third, await fourth] == [200, 200]
    assert emu.stats.rate_limited == 1
    assert emu.path_stats.delayed == 4

"""One limiter over two window stores: every contract test runs on both.

``rig`` is parametrised: ``memory`` runs on virtual time (:class:`AutoClock`, exact and
instant); ``redis`` runs on a real redis-server on 127.0.0.1 and real time, with periods scaled
down to ``rig.unit`` seconds (skipped without redis-server, failed when ESIM_REQUIRE_REDIS=1).
Only counts, orders, errors and lower bounds on send times are asserted, never durations.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from esim_async.backends.memory import MemoryStore
from esim_async.clock import Clock, MonotonicClock
from esim_async.limits import EndpointLimiter, Rate

from ..conftest import RedisServer


class AutoClock:
    """Virtual time: when every task waits, the clock jumps to the earliest sleeper's deadline.

    Sleepers wake in deadline order, so concurrent waits (a dispatcher and callers waiting for
    their key) are as exact as on a real clock, and instant.
    """

    def __init__(self) -> None:
        self._now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._driver: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return 1_900_000_000.0 + self._now

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._seq), fut))
        if self._driver is None:
            self._driver = loop.create_task(self._drive())
        await fut

    async def _drive(self) -> None:
        try:
            while self._sleepers:
                for _ in range(50):  # everything runnable runs before time moves
                    await asyncio.sleep(0)
                when, _, fut = heapq.heappop(self._sleepers)
                self._now = max(self._now, when)
                if not fut.done():
                    fut.set_result(None)
        finally:
            self._driver = None


class Rig:
    """Builds limiters over one kind of store, on that store's clock."""

    def __init__(self, kind: str, server: RedisServer | None = None) -> None:
        self.kind = kind
        self.server = server
        self.clock: Clock = AutoClock() if server is None else MonotonicClock()
        #: One period of the tests, in seconds of ``clock``.
        self.unit = 1.0 if server is None else 0.1
        self._names = itertools.count()
        self._limiters: list[EndpointLimiter] = []
        self._closers: list[Any] = []

    def rate(self, count: int, periods: float = 1.0) -> Rate:
        return Rate(count, periods * self.unit)

    def limiter(
        self,
        shared: Rate | None,
        per_key: Rate | None = None,
        *,
        stamp_sends: bool = True,
        name: str | None = None,
        wrap: Callable[[Any], Any] | None = None,
        **options: Any,
    ) -> EndpointLimiter:
        """A limiter named ``name`` (a new one by default) over this rig's kind of store;
        ``wrap`` sees the store (and may return another to use instead)."""
        name = name or f"acct:ep{next(self._names)}"
        if self.server is None:
            store: Any = MemoryStore(self.clock)
        else:
            from .redis_rig import redis_store

            store, closer = redis_store(
                self.server.url, name, self.clock, **options.pop("redis", {})
            )
            self._closers.append(closer)
        if wrap is not None:
            store = wrap(store) or store
        limiter = EndpointLimiter(
            name,
            shared=shared,
            per_key=per_key,
            clock=self.clock,
            margin=0.0,
            stamp_sends=stamp_sends,
            store=store,
            **options,
        )
        self._limiters.append(limiter)
        return limiter

    async def sleep(self, periods: float) -> None:
        await self.clock.sleep(periods * self.unit)

    async def aclose(self) -> None:
        for limiter in self._limiters:
            await limiter.aclose()
        for close in self._closers:
            await close()


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def rig_server(store_kind: str, request: pytest.FixtureRequest) -> Iterator[RedisServer | None]:
    if store_kind == "memory":
        yield None
        return
    binary = request.getfixturevalue("redis_server_bin")
    server = RedisServer(binary, Path(request.getfixturevalue("tmp_path")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def rig(store_kind: str, rig_server: RedisServer | None) -> AsyncIterator[Rig]:
    r = Rig(store_kind, rig_server)
    try:
        yield r
    finally:
        await r.aclose()

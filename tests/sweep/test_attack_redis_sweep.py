"""usage_many on the Redis backend when Redis misbehaves mid-sweep: every ICCID given yields
exactly one result, failures are typed, and nothing goes out unlimited. Real redis-server on
127.0.0.1 (skipped without one, unless ESIM_REQUIRE_REDIS=1)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from esim_async import AiraloClient, Rate, UsageResult
from esim_async.backends.redis import BackendUnavailableError, RedisBackend
from esim_async.testing import Emulator, Fleet, ServerLimits

from ..conftest import RedisServer


def backend(server: RedisServer, **kw: Any) -> RedisBackend:
    return RedisBackend.from_url(server.url, prefix="t", **kw)


@pytest.fixture
def pausable(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The server, resumed at the end whatever the test did with SIGSTOP."""
    try:
        yield redis_server
    finally:
        if redis_server.proc is not None:
            os.kill(redis_server.proc.pid, signal.SIGCONT)


async def test_a_sweep_answers_every_iccid_once_when_redis_freezes(pausable: RedisServer) -> None:
    """Redis stops answering (paused: commands sent meanwhile run when it resumes) in the
    middle of a fail-closed sweep: each ICCID gets one result, the failures are typed, nothing
    goes out unlimited. Once Redis is back, another process sweeping the same fleet is not
    held up by the locks the frozen attempts took when they finally ran (30 s TTL)."""
    wait = 0.5
    fleet = Fleet.generate(40, seed=45)
    limits = ServerLimits(usage_company=Rate(10, 1.0), usage_iccid=None, token=None)

    def process(emu: Emulator) -> AiraloClient:
        return AiraloClient(
            "acct",
            "s",
            base_url=emu.url,
            backend=backend(pausable, wait=wait, socket_timeout=5.0, probe_interval=0.2),
            company_rate=Rate(10, 1.0),
            iccid_rate=None,
        )

    async with Emulator(fleet=fleet, limits=limits) as emu, process(emu) as client:
        got: list[UsageResult] = []
        async with asyncio.timeout(10), client.sims.usage_many(fleet.iccids()) as results:
            async for r in results:
                got.append(r)
                if len(got) == 3:
                    os.kill(pausable.proc.pid, signal.SIGSTOP)
        assert Counter(r.iccid for r in got) == Counter(fleet.iccids())
        failed = [r for r in got if not r.ok]
        assert failed and all(isinstance(r.error, BackendUnavailableError) for r in failed)
        assert emu.stats.usage_requests == len(got) - len(failed)  # nothing went out unlimited
        os.kill(pausable.proc.pid, signal.SIGCONT)
        async with process(emu) as peer:
            async with asyncio.timeout(10):  # hang guard, far below the locks' 30 s
                again = [r async for r in peer.sims.usage_many(fleet.iccids())]
        assert Counter(r.iccid for r in again) == Counter(fleet.iccids())
        assert all(r.ok for r in again), Counter(type(r.error).__name__ for r in again)
        # What failed was never sent: the peer fetched it once, not held by a stale lock.
        assert {emu.stats.usage_by_iccid[r.iccid] for r in failed} == {1}

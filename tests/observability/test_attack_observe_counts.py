"""OpenTelemetry counts against what the emulator itself counted, under errors, coalescing and
cancellation (one span per call; ``esim.requests`` and the cache counters match the requests
that went out)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from esim_async import AiraloClient
from esim_async.errors import ServerError
from esim_async.testing import Emulator, Fleet
from tests.observability.test_otel import Telemetry

USAGE = "GET /v2/sims/{iccid}/usage"
ON_USAGE = {"esim.endpoint": "usage"}


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.tracer_provider.shutdown()
    t.meter_provider.shutdown()


@pytest.fixture
async def emu() -> Any:
    async with Emulator(fleet=Fleet.generate(4, seed=21)) as emu:
        yield emu


async def _until(condition: Any) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_429_then_success_counts_match_the_emulator(emu: Any, telemetry: Telemetry) -> None:
    iccid = emu.fleet.iccids()[0]
    emu.inject("usage", "429", "429")
    async with AiraloClient("id", "secret", base_url=emu.url) as client:
        telemetry.instrument(client)
        await asyncio.wait_for(client.sims.usage(iccid), 5)
        await asyncio.wait_for(client.sims.usage(iccid), 5)  # a hit
    (miss, hit) = telemetry.finished(USAGE)
    assert (miss.attributes or {})["esim.attempts"] == emu.stats.usage_by_iccid[iccid] == 3
    assert telemetry.total("esim.rate_limited", **ON_USAGE) == emu.stats.rate_limited == 2
    assert telemetry.total("esim.retries", **ON_USAGE) == 2
    assert telemetry.total("esim.requests", **ON_USAGE) == 1
    assert telemetry.total("esim.cache.misses") == telemetry.total("esim.cache.hits") == 1
    assert (hit.attributes or {})["esim.attempts"] == 0


async def test_a_failed_miss_is_still_a_miss(emu: Any, telemetry: Telemetry) -> None:
    iccid = emu.fleet.iccids()[1]
    emu.inject("usage", "500", "500")
    async with AiraloClient("id", "secret", base_url=emu.url, max_retries=1) as client:
        telemetry.instrument(client)
        with pytest.raises(ServerError):
            await asyncio.wait_for(client.sims.usage(iccid), 5)
    assert emu.stats.usage_by_iccid[iccid] == 2
    (span,) = telemetry.finished(USAGE)
    assert (span.attributes or {}).get("esim.cache") == "miss"
    assert telemetry.total("esim.cache.misses") == 1


async def test_a_call_cancelled_after_sending_is_counted(emu: Any, telemetry: Telemetry) -> None:
    iccid = emu.fleet.iccids()[2]
    emu.inject("usage", "slow")
    async with AiraloClient("id", "secret", base_url=emu.url) as client:
        telemetry.instrument(client)
        task = asyncio.ensure_future(client.sims.usage(iccid))
        await _until(lambda: emu.stats.usage_by_iccid[iccid] == 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    (span,) = telemetry.finished(USAGE)
    assert (span.attributes or {})["esim.attempts"] == 1
    assert telemetry.total("esim.requests", **ON_USAGE) == emu.stats.usage_by_iccid[iccid]


async def test_a_waiter_that_sends_again_after_the_leader_left_is_one_span(
    emu: Any, telemetry: Telemetry
) -> None:
    iccid = emu.fleet.iccids()[3]
    emu.inject("usage", "slow")
    async with AiraloClient("id", "secret", base_url=emu.url) as client:
        telemetry.instrument(client)
        leader = asyncio.ensure_future(client.sims.usage(iccid))
        await _until(lambda: emu.stats.usage_by_iccid[iccid] == 1)
        waiter = asyncio.ensure_future(client.sims.usage(iccid))
        await asyncio.sleep(0.05)  # the waiter joins the request in flight
        leader.cancel()
        usage = await asyncio.wait_for(waiter, 5)
        await asyncio.gather(leader, return_exceptions=True)
    assert usage is not None
    assert emu.stats.usage_by_iccid[iccid] == 2
    spans = telemetry.finished(USAGE)
    assert len(spans) == 2  # two calls, two spans
    waiter_span = next(s for s in spans if (s.attributes or {}).get("error.type") is None)
    assert (waiter_span.attributes or {})["esim.attempts"] == 1

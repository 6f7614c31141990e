"""Closing a sweep keeps its caller's cancellation: a sweep whose tasks take a while to stop
(here an input that winds down slowly) must not swallow a cancellation of the closing task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from esim_async import AiraloClient
from esim_async.testing import Emulator, Fleet, ServerLimits


async def slow_to_stop(iccid: str, stopping: asyncio.Event) -> AsyncIterator[str]:
    """An input that waits, and once cancelled takes a few loop passes to stop."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        stopping.set()
        for _ in range(50):
            await asyncio.sleep(0)
        raise
    yield iccid


async def test_a_cancelled_close_raises_cancelled_error() -> None:
    fleet = Fleet.generate(1, seed=71)
    stopping = asyncio.Event()
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu,
        AiraloClient(
            "id", "secret", base_url=emu.url, iccid_rate=None, company_rate=None
        ) as client,
    ):
        sweep = client.sims.usage_many(slow_to_stop(fleet.iccids()[0], stopping))
        consumer = asyncio.create_task(anext(sweep))
        for _ in range(5):  # the feeder starts and waits for the input
            await asyncio.sleep(0)
        closer = asyncio.create_task(sweep.aclose())
        await stopping.wait()  # the close is waiting for the input to stop
        closer.cancel()
        done, _ = await asyncio.wait({closer}, timeout=5)
        assert done == {closer}
        assert closer.cancelled()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(consumer, 5)
        assert emu.stats.usage_requests == 0

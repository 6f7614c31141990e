"""Closing a client from two places at once (a shutdown hook and an ``async with`` exit, say).

Both closes return, and every call in progress still ends with the typed closing error, as with
one close; no caller sees a bare cancellation it did not ask for.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from esim_async import AiraloClient, TransportError
from esim_async.models.usage import Usage
from esim_async.testing import Emulator, Fleet


async def _calls_in_flight(client: AiraloClient, iccids: list[str]) -> list[asyncio.Task[Usage]]:
    tasks = [asyncio.create_task(client.sims.usage(iccid)) for iccid in iccids]
    # Until the first answers are in: the rest wait for the company window (5 per second).
    while sum(task.done() for task in tasks) < 5:
        await asyncio.sleep(0.01)
    return tasks


async def test_two_concurrent_closes_both_return_and_end_every_call_typed() -> None:
    async with Emulator(fleet=Fleet.generate(12, seed=3)) as emu:
        client = AiraloClient("id", "secret", base_url=emu.url)
        tasks = await _calls_in_flight(client, emu.fleet.iccids())
        closes = asyncio.gather(client.aclose(), client.aclose())
        done, _ = await asyncio.wait([asyncio.ensure_future(closes)], timeout=3)
        assert done, "a second close made the first one wait forever"
        ended, _ = await asyncio.wait(tasks, timeout=3)
        assert len(ended) == len(tasks)
        kinds = Counter(
            "usage" if t.exception() is None else type(t.exception()).__name__
            for t in tasks
            if not t.cancelled()
        )
        assert sum(t.cancelled() for t in tasks) == 0
        assert set(kinds) <= {"usage", "TransportError"}
        assert kinds["usage"] + kinds["TransportError"] == len(tasks)
        assert kinds["TransportError"] > 0
        await client.aclose()


async def test_a_close_cancelled_while_another_runs_still_ends_every_call_typed() -> None:
    async with Emulator(fleet=Fleet.generate(12, seed=4)) as emu:
        client = AiraloClient("id", "secret", base_url=emu.url)
        tasks = await _calls_in_flight(client, emu.fleet.iccids())
        first = asyncio.create_task(client.aclose())
        second = asyncio.create_task(client.aclose())
        await asyncio.sleep(0)
        first.cancel()
        done, _ = await asyncio.wait([first, second], timeout=3)
        assert second in done and second.exception() is None
        ended, _ = await asyncio.wait(tasks, timeout=3)
        assert len(ended) == len(tasks)
        assert not any(t.cancelled() for t in tasks)
        errors = [t.exception() for t in tasks if t.exception() is not None]
        assert errors and all(isinstance(e, TransportError) for e in errors)
        # Closed for good: a later call is refused with the same typed error.
        try:
            await client.sims.usage(emu.fleet.iccids()[-1], refresh=True)
        except TransportError:
            pass
        else:  # pragma: no cover - the failure this test guards against
            raise AssertionError("a call after close went through")


async def test_a_cancelled_close_still_closes_the_client_for_writes() -> None:
    async with Emulator(fleet=Fleet.generate(12, seed=5)) as emu:
        client = AiraloClient("id", "secret", base_url=emu.url)
        tasks = await _calls_in_flight(client, emu.fleet.iccids())
        closing = asyncio.create_task(client.aclose())
        await asyncio.sleep(0)
        closing.cancel()  # a shutdown deadline, say
        await asyncio.wait([closing], timeout=3)
        await asyncio.wait(tasks, timeout=3)
        assert all(t.done() and not t.cancelled() for t in tasks)
        assert all(isinstance(t.exception(), TransportError | None) for t in tasks)
        # The client is closed: an order placed now is refused, and nothing is bought.
        try:
            async with asyncio.timeout(3):
                await client.orders.create("change-7days-1gb", 1, description="after-close")
        except TransportError:
            pass
        else:
            raise AssertionError("an order went through a client being closed")
        assert emu.orders == {}
        await client.aclose()

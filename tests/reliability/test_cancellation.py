"""Callers cancelled at random points leave no stuck waiters, leaked tasks or open sessions;
``aclose()`` during a sweep returns promptly."""

from __future__ import annotations

import asyncio
import random
import warnings

from esim_async import AiraloClient, EsimError, Rate
from esim_async.testing import Emulator, Faults, Fleet, ServerLimits


def our_tasks() -> list[asyncio.Task[object]]:
    current = asyncio.current_task()
    return [
        t
        for t in asyncio.all_tasks()
        if t is not current and "esim_async" in (t.get_name() + repr(t.get_coro()))
    ]


async def test_random_cancellations_leave_nothing_behind() -> None:
    asyncio.get_running_loop().set_debug(True)
    rng = random.Random(5)
    fleet = Fleet.generate(40, seed=51)
    limits = ServerLimits(usage_company=Rate(10, 0.5), usage_iccid=None, token=None)
    faults = Faults(server_error=0.2, slow=0.2, slow_seconds=0.3, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        async with Emulator(fleet=fleet, limits=limits, faults=faults) as emu:
            client = AiraloClient(
                "c",
                "s",
                base_url=emu.url,
                company_rate=Rate(10, 0.5),
                iccid_rate=None,
                max_retries=3,
            )
            ids = fleet.iccids()
            calls = [
                asyncio.create_task(client.sims.usage(ids[i % 20], refresh=i % 3 == 0))
                for i in range(120)
            ]  # waiting on limits, single flight, retries, token
            for _ in range(6):
                await asyncio.sleep(rng.uniform(0.0, 0.15))
                for task in rng.sample(calls, 12):
                    task.cancel()
            done = await asyncio.gather(*calls, return_exceptions=True)
            assert all(
                isinstance(d, (EsimError, asyncio.CancelledError))
                or d.__class__.__name__ == "Usage"
                for d in done
            )
            state = client.rate_limit_state()["usage"]
            assert state.waiters == 0
            assert len(client._context.usage_endpoint.flight) == 0  # type: ignore[arg-type]
            session = client._transport._session
            await client.aclose()
            assert session is not None and session.closed
            await asyncio.sleep(0)
            assert our_tasks() == []


async def test_aclose_during_a_sweep_returns_promptly() -> None:
    fleet = Fleet.generate(200, seed=52)
    limits = ServerLimits(usage_company=Rate(5, 1.0), usage_iccid=None, token=None)
    async with Emulator(fleet=fleet, limits=limits) as emu:
        client = AiraloClient(
            "c", "s", base_url=emu.url, company_rate=Rate(5, 1.0), iccid_rate=None
        )
        got = []

        async def consume() -> None:
            async with client.sims.usage_many(fleet.iccids()) as results:
                async for r in results:
                    got.append(r)

        sweep = asyncio.create_task(consume())
        while len(got) < 3:
            await asyncio.sleep(0.01)
        async with asyncio.timeout(5):  # promptly: no waiting out the 40 s the sweep needs
            await client.aclose()
            # Whatever was still waiting for budget ends with a typed error, not a hang.
            await asyncio.wait_for(sweep, 5)
        assert all(r.error is None or isinstance(r.error, EsimError) for r in got)
        assert our_tasks() == []

"""``client.sims.usage(iccid, priority=Priority.BULK)`` waits in the limiter's bulk lane: an
interactive call made later still goes first (the monitor reads this way)."""

from __future__ import annotations

import asyncio

from esim_async import Priority, Rate

from .rig import rig


async def test_a_bulk_usage_call_lets_a_later_interactive_call_go_first() -> None:
    async with rig(size=6, company=Rate(1, 2.0), per_key=None) as r:
        sims = r.emu.fleet.iccids()
        await r.client.sims.usage(sims[0])  # spends the first slot (and fetches the token)
        bulk = [
            asyncio.ensure_future(r.client.sims.usage(s, priority=Priority.BULK)) for s in sims[1:4]
        ]
        await r.clock.settle()
        interactive = asyncio.ensure_future(r.client.sims.usage(sims[5]))
        await r.clock.run(12.0, 0.5)
        assert interactive.done() and all(b.done() for b in bulk)
        order = [i for _, i in r.arrivals]
        assert order == [sims[0], sims[5], *sims[1:4]]
        assert r.rate_limited == 0


async def test_the_default_lane_is_interactive_and_first_come_first_served() -> None:
    async with rig(size=6, company=Rate(1, 2.0), per_key=None) as r:
        sims = r.emu.fleet.iccids()
        await r.client.sims.usage(sims[0])
        calls = [asyncio.ensure_future(r.client.sims.usage(s)) for s in sims[1:4]]
        await r.clock.settle()
        calls.append(asyncio.ensure_future(r.client.sims.usage(sims[5])))
        await r.clock.run(12.0, 0.5)
        assert all(c.done() for c in calls)
        assert [i for _, i in r.arrivals] == [sims[0], *sims[1:4], sims[5]]

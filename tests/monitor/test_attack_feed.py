"""``monitor.feed`` while a read of the same eSIM is in flight: the read in flight may carry an
answer from before the notification, so the eSIM is still read first once its cache allows."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from esim_async import Rate
from esim_async.resources.sims import AiraloSimsResource
from esim_async.webhooks import LowDataEvent

from .rig import rig, settle

UNIT = 10.0


async def test_a_webhook_during_a_read_in_flight_still_moves_its_eSIM_to_the_front(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 30 eSIMs, one read per second: each would wait about 30 s for its turn.
    async with rig(size=30, company=Rate(1, 1.0), per_key=None, cache_ttl=UNIT) as r:
        monitor = r.monitor()
        sims = r.emu.fleet.iccids()
        await monitor.track(sims)
        target = sims[5]
        usage = AiraloSimsResource.usage
        answered, gate = asyncio.Event(), asyncio.Event()
        holding = [False]

        async def held(self: AiraloSimsResource, iccid: str, **options: Any) -> Any:
            result = await usage(self, iccid, **options)
            if iccid == target and holding[0]:
                holding[0] = False
                answered.set()  # the server answered; the answer is on its way back
                await gate.wait()
            return result

        monkeypatch.setattr(AiraloSimsResource, "usage", held)
        async with r.running(monitor):
            await r.clock.run(40, 0.5)
            holding[0] = True
            while not answered.is_set():
                await r.clock.advance(0.5)
            last_read = r.reads(target)[-1]
            # The notification comes while the answer read before it is still on its way.
            await monitor.feed(LowDataEvent(iccid=target, level="90%"))
            fed = r.clock.now()
            gate.set()
            await settle()
            assert r.kinds(target)[-1] == ("low_data", 0.9)
            await r.clock.run(15, 0.5)
        eligible = max(fed, last_read + UNIT)
        first_after = [i for t, i in r.arrivals if t >= eligible][:2]
        assert target in first_after, (first_after, r.reads(target), eligible)
        assert r.rate_limited == 0

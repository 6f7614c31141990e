"""A client pacing its sends keeps a server's arrival limit across a jittered path."""

from __future__ import annotations

import pytest

from esim_async import AiraloClient, Rate
from esim_async.testing import Emulator, Fleet, PathDelay, ServerLimits
from tests.arrivals import ArrivalLog

#: Airalo's 5/s and a 50-200 ms path, scaled down by 4 in time.
RATE = Rate(5, 0.25)
PATH = PathDelay(min=0.0125, max=0.05, seed=2026)


@pytest.mark.xfail(
    strict=False,
    reason="the safety margin does not follow the path's delay variation yet: a fixed 2 % "
    "margin draws 429s once arrivals jitter by more than it",
)
@pytest.mark.parametrize("algorithm", ["sliding", "fixed"])
async def test_no_429_across_a_jittered_path(algorithm: str) -> None:
    fleet = Fleet.generate(61, seed=7)
    log = ArrivalLog()
    limits = ServerLimits(
        usage_company=RATE,
        usage_iccid=None,
        algorithm=algorithm,  # type: ignore[arg-type]
    )
    async with (
        Emulator(fleet=fleet, limits=limits, path=PATH, middlewares=[log.middleware]) as emu,
        AiraloClient("a", "b", base_url=emu.url, company_rate=RATE, iccid_rate=None) as client,
        client.sims.usage_many(fleet.iccids()) as results,
    ):
        answered = [r async for r in results]
    assert all(r.ok for r in answered)
    assert emu.stats.rate_limited == 0
    assert log.violations(company=RATE) == []

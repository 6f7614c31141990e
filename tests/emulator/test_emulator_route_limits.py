"""The emulator's per-route guard: each route counts its arrival, checks the token, then its
limit window (one for the company, or one per ICCID or package), whichever domain module
answers."""

from __future__ import annotations

import aiohttp

from esim_async import Rate
from esim_async.testing import Emulator, Fleet, ServerLimits
from esim_async.testing.catalogue import CATALOGUE

from .test_emulator_state import get, token


def _limits() -> ServerLimits:
    limits = ServerLimits.unlimited()
    limits.package_history = Rate(1, 600.0)
    limits.product_information = Rate(1, 600.0)
    limits.packages = Rate(1, 600.0)
    return limits


async def test_per_key_windows_are_separate_and_shared_windows_are_one() -> None:
    fleet = Fleet.generate(2, seed=3)
    first, second = fleet.iccids()
    slugs = [entry["slug"] for entry in CATALOGUE[:2]]
    async with Emulator(fleet=fleet, limits=_limits()) as emu, aiohttp.ClientSession() as http:
        auth = await token(http, emu.url)
        v2 = emu.url + "/v2"
        history = [
            (await get(http, f"{v2}/sims/{iccid}/packages", auth))[0]
            for iccid in (first, first, second)
        ]
        info = [
            (await get(http, f"{v2}/packages/{slug}/product-information", auth))[0]
            for slug in (slugs[0], slugs[0], slugs[1])
        ]
        packages = [(await get(http, f"{v2}/packages", auth))[0] for _ in range(2)]
        unauthorized, _ = await get(http, f"{v2}/sims/{second}/packages", {})
        stats = emu.state.stats
    assert history == [200, 429, 200]
    assert info[1] == 429 and info[2] != 429
    assert packages == [200, 429]
    assert unauthorized == 401
    assert stats.rate_limited_by["package_history"] == 1
    assert stats.rate_limited_by["product_information"] == 1
    assert stats.rate_limited_by["packages"] == 1
    assert stats.arrivals["package_history"] == 4

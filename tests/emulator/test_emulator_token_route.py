"""``POST /v2/token`` meets what every other request meets but the bearer check: each arrival is
counted and told to ``on_request``, its own limit answers 429s, and queued faults are served."""

from __future__ import annotations

import aiohttp

from esim_async import Rate
from esim_async.testing import Emulator, Fleet, ServerLimits

CREDENTIALS = {"client_id": "id", "client_secret": "s", "grant_type": "client_credentials"}


async def test_the_token_route_is_counted_limited_and_faulted_without_a_bearer() -> None:
    seen: list[str] = []
    limits = ServerLimits(token=Rate(2, 60.0))
    async with (
        Emulator(fleet=Fleet.generate(1), limits=limits) as emu,
        aiohttp.ClientSession() as http,
    ):
        emu.on_request = lambda endpoint, request: seen.append(endpoint)
        emu.inject("token", "503")
        statuses = []
        for _ in range(4):
            async with http.post(emu.url + "/v2/token", data=CREDENTIALS) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert int(resp.headers["Retry-After"]) >= 1
                    assert resp.headers["X-RateLimit-Limit"] == "2"
        # The fault is served after the limit admitted the arrival; the third is refused.
        assert statuses == [503, 200, 429, 429]
        assert seen == ["token"] * 4
        assert emu.stats.arrivals["token"] == 4
        assert emu.stats.rate_limited_by["token"] == 2
        assert emu.stats.faults["503"] == 1
        assert emu.stats.tokens_issued == 1
        assert emu.stats.unauthorized == 0

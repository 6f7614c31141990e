"""Requests no route answers (an unknown path, a wrong method) still count as arrivals, so a
test that counts what reached the emulator sees a client that calls the wrong URL."""

from __future__ import annotations

import aiohttp

from esim_async.testing import Emulator


async def test_unknown_paths_and_wrong_methods_are_counted_and_reported() -> None:
    seen: list[str] = []
    async with Emulator() as emu:
        emu.state.on_request = lambda endpoint, request: seen.append(endpoint)
        iccid = emu.fleet.iccids()[0]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{emu.url}/v2/no-such-thing") as response:
                assert response.status == 404
            async with http.delete(f"{emu.url}/v2/sims/{iccid}/usage") as response:
                assert response.status == 405
    assert emu.stats.arrivals["unrouted"] == 2
    assert seen == ["unrouted", "unrouted"]
    assert emu.stats.usage_requests == 0

"""The URL a request goes to: the same whatever the path holds, whether the transport puts a
plain path into its parsed base URL or joins an unusual one as a string."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import msgspec
import pytest
from aiohttp import web

from esim_async import ManualClock
from esim_async.stats import ClientStats
from esim_async.transport import Request, Transport

PATHS = [
    "/v2/sims/8944000070000000004/usage",
    "/v2/packages/some-slug_1.2~x/product-information",
    "/v2/orders/123",
    "/v2/a b",
    "/v2/caf\u00e9",
    "/v2/x%2Fy",
    "/v2/a/../b",
    "/v2/./c",
    "/v2//d",
    "/v2/e?f=1",
]


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("prefix", ["", "/", "/api", "/api/", "/a b"])
async def test_every_path_reaches_the_server_as_aiohttp_sends_the_joined_string(
    server: tuple[str, list[str]], prefix: str
) -> None:
    origin, seen = server
    base_url = origin + prefix
    async with aiohttp.ClientSession() as session:
        for path in PATHS:
            async with session.get(base_url.rstrip("/") + path) as resp:
                await resp.read()
    expected, seen[:] = list(seen), []
    transport = Transport(base_url, clock=ManualClock(), stats=ClientStats(), max_retries=0)
    decoder = msgspec.json.Decoder()
    try:
        for path in PATHS:
            answer = await transport.request(Request("GET", path, decoder, authenticated=False))
            assert answer == {"ok": True}
    finally:
        await transport.aclose()
    assert seen == expected
    assert len(seen) == len(PATHS)

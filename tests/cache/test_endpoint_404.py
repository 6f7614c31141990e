"""A 404 that is not the provider's not-found answer (a proxy's page, a framework's
unknown-route answer: a wrong ``base_url``, prefix or ``usage_path``) says nothing about the
eSIM. It is never remembered as "this eSIM does not exist": once the path is right, every eSIM
is read again, and a sweep or a monitor never writes the fleet off for a day."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from esim_async import AiraloClient, EndpointNotFoundError, NotFoundError, Rate
from tests.local_server import LocalServer

ICCIDS = ["8944538532046590101", "8944538532046590102", "8944538532046590103"]
NOT_FOUND = {"data": [], "meta": {"message": "messages.resource_not_found"}}


class Server(LocalServer):
    """Tokens, and usage answered with ``page`` as a 404, counting usage requests."""

    def __init__(self) -> None:
        self.usage = Counter[str]()
        self.page: tuple[bytes, str] = (b"<html><body>404 Not Found</body></html>", "text/html")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/token", self.token)
        app.router.add_get("/v2/sims/{iccid}/usage", self.usage_route)
        return app

    async def token(self, request: web.Request) -> web.Response:
        return web.json_response({"data": {"access_token": "tok", "expires_in": 3600}})

    async def usage_route(self, request: web.Request) -> web.Response:
        self.usage[request.match_info["iccid"]] += 1
        body, content_type = self.page
        return web.Response(status=404, body=body, content_type=content_type)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with Server() as srv:
        yield srv


def client(server: Server) -> AiraloClient:
    return AiraloClient(
        "id", "secret", base_url=server.url, company_rate=Rate(100, 1.0), iccid_rate=None
    )


@pytest.mark.parametrize(
    "page",
    [
        (b"<html><body>404 Not Found</body></html>", "text/html"),
        (b"404: Not Found", "text/plain"),
        (b"", "text/plain"),
        # Laravel's answer for an unknown route, when asked for JSON.
        (b'{"message": "The route v2/sims/1/usage could not be found."}', "application/json"),
    ],
)
async def test_a_404_page_is_an_endpoint_error_and_never_remembered(
    server: Server, page: tuple[bytes, str]
) -> None:
    server.page = page
    async with client(server) as c:
        for _ in range(2):
            with pytest.raises(EndpointNotFoundError) as caught:
                await c.sims.usage(ICCIDS[0])
            assert not isinstance(caught.value, NotFoundError)
            assert "base_url" in str(caught.value)
        assert c.stats.negative_cache_hits == 0
    assert server.usage[ICCIDS[0]] == 2


async def test_a_sweep_against_a_404_page_writes_no_esim_off(server: Server) -> None:
    async with client(server) as c:
        for _ in range(2):
            async with c.sims.usage_many(ICCIDS) as results:
                errors = [type(r.error) async for r in results]
            assert errors == [EndpointNotFoundError] * 3
    assert server.usage == Counter(dict.fromkeys(ICCIDS, 2))


async def test_the_providers_404_is_still_remembered(server: Server) -> None:
    server.page = (json.dumps(NOT_FOUND).encode(), "application/json")
    async with client(server) as c:
        for _ in range(2):
            with pytest.raises(NotFoundError):
                await c.sims.usage(ICCIDS[0])
        assert c.stats.negative_cache_hits == 1
    assert server.usage[ICCIDS[0]] == 1

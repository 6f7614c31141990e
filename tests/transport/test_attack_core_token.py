"""A token endpoint that answers a token no request can carry.

An ``access_token`` that is empty, holds spaces, control characters (a CR LF would split the
``Authorization`` header) or non-ASCII text is not a bearer token: the answer is unreadable,
retried like any unreadable answer, never sent on, and never kept (so the client recovers as
soon as the endpoint hands out a real token).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from esim_async import AiraloClient, TransportError
from tests.local_server import LocalServer

ICCID = "8944538532046590109"
GOOD = "good-token-0123456789"
USAGE = {"data": {"remaining": 100, "total": 1000, "status": "ACTIVE"}}


class TokenServer(LocalServer):
    """A server on 127.0.0.1 whose token endpoint answers ``tokens`` in turn (the last one
    from then on), recording the ``Authorization`` header of every usage request."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.token_requests = 0
        self.seen: list[str] = []

    async def _token(self, request: web.Request) -> web.Response:
        index = min(self.token_requests, len(self.tokens) - 1)
        self.token_requests += 1
        return web.json_response({"data": {"access_token": self.tokens[index], "expires_in": 3600}})

    async def _usage(self, request: web.Request) -> web.Response:
        self.seen.append(request.headers.get("Authorization", ""))
        return web.json_response(USAGE)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/token", self._token)
        app.router.add_get("/v2/sims/{iccid}/usage", self._usage)
        return app


@pytest.fixture
async def server() -> AsyncIterator[TokenServer]:
    async with TokenServer() as srv:
        yield srv


BAD_TOKENS = ["", "tok en-0123", "tok\r\nX-Injected: 1", "tok\x00abcdef", "tok\u00e9\u4e2d-0123"]


@pytest.mark.parametrize("bad", BAD_TOKENS)
async def test_an_unusable_token_is_an_unreadable_answer_retried_and_never_sent(
    server: TokenServer, bad: str
) -> None:
    server.tokens = [bad, GOOD]
    async with asyncio.timeout(4):
        async with AiraloClient("id", "secret", base_url=server.url, token_rate=None) as client:
            usage = await client.sims.usage(ICCID)
    assert usage.remaining == 100
    assert server.token_requests == 2
    assert server.seen == [f"Bearer {GOOD}"]


@pytest.mark.parametrize("bad", BAD_TOKENS)
async def test_an_unusable_token_fails_typed_and_the_client_recovers(
    server: TokenServer, bad: str
) -> None:
    server.tokens = [bad]
    async with asyncio.timeout(4):
        async with AiraloClient(
            "id", "secret", base_url=server.url, token_rate=None, max_retries=0
        ) as client:
            with pytest.raises(TransportError) as caught:
                await client.sims.usage(ICCID)
            assert "token" in str(caught.value)
            server.tokens = [GOOD]
            server.token_requests = 0
            usage = await client.sims.usage(ICCID)
    assert usage.remaining == 100
    assert server.seen == [f"Bearer {GOOD}"]

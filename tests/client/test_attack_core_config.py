"""Settings and per-call options out of range: a typed error before anything is sent.

A timeout of zero, a negative or NaN one is no timeout at all for aiohttp (a call against a
server that never answers would hang), an infinite one fails deep inside the first request, a
negative connection limit leaves every request waiting for a connection forever, and a body cap
below one byte fails every call after its budget was spent. Each is refused where it is given.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from esim_async import AiraloClient, InvalidRequestError
from tests.local_server import LocalServer

ICCID = "8944538532046590109"


class SilentServer(LocalServer):
    """A server on 127.0.0.1 that hands out tokens and never answers a usage request (until
    it is stopped), counting every request that reaches it."""

    def __init__(self) -> None:
        self.token_requests = 0
        self.usage_requests = 0
        self.release = asyncio.Event()

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        return web.json_response({"data": {"access_token": "tok-silent", "expires_in": 3600}})

    async def _usage(self, request: web.Request) -> web.Response:
        self.usage_requests += 1
        await self.release.wait()
        return web.json_response({"data": {"remaining": 1, "total": 2, "status": "ACTIVE"}})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/token", self._token)
        app.router.add_get("/v2/sims/{iccid}/usage", self._usage)
        return app

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        await super().__aexit__(*exc)


@pytest.fixture
async def silent() -> AsyncIterator[SilentServer]:
    async with SilentServer() as server:
        yield server


BAD_SETTINGS: list[tuple[str, Any]] = [
    ("timeout", 0),
    ("timeout", -1.0),
    ("timeout", math.nan),
    ("timeout", math.inf),
    ("timeout", "30"),
    ("connect_timeout", 0.0),
    ("connect_timeout", math.nan),
    ("max_retries", -1),
    ("max_retries", 1.5),
    ("max_retries", True),
    ("retry_after_cap", -1.0),
    ("retry_after_cap", math.nan),
    ("retry_after_cap", math.inf),
    ("max_body_size", 0),
    ("max_body_size", -1),
    ("connection_limit", -1),
    ("cache_ttl", math.nan),
    ("negative_cache_ttl", math.nan),
    ("cache_maxsize", 0),
    ("rate_margin", math.nan),
]


async def _refused_before_sending(silent: SilentServer, name: str, value: Any) -> None:
    """A client built with ``name=value`` refuses it, naming it, before any request."""

    async def one_call() -> None:
        async with asyncio.timeout(2):
            async with AiraloClient("id", "secret", base_url=silent.url, **{name: value}) as c:
                await c.sims.usage(ICCID)

    with pytest.raises(InvalidRequestError) as caught:
        await one_call()
    assert caught.value.field == name
    assert silent.token_requests == 0
    assert silent.usage_requests == 0


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
async def test_a_setting_out_of_range_is_refused_with_a_typed_error_naming_it(
    silent: SilentServer, name: str, value: Any
) -> None:
    await _refused_before_sending(silent, name, value)


@pytest.mark.parametrize("timeout", [0, -1.0, math.nan, math.inf])
async def test_a_call_timeout_out_of_range_is_refused_before_anything_is_sent(
    silent: SilentServer, timeout: float
) -> None:
    async with AiraloClient("id", "secret", base_url=silent.url, max_retries=0) as client:
        with pytest.raises(InvalidRequestError) as caught:
            async with asyncio.timeout(2):
                await client.sims.usage(ICCID, timeout=timeout)
        assert caught.value.field == "timeout"
        with pytest.raises(InvalidRequestError):
            async with asyncio.timeout(2):
                await client.sims.usage_entry(ICCID, timeout=timeout)
    assert silent.token_requests == 0
    assert silent.usage_requests == 0


@pytest.mark.parametrize("max_retries", [-1, 1.5, True])
async def test_a_call_retry_count_out_of_range_is_refused_before_anything_is_sent(
    silent: SilentServer, max_retries: Any
) -> None:
    async with AiraloClient("id", "secret", base_url=silent.url) as client:
        with pytest.raises(InvalidRequestError) as caught:
            async with asyncio.timeout(2):
                await client.sims.usage(ICCID, max_retries=max_retries)
        assert caught.value.field == "max_retries"
    assert silent.token_requests == 0
    assert silent.usage_requests == 0


@pytest.mark.parametrize("max_age", [math.nan, -1.0, "60", True])
async def test_a_max_age_out_of_range_is_refused_before_anything_is_sent(
    silent: SilentServer, max_age: Any
) -> None:
    """A NaN ``max_age`` used to accept a cached value of any age (every comparison with NaN
    is false), and a sweep took it for every ICCID."""
    async with AiraloClient("id", "secret", base_url=silent.url, max_retries=0) as client:
        for call in (client.sims.usage, client.sims.usage_entry):
            with pytest.raises(InvalidRequestError) as caught:
                async with asyncio.timeout(2):
                    await call(ICCID, max_age=max_age)
            assert caught.value.field == "max_age"
        with pytest.raises(InvalidRequestError) as caught:
            client.sims.usage_many([ICCID], max_age=max_age)
        assert caught.value.field == "max_age"
    assert silent.token_requests == 0
    assert silent.usage_requests == 0


async def test_a_good_call_timeout_still_ends_a_silent_call(silent: SilentServer) -> None:
    async with AiraloClient("id", "secret", base_url=silent.url, max_retries=0) as client:
        with pytest.raises(Exception) as caught:
            async with asyncio.timeout(3):
                await client.sims.usage(ICCID, timeout=0.2)
    assert type(caught.value).__name__ == "TransportError"
    assert silent.usage_requests == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("usage_path", "/sims/{iccid}/{other}"),
        ("usage_path", "/sims/{iccid}}/usage"),
        ("usage_path", "/sims/{iccid!r}/usage"),
        ("usage_path", "/sims/{iccid}/usage?x=1"),
        ("usage_path", "/sims/{iccid}/usage#top"),
        ("prefix", "/v2{version}"),
        ("prefix", "/v 2"),
        ("prefix", "/v2?x=1"),
    ],
)
async def test_a_path_template_no_request_could_follow_is_refused_when_built(
    silent: SilentServer, name: str, value: str
) -> None:
    await _refused_before_sending(silent, name, value)

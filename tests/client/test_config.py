"""One frozen client configuration: every transport gets every option, every limit has one shape.

A loopback server on 127.0.0.1 stands in for the provider (data API and PressOne's voice API);
time is a :class:`ManualClock`, so limits and cache lifetimes show in counts and virtual
arrival times, never in real durations.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from esim_async import (
    AiraloClient,
    ClientConfig,
    EndpointLimit,
    InvalidRequestError,
    ManualClock,
    PressOneClient,
    Rate,
    RateLimitedError,
    TransportError,
)
from tests.local_server import LocalServer

PAYLOADS = Path(__file__).resolve().parents[1] / "fixtures" / "payloads"
ICCID = "8944465400000267221"
OTHER = "8944465400000267222"
USERS_PATH = "/api/third-party/partner/user/"
USERS = {"results": [{"email": "a@b.co"}], "count": 1}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Provider(LocalServer):
    """A loopback provider: token, usage, product information and the voice users list.

    ``arrivals`` holds ``(clock time, path)`` of every request as it reached the server, read on
    the test's clock; ``voice`` answers the voice users list (replace it to inject faults).
    """

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.arrivals: list[tuple[float, str]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.voice: Handler = self._users
        #: ``expires_in`` of the tokens handed out.
        self.token_lifetime = 3600

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_post("/v2/token", self._token)
        app.router.add_post("/customer/v2/token", self._token)
        app.router.add_get("/v2/sims/{iccid}/usage", self._usage)
        app.router.add_get("/customer/v2/sims/{iccid}/usage", self._usage)
        app.router.add_get("/v2/packages/{slug}/product-information", self._product)
        app.router.add_get(USERS_PATH, self._voice)
        return app

    def times(self, fragment: str) -> list[float]:
        """Clock times at which requests whose path contains ``fragment`` arrived."""
        return [t for t, path in self.arrivals if fragment in path]

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.arrivals.append((self.clock.now(), request.path))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1

    async def _token(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "data": {"access_token": "tok", "expires_in": self.token_lifetime},
                "meta": {"message": "ok"},
            }
        )

    async def _usage(self, request: web.Request) -> web.StreamResponse:
        body = (PAYLOADS / "airalo" / "usage_200.json").read_bytes()
        return web.Response(body=body, content_type="application/json")

    async def _product(self, request: web.Request) -> web.StreamResponse:
        body = (PAYLOADS / "airalo" / "product_information_200.json").read_bytes()
        return web.Response(body=body, content_type="application/json")

    async def _voice(self, request: web.Request) -> web.StreamResponse:
        return await self.voice(request)

    async def _users(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(USERS)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def provider(clock: ManualClock) -> AsyncIterator[Provider]:
    async with Provider(clock) as served:
        yield served


def pressone(provider: Provider, **options: Any) -> PressOneClient:
    options.setdefault("voice_api_key", "pk_test")
    return PressOneClient(
        "id",
        "secret",
        base_url=provider.url,
        voice_base_url=provider.url,
        clock=provider.clock,
        **options,
    )


def airalo(provider: Provider, **options: Any) -> AiraloClient:
    return AiraloClient("id", "secret", base_url=provider.url, clock=provider.clock, **options)


# ---------------------------------------------------------------------- the voice transport


async def test_voice_requests_go_through_the_callers_session(provider: Provider) -> None:
    sent: list[str] = []

    async def on_start(
        session: aiohttp.ClientSession, ctx: Any, params: aiohttp.TraceRequestStartParams
    ) -> None:
        sent.append(params.url.path)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    async with aiohttp.ClientSession(trace_configs=[trace]) as mine:
        async with pressone(provider, session=mine) as client:
            users = await client.voice.users(email="a@b.co")
            await client.sims.usage(ICCID)
        assert not mine.closed  # the caller's session is never closed by the client
    assert users.total == 1
    assert sent.count(USERS_PATH) == 1
    assert sent.count(f"/customer/v2/sims/{ICCID}/usage") == 1


async def test_voice_requests_go_through_the_callers_connector(provider: Provider) -> None:
    class CountingConnector(aiohttp.TCPConnector):
        connects = 0

        async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
            CountingConnector.connects += 1
            return await super().connect(req, traces, timeout)

    connector = CountingConnector(force_close=True)
    try:
        async with pressone(provider, connector=connector) as client:
            await client.voice.users()
            await client.voice.users()
        assert CountingConnector.connects == 2
        assert not connector.closed  # the caller's connector is never closed by the client
    finally:
        await connector.close()


async def test_voice_answers_are_capped_at_max_body_size(provider: Provider) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        return web.json_response({"results": [{"email": "a@b.co", "pad": "x" * 4096}]})

    provider.voice = big
    async with pressone(provider, max_body_size=1024, max_retries=0) as client:
        with pytest.raises(TransportError, match="max_body_size"):
            await client.voice.users()
    async with pressone(provider) as roomy:
        assert (await roomy.voice.users()).items[0].email == "a@b.co"


async def test_voice_retry_after_beyond_the_cap_is_not_slept_through(provider: Provider) -> None:
    answers = [
        web.json_response(
            {"message": "Too Many Attempts."}, status=429, headers={"Retry-After": "30"}
        )
    ]

    async def throttled_once(request: web.Request) -> web.StreamResponse:
        return answers.pop() if answers else web.json_response(USERS)

    provider.voice = throttled_once
    async with pressone(provider, retry_after_cap=5.0) as client:
        with pytest.raises(RateLimitedError) as info:
            await client.voice.users()
    assert info.value.retry_after == 30.0
    assert len(provider.times(USERS_PATH)) == 1  # refused at once, not retried after 30 s


async def test_voice_connections_are_capped_at_connection_limit(provider: Provider) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response(USERS)

    provider.voice = slow
    async with pressone(provider, connection_limit=1) as client:
        calls = [asyncio.create_task(client.voice.users()) for _ in range(3)]
        for _ in range(50):
            await asyncio.sleep(0.01)
            if provider.in_flight:
                break
        await asyncio.sleep(0.05)
        release.set()
        results = await asyncio.gather(*calls)
    assert len(results) == 3
    assert provider.most_in_flight == 1


# ---------------------------------------------------------------------- one frozen config


async def test_config_is_public_frozen_and_read_only(provider: Provider) -> None:
    async with airalo(provider) as client:
        config = client.config
        assert isinstance(config, ClientConfig)
        with pytest.raises(AttributeError):
            client.config = config  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.cache_ttl = 1.0  # type: ignore[misc]
        with pytest.raises(TypeError):
            config.limits["usage"] = EndpointLimit()  # type: ignore[index]
        # The client works exactly as before after the attempts above.
        await client.sims.usage(ICCID)
        provider.clock.advance(1199.0)
        await client.sims.usage(ICCID)
    assert len(provider.times("/usage")) == 1


async def test_the_config_carries_no_secret(provider: Provider) -> None:
    client = pressone(
        provider, voice_api_key="pk_CONFIG_SENTINEL", proxy="http://u:PROXY-PW@127.0.0.1:9"
    )
    client_secret = "CONFIG-SECRET-SENTINEL"
    other = PressOneClient("id", client_secret, base_url=provider.url)
    for shown in (repr(client.config), repr(other.config)):
        assert "pk_CONFIG_SENTINEL" not in shown and client_secret not in shown
        assert "PROXY-PW" not in shown


@pytest.mark.parametrize(("sandbox", "ttl"), [(False, 1200.0), (True, 3600.0)])
async def test_default_cache_ttl_shows_in_when_usage_is_asked_again(
    provider: Provider, sandbox: bool, ttl: float
) -> None:
    async with airalo(provider, sandbox=sandbox) as client:
        await client.sims.usage(ICCID)
        provider.clock.advance(ttl - 1.0)
        await client.sims.usage(ICCID)
        assert len(provider.times("/usage")) == 1
        provider.clock.advance(2.0)
        await client.sims.usage(ICCID)
    assert len(provider.times("/usage")) == 2


async def test_usage_limit_given_as_one_endpoint_limit_is_kept(provider: Provider) -> None:
    limits = {"usage": EndpointLimit(shared=Rate(2, 10.0), per_key=Rate(1, 60.0))}
    async with airalo(provider, limits=limits, rate_margin=0.0) as client:
        await client.sims.usage(ICCID)
        await client.sims.usage(OTHER)
        await client.sims.usage(ICCID, refresh=True)
    one, other, again = (t for t, p in provider.arrivals if p.endswith("/usage"))
    assert one == other == 0.0  # the company window holds two
    assert again >= 60.0  # the eSIM's own window holds one per minute


async def test_usage_keywords_override_their_part_of_limits(provider: Provider) -> None:
    limits = {"usage": EndpointLimit(shared=Rate(1, 10.0), per_key=Rate(1, 600.0))}
    async with airalo(provider, limits=limits, iccid_rate=None, rate_margin=0.0) as client:
        await client.sims.usage(ICCID)
        await client.sims.usage(ICCID, refresh=True)
        await client.sims.usage(ICCID, refresh=True)
    assert provider.times("/usage") == pytest.approx([0.0, 10.0, 20.0])  # company limit only


async def test_a_bare_rate_for_a_per_package_endpoint_counts_per_package(
    provider: Provider,
) -> None:
    async with airalo(provider, limits={"product_information": Rate(1, 30.0)}) as client:
        await client.packages.product_information("pkg-a")
        await client.packages.product_information("pkg-b")
        await client.packages.product_information("pkg-a")
    first, second, third = provider.times("/product-information")
    assert first == second == 0.0
    assert third >= 30.0


async def test_a_bare_rate_for_an_endpoint_limited_both_ways_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="EndpointLimit") as info:
        AiraloClient("id", "secret", limits={"usage": Rate(1, 1.0)})
    assert info.value.field == "limits"
    with pytest.raises(InvalidRequestError, match="unknown endpoints: nope"):
        AiraloClient("id", "secret", limits={"nope": Rate(1, 1.0)})


async def test_voice_limit_comes_from_limits(provider: Provider) -> None:
    async with pressone(provider, limits={"voice": Rate(1, 30.0)}, rate_margin=0.0) as client:
        await client.voice.users()
        await client.voice.users()
    assert provider.times(USERS_PATH) == pytest.approx([0.0, 30.0])


async def test_token_limit_comes_from_limits(provider: Provider) -> None:
    provider.token_lifetime = 10  # each token is renewed after 9 s
    limits = {"token": EndpointLimit(shared=Rate(1, 100.0))}
    async with airalo(provider, limits=limits, rate_margin=0.0) as client:
        await client.sims.usage(ICCID)
        provider.clock.advance(10.0)
        await client.sims.usage(OTHER)
    assert provider.times("/token") == pytest.approx([0.0, 100.0])


def test_options_are_checked_when_the_client_is_built() -> None:
    with pytest.raises(InvalidRequestError, match="cache"):
        AiraloClient("id", "secret", cache_ttl=-1.0)
    with pytest.raises(InvalidRequestError, match="iccid_length"):
        AiraloClient("id", "secret", iccid_length=(5, 2))
    with pytest.raises(TypeError):
        AiraloClient("id", "secret", no_such_option=1)  # type: ignore[call-arg]


async def test_pressone_defaults_show_in_its_limits(provider: Provider) -> None:
    async with pressone(provider, rate_margin=0.0) as client:
        for _ in range(3):
            await client.sims.usage(ICCID, refresh=True)
        await client.sims.usage(OTHER)
    # No company limit and 100 per minute per eSIM: nothing waits.
    assert provider.times("/usage") == [0.0, 0.0, 0.0, 0.0]

"""The request loop, tested with aioresponses: retries, 401 refresh, 429s, writes, decoding."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
from aioresponses import aioresponses
from yarl import URL

from esim_async import (
    AiraloClient,
    AuthenticationError,
    InvalidIccidError,
    ManualClock,
    NotFoundError,
    OutcomeUnknownError,
    RateLimitedError,
    ServerError,
    TransportError,
    __version__,
)
from esim_async.transport import Request

BASE = "https://partners-api.airalo.com"
TOKEN_URL = f"{BASE}/v2/token"
ICCID = "8944465400000267221"
USAGE_URL = f"{BASE}/v2/sims/{ICCID}/usage"
USAGE_OK = {
    "data": {
        "remaining": 512,
        "total": 1024,
        "expired_at": "2026-01-01 00:00:00",
        "is_unlimited": False,
        "status": "ACTIVE",
        "remaining_voice": 0,
        "remaining_text": 0,
        "total_voice": 0,
        "total_text": 0,
    },
    "meta": {"message": "api.succes"},
}


def token_body(n: int = 1, expires_in: int = 86400) -> dict[str, Any]:
    return {
        "data": {"token_type": "Bearer", "expires_in": expires_in, "access_token": f"tok-{n}"},
        "meta": {"message": "success"},
    }


def calls(m: aioresponses, method: str, url: str) -> list[Any]:
    return m.requests.get((method, URL(url)), [])


@pytest.fixture
def mocked() -> Any:
    with aioresponses() as m:
        yield m


@pytest.fixture
async def client() -> AsyncIterator[AiraloClient]:
    async with AiraloClient("my-id", "my-secret-value", clock=ManualClock()) as c:
        yield c


async def test_usage_request_shape(mocked: aioresponses, client: AiraloClient) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, payload=USAGE_OK)
    usage = await client.sims.usage(ICCID)
    assert usage.remaining == 512 and usage.fetched_at is not None
    (token_call,) = calls(mocked, "POST", TOKEN_URL)
    assert token_call.kwargs["data"] == {
        "client_id": "my-id",
        "client_secret": "my-secret-value",
        "grant_type": "client_credentials",
    }
    (usage_call,) = calls(mocked, "GET", USAGE_URL)
    headers = usage_call.kwargs["headers"]
    assert headers["Authorization"] == "Bearer tok-1"
    assert usage_call.kwargs["allow_redirects"] is False
    assert client.stats.requests == 2 and client.stats.attempts == 2


async def test_default_headers_on_own_session(client: AiraloClient) -> None:
    session = client._transport._ensure_session()
    assert session.headers["User-Agent"] == f"esim-async/{__version__}"
    assert session.headers["Accept"] == "application/json"


async def test_invalid_iccid_spends_nothing(mocked: aioresponses, client: AiraloClient) -> None:
    with pytest.raises(InvalidIccidError):
        await client.sims.usage("1234/../../token")
    assert client.stats.requests == 0 and not mocked.requests


async def test_5xx_on_get_is_retried_then_raised(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    for _ in range(3):
        mocked.get(USAGE_URL, status=503, body=b"<html>down</html>")
    with pytest.raises(ServerError) as info:
        await client.sims.usage(ICCID)
    assert info.value.status == 503
    assert len(calls(mocked, "GET", USAGE_URL)) == 3  # 1 + max_retries (2)
    assert client.stats.retries == 2


async def test_5xx_then_success(mocked: aioresponses, client: AiraloClient) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, status=500, body=b"")
    mocked.get(USAGE_URL, payload=USAGE_OK)
    assert (await client.sims.usage(ICCID)).remaining == 512


async def test_per_call_max_retries(mocked: aioresponses, client: AiraloClient) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, status=500, body=b"", repeat=True)
    with pytest.raises(ServerError):
        await client.sims.usage(ICCID, max_retries=0)
    assert len(calls(mocked, "GET", USAGE_URL)) == 1


async def test_undecodable_2xx_is_retried_then_transport_error(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, body=b"<html>maintenance</html>", content_type="text/html", repeat=True)
    with pytest.raises(TransportError, match="undecodable"):
        await client.sims.usage(ICCID)
    assert len(calls(mocked, "GET", USAGE_URL)) == 3


async def test_network_errors_are_transport_errors(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, exception=aiohttp.ServerDisconnectedError(), repeat=True)
    with pytest.raises(TransportError):
        await client.sims.usage(ICCID)
    assert len(calls(mocked, "GET", USAGE_URL)) == 3


async def test_401_refreshes_the_token_once(mocked: aioresponses, client: AiraloClient) -> None:
    mocked.post(TOKEN_URL, payload=token_body(1))
    mocked.post(TOKEN_URL, payload=token_body(2))
    mocked.get(USAGE_URL, status=401, payload={"message": "Unauthenticated."})
    mocked.get(USAGE_URL, payload=USAGE_OK)
    assert (await client.sims.usage(ICCID)).remaining == 512
    auths = [c.kwargs["headers"]["Authorization"] for c in calls(mocked, "GET", USAGE_URL)]
    assert auths == ["Bearer tok-1", "Bearer tok-2"]
    assert client.stats.token_requests == 2


async def test_401_twice_is_an_authentication_error(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body(1))
    mocked.post(TOKEN_URL, payload=token_body(2))
    mocked.get(USAGE_URL, status=401, payload={"message": "Unauthenticated."}, repeat=True)
    with pytest.raises(AuthenticationError):
        await client.sims.usage(ICCID)
    assert len(calls(mocked, "GET", USAGE_URL)) == 2


async def test_refused_token_never_echoes_the_secret(
    mocked: aioresponses, client: AiraloClient, payload
) -> None:
    mocked.post(TOKEN_URL, status=401, body=payload("airalo/token_401_client_auth_failed.json"))
    with pytest.raises(AuthenticationError) as info:
        await client.sims.usage(ICCID)
    assert "my-secret-value" not in str(info.value)
    assert "my-secret-value" not in repr(info.value.body)
    assert not calls(mocked, "GET", USAGE_URL)


async def test_429_cools_down_everyone_and_retries(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    others = [f"89444654000002672{i:02d}" for i in range(4)]
    for other in others:
        mocked.get(f"{BASE}/v2/sims/{other}/usage", payload=USAGE_OK)
    mocked.get(
        USAGE_URL,
        status=429,
        payload={"message": "Too Many Attempts."},
        headers={"Retry-After": "1", "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0"},
    )
    mocked.get(USAGE_URL, payload=USAGE_OK)
    clock = client._clock
    assert isinstance(clock, ManualClock)
    for other in others:
        await client.sims.usage(other)
    # The company window (5 per second) is full when the 429 comes: the company limit tripped.
    assert (await client.sims.usage(ICCID)).remaining == 512
    assert client.stats.rate_limited == 1
    state = client.rate_limit_state()["usage"]
    assert state.cooldown_until == pytest.approx(1.0, abs=0.5)
    assert clock.now() >= 1.0  # the retry waited for the cool-down
    assert state.last_headers["X-RateLimit-Limit"] == "5"
    assert state.effective_per_second is not None and state.effective_per_second < 5


async def test_429_beyond_the_cap_surfaces_at_once(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(
        USAGE_URL,
        status=429,
        payload={"message": "Too Many Attempts."},
        headers={"Retry-After": "3600"},
    )
    with pytest.raises(RateLimitedError) as info:
        await client.sims.usage(ICCID)
    assert info.value.retry_after == 3600
    assert len(calls(mocked, "GET", USAGE_URL)) == 1


async def test_404_is_negative_cached(mocked: aioresponses, client: AiraloClient, payload) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, status=404, body=payload("airalo/usage_404_invalid_iccid.json"))
    mocked.get(USAGE_URL, status=404, body=payload("airalo/usage_404_invalid_iccid.json"))
    for _ in range(3):
        with pytest.raises(NotFoundError):
            await client.sims.usage(ICCID)
    assert len(calls(mocked, "GET", USAGE_URL)) == 1
    assert client.stats.negative_cache_hits == 2
    with pytest.raises(NotFoundError):
        await client.sims.usage(ICCID, refresh=True)
    assert len(calls(mocked, "GET", USAGE_URL)) == 2


async def test_cache_ttl_max_age_and_refresh(mocked: aioresponses, client: AiraloClient) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, payload=USAGE_OK, repeat=True)
    clock = client._clock
    assert isinstance(clock, ManualClock)
    first = await client.sims.usage(ICCID)
    clock.advance(600)
    assert await client.sims.usage(ICCID) is first
    assert await client.sims.usage(ICCID, max_age=300) is not first
    assert len(calls(mocked, "GET", USAGE_URL)) == 2
    await client.sims.usage(ICCID, refresh=True)
    assert len(calls(mocked, "GET", USAGE_URL)) == 3
    clock.advance(1201)
    await client.sims.usage(ICCID)
    assert len(calls(mocked, "GET", USAGE_URL)) == 4
    assert client.stats.cache_hits == 1


async def test_recycled_is_kept_24h(mocked: aioresponses, client: AiraloClient, payload) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, body=payload("airalo/usage_200_recycled.json"), repeat=True)
    clock = client._clock
    assert isinstance(clock, ManualClock)
    assert (await client.sims.usage(ICCID)).is_recycled
    clock.advance(5 * 3600)
    assert (await client.sims.usage(ICCID)).is_recycled
    assert len(calls(mocked, "GET", USAGE_URL)) == 1


async def test_concurrent_calls_share_one_request(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, payload=USAGE_OK, repeat=True)
    results = await asyncio.gather(*(client.sims.usage(ICCID) for _ in range(20)))
    assert all(r is results[0] for r in results)
    assert len(calls(mocked, "GET", USAGE_URL)) == 1
    assert len(calls(mocked, "POST", TOKEN_URL)) == 1
    assert client.stats.coalesced + client.stats.cache_hits == 19


async def test_errors_are_not_cached_as_data(mocked: aioresponses, client: AiraloClient) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, status=500, body=b"", repeat=False)
    mocked.get(USAGE_URL, status=500, body=b"")
    mocked.get(USAGE_URL, status=500, body=b"")
    mocked.get(USAGE_URL, payload=USAGE_OK)
    with pytest.raises(ServerError):
        await client.sims.usage(ICCID)
    assert (await client.sims.usage(ICCID)).remaining == 512


# ------------------------------------------------------------------ writes (non-idempotent)

POST_URL = f"{BASE}/v2/orders"
_any = msgspec.json.Decoder()


def write(client: AiraloClient) -> Request[Any]:
    return Request("POST", "/v2/orders", _any, idempotent=False, form={"quantity": "1"})


async def test_write_with_5xx_is_never_retried(mocked: aioresponses, client: AiraloClient) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.post(POST_URL, status=500, body=b"", repeat=True)
    with pytest.raises(OutcomeUnknownError, match="may or may not") as info:
        await client._transport.request(write(client))
    assert isinstance(info.value.__cause__, ServerError)
    assert len(calls(mocked, "POST", POST_URL)) == 1


async def test_write_with_lost_connection_is_never_retried(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.post(POST_URL, exception=aiohttp.ServerDisconnectedError(), repeat=True)
    with pytest.raises(OutcomeUnknownError, match="not idempotent"):
        await client._transport.request(write(client))
    assert len(calls(mocked, "POST", POST_URL)) == 1


async def test_write_that_never_connected_is_retried(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 443, True, True, None, None, None),
        OSError(111, "Connection refused"),
    )
    mocked.post(POST_URL, exception=refused)
    mocked.post(POST_URL, payload={"data": {"id": 1}})
    assert await client._transport.request(write(client)) == {"data": {"id": 1}}


async def test_write_with_429_is_retried(mocked: aioresponses, client: AiraloClient) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.post(
        POST_URL,
        status=429,
        payload={"message": "Too Many Attempts."},
        headers={"Retry-After": "1"},
    )
    mocked.post(POST_URL, payload={"data": {"id": 2}})
    assert await client._transport.request(write(client)) == {"data": {"id": 2}}


async def test_write_with_undecodable_success_says_it_probably_happened(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.post(POST_URL, body=b"<html>", content_type="text/html")
    req = Request("POST", "/v2/orders", msgspec.json.Decoder(dict[str, int]), idempotent=False)
    with pytest.raises(OutcomeUnknownError, match="probably"):
        await client._transport.request(req)
    assert len(calls(mocked, "POST", POST_URL)) == 1


async def test_oversized_body_is_refused(mocked: aioresponses) -> None:
    async with AiraloClient(
        "id", "secret", clock=ManualClock(), max_body_size=1000, max_retries=0
    ) as c:
        mocked.post(TOKEN_URL, payload=token_body())
        mocked.get(USAGE_URL, body=json.dumps({"data": {"x": "y" * 5000}}).encode())
        with pytest.raises(TransportError, match="cap"):
            await c.sims.usage(ICCID)

"""What the transport hands aiohttp for one request: the arguments the request needs, no more.

Each argument passed on to aiohttp's session is packed and unpacked twice on its way in; the
usual GET (no query, no body, no proxy, default TLS checks) passes only its URL, its headers
and ``allow_redirects=False``. Anything a request does set still goes through.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec
import pytest
from aioresponses import aioresponses
from yarl import URL

from esim_async import AiraloClient, ManualClock
from esim_async.stats import ClientStats
from esim_async.testing import Emulator, Fleet, ServerLimits
from esim_async.transport import Request, Transport

BASE = "https://partners-api.airalo.com"
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
TOKEN = {"data": {"token_type": "Bearer", "expires_in": 86400, "access_token": "tok-1"}}


@pytest.fixture
def mocked() -> Any:
    with aioresponses() as m:
        yield m


def _calls(m: aioresponses, method: str, url: str) -> list[Any]:
    return m.requests.get((method, URL(url)), [])


async def test_a_plain_get_hands_aiohttp_only_its_headers_and_no_redirects(
    mocked: aioresponses,
) -> None:
    mocked.post(f"{BASE}/v2/token", payload=TOKEN)
    mocked.get(USAGE_URL, payload=USAGE_OK)
    async with AiraloClient("my-id", "my-secret-value", clock=ManualClock()) as client:
        assert (await client.sims.usage(ICCID)).remaining == 512
    (call,) = _calls(mocked, "GET", USAGE_URL)
    assert set(call.kwargs) == {"headers", "allow_redirects"}
    assert call.kwargs["allow_redirects"] is False
    assert call.kwargs["headers"]["Authorization"] == "Bearer tok-1"


async def test_what_a_request_sets_still_reaches_aiohttp(mocked: aioresponses) -> None:
    url = f"{BASE}/v2/orders"
    mocked.post(f"{url}?page=2", payload={"data": 1})
    transport = Transport(
        BASE, clock=ManualClock(), stats=ClientStats(), proxy="http://127.0.0.1:3128"
    )
    request = Request(
        "POST",
        "/v2/orders",
        msgspec.json.Decoder(),
        authenticated=False,
        idempotent=False,
        params={"page": "2"},
        json={"quantity": 1},
        timeout=5.0,
    )
    try:
        assert await transport.request(request) == {"data": 1}
    finally:
        await transport.aclose()
    (call,) = _calls(mocked, "POST", f"{url}?page=2")
    assert call.kwargs["params"] == {"page": "2"}
    assert call.kwargs["json"] == {"quantity": 1}
    assert call.kwargs["proxy"] == "http://127.0.0.1:3128"
    assert call.kwargs["timeout"].total == 5.0
    assert call.kwargs["allow_redirects"] is False


async def test_on_its_own_session_the_token_rides_in_the_session_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bearer token is one of the own session's headers (set when it changes), so the
    usual request hands aiohttp no headers of its own to merge into the session's."""
    fleet = Fleet.generate(3, seed=7)
    iccids = fleet.iccids()
    handed: list[Any] = []
    request = aiohttp.ClientSession.request

    def spy(self: aiohttp.ClientSession, method: str, url: Any, **kwargs: Any) -> Any:
        handed.append(kwargs.get("headers"))
        return request(self, method, url, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "request", spy)
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu,
        AiraloClient("id", "secret", base_url=emu.url, token_rate=None) as client,
    ):
        for iccid in iccids:  # the emulator answers 401 to a request without the token
            await client.sims.usage(iccid)
        assert client.stats.token_requests == 1
    assert len(handed) == 1 + len(iccids)
    assert handed[1:] == [None] * len(iccids)


async def test_a_request_without_the_token_never_carries_it(mocked: aioresponses) -> None:
    """Requests with and without the token, one after the other on the same own session."""
    balance = f"{BASE}/v2/balance"
    mocked.get(balance, payload={"data": 1}, repeat=True)
    current = ""

    class Tokens:
        async def get(self) -> str:
            return current

        def invalidate(self, token: str) -> None:
            return None

    transport = Transport(BASE, clock=ManualClock(), stats=ClientStats(), auth=Tokens())
    decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
    try:
        for token in ("tok-1", None, "tok-2", "tok-2", None):
            current = token or current
            authenticated = token is not None
            request = Request("GET", "/v2/balance", decoder, authenticated=authenticated)
            assert await transport.request(request) == {"data": 1}
    finally:
        await transport.aclose()
    sent = [c.kwargs["headers"].get("Authorization") for c in _calls(mocked, "GET", balance)]
    assert sent == ["Bearer tok-1", None, "Bearer tok-2", "Bearer tok-2", None]

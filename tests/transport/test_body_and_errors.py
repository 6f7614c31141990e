"""Reading answers safely and mapping them to errors: the body cap counts decoded bytes, secrets
echoed by the server never reach an error, odd error shapes keep their field map, and an empty
usage answer is unreadable rather than a usage."""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
import tracemalloc
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aioresponses import aioresponses
from yarl import URL

from esim_async import (
    AiraloClient,
    ApiError,
    AuthenticationError,
    ManualClock,
    TransportError,
    Usage,
    UsageStatus,
    ValidationError,
    _secrets,
)
from esim_async._secrets import register_secret
from esim_async.errors import error_from_response
from esim_async.models import Envelope
from esim_async.stats import ClientStats
from esim_async.transport import Request, Transport

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
MiB = 1 << 20


def token_body(token: str) -> dict[str, Any]:
    return {
        "data": {"token_type": "Bearer", "expires_in": 86400, "access_token": token},
        "meta": {"message": "success"},
    }


def gets(m: aioresponses) -> int:
    return len(m.requests.get(("GET", URL(USAGE_URL)), []))


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that flood the secret registry get their own copy of it."""
    monkeypatch.setattr(_secrets, "_secrets", OrderedDict(_secrets._secrets))


@asynccontextmanager
async def http_server(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def raw_server(response: bytes, hits: list[int]) -> AsyncIterator[str]:
    """A server that answers every connection with ``response`` verbatim and hangs up."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hits.append(1)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def gzip_json(decoded_size: int) -> bytes:
    """A gzip-encoded JSON object whose decoded form is ``decoded_size`` bytes and more."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [comp.compress(b'{"pad": "')]
    piece = b"a" * MiB
    parts += [comp.compress(piece) for _ in range(decoded_size // MiB)]
    parts += [comp.compress(b'"}'), comp.flush()]
    return b"".join(parts)


def plain_request(path: str = "/body") -> Request[dict[str, str]]:
    return Request("GET", path, msgspec.json.Decoder(dict[str, str]), authenticated=False)


# --------------------------------------------------------------------------- the body cap


async def test_gzip_body_is_capped_on_decoded_bytes_while_reading() -> None:
    cap = MiB
    body = gzip_json(32 * MiB)
    assert len(body) < cap // 8  # the compressed size is far under the cap
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(
            body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async with http_server(handler) as url:
        transport = Transport(url, clock=ManualClock(), stats=ClientStats(), max_body_size=cap)
        tracemalloc.start()
        try:
            with pytest.raises(TransportError, match=rf"\b{cap}-byte cap"):
                await transport.request(plain_request())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await transport.aclose()
    # The 32 MiB decoded body was never held: reading stopped just past the 1 MiB cap.
    assert peak < 8 * MiB
    assert hits == 1  # an oversized answer is not fetched again


async def test_declared_content_length_over_the_cap_is_refused_before_reading() -> None:
    cap = 4096
    # Declares more than the cap, sends a little of it and hangs up: only the declared length
    # can tell the client the body is too large.
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {cap + 1}\r\n\r\n".encode()
        + b'{"pad": "'
    )
    hits: list[int] = []
    async with raw_server(response, hits) as url:
        transport = Transport(url, clock=ManualClock(), stats=ClientStats(), max_body_size=cap)
        try:
            with pytest.raises(
                TransportError, match=rf"\b{cap + 1} bytes exceeds the {cap}-byte cap"
            ):
                await transport.request(plain_request())
        finally:
            await transport.aclose()
    assert len(hits) == 1


async def test_body_of_exactly_the_cap_is_read() -> None:
    cap = 4096
    text = b'{"pad": "' + b"a" * (cap - 11) + b'"}'
    assert len(text) == cap

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=text, content_type="application/json")

    async with http_server(handler) as url:
        transport = Transport(url, clock=ManualClock(), stats=ClientStats(), max_body_size=cap)
        try:
            result = await transport.request(plain_request())
        finally:
            await transport.aclose()
    assert result == {"pad": "a" * (cap - 11)}


async def test_chunked_body_over_the_cap_is_refused() -> None:
    cap = 4096

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'{"pad": "')
        for _ in range(4):
            await resp.write(b"a" * cap)
        await resp.write(b'"}')
        await resp.write_eof()
        return resp

    async with http_server(handler) as url:
        transport = Transport(url, clock=ManualClock(), stats=ClientStats(), max_body_size=cap)
        try:
            with pytest.raises(TransportError, match=rf"\b{cap}-byte cap"):
                await transport.request(plain_request())
        finally:
            await transport.aclose()


# --------------------------------------------------------------------------- secrets in errors


def _texts(exc: ApiError) -> str:
    return "\n".join(
        [
            str(exc),
            repr(exc),
            repr(exc.body),
            repr(exc.message),
            repr(exc.reason),
            repr(exc.headers),
            "".join(traceback.format_exception(exc)),
        ]
    )


def test_registered_secret_echoed_in_an_error_body_is_redacted() -> None:
    secret = "ECHO-SECRET-5f1c0ad7b2"
    register_secret(secret)
    raw = json.dumps(
        {
            "data": {"authorization": [f"Bearer {secret} is invalid"], secret: "key"},
            "meta": {"message": f"token {secret} refused"},
        }
    ).encode()
    e = error_from_response(422, raw, {"X-Echo": secret})
    assert isinstance(e, ValidationError)
    blob = _texts(e) + repr(e.fields)
    assert secret not in blob
    assert e.message == "token *** refused"
    assert e.fields["authorization"] == ["Bearer *** is invalid"]
    assert e.body["data"]["***"] == "key"
    # The text of a body that is not JSON is redacted as well.
    plain = error_from_response(500, f"<html>{secret}</html>".encode(), {})
    assert secret not in _texts(plain) and plain.body == "<html>***</html>"


async def test_bearer_token_echoed_by_the_server_is_redacted(mocked: aioresponses) -> None:
    token = "ECHOED-BEARER-TOKEN-7c41e0"
    mocked.post(TOKEN_URL, payload=token_body(token))
    mocked.get(
        USAGE_URL,
        status=403,
        payload={
            "message": f"Bearer {token} is not allowed from this IP",
            "code": 89,
            "data": {"authorization": f"Bearer {token}"},
        },
    )
    async with AiraloClient("id", "echo-client-secret", clock=ManualClock()) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.sims.usage(ICCID)
    e = info.value
    assert e.code == 89
    assert token not in _texts(e)
    assert e.message == "Bearer *** is not allowed from this IP"


async def test_current_token_stays_secret_among_many_registered_secrets(
    mocked: aioresponses, caplog: pytest.LogCaptureFixture, clean_registry: None
) -> None:
    token = "CURRENT-BEARER-TOKEN-93ab1f"
    mocked.post(TOKEN_URL, payload=token_body(token))
    mocked.get(USAGE_URL, payload=USAGE_OK)
    mocked.get(USAGE_URL, status=422, payload={"code": 13, "reason": f"token {token} is busy"})
    async with AiraloClient("id", "flood-client-secret", clock=ManualClock()) as client:
        await client.sims.usage(ICCID)  # the token is in use
        # Many other clients of the same process register their own secrets meanwhile.
        for n in range(3000):
            register_secret(f"another-clients-secret-{n:05d}")
        with caplog.at_level(logging.DEBUG, logger="esim_async"):
            logging.getLogger("esim_async").debug("echo %s", token)
            with pytest.raises(ApiError) as info:
                await client.sims.usage(ICCID, refresh=True)
    assert token not in caplog.text and "echo ***" in caplog.text
    assert token not in _texts(info.value)


# --------------------------------------------------------------------------- error shapes


@pytest.mark.parametrize(
    "body",
    [
        {
            "data": {"quantity": ["The quantity must be at least 1."], "package_id": "bad"},
            "meta": {"message": ["the parameter is invalid", "check the fields"]},
        },
        {
            "data": {"quantity": ["The quantity must be at least 1."], "package_id": "bad"},
            "message": ["the parameter is invalid", "check the fields"],
        },
    ],
)
def test_422_with_a_list_message_keeps_its_fields(body: dict[str, Any]) -> None:
    e = error_from_response(422, json.dumps(body).encode(), {})
    assert isinstance(e, ValidationError)
    assert e.fields == {
        "quantity": ["The quantity must be at least 1."],
        "package_id": ["bad"],
    }
    assert e.message == "the parameter is invalid; check the fields"
    assert e.body == body
    assert "quantity" in str(e)


def test_odd_types_in_error_fields_do_not_lose_the_rest() -> None:
    body = {"code": 34, "reason": ["out of stock", "try later"], "meta": {"message": 5}}
    e = error_from_response(422, json.dumps(body).encode(), {})
    assert e.code == 34 and e.reason == "out of stock; try later"
    assert e.body == body


def test_an_error_body_nested_beyond_reading_is_still_a_typed_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for raw in (deep, b'{"meta": {"message": "x"}, "data": ' + deep + b"}"):
        e = error_from_response(500, raw, {})
        assert isinstance(e, ApiError) and e.status == 500
        assert isinstance(e.body, str) and len(e.body) == 2048


# --------------------------------------------------------------------------- empty usage


usage_decoder = msgspec.json.Decoder(Envelope[Usage], strict=False)
EMPTY_USAGE = [
    b'{"data": {}}',
    b'{"data": {}, "meta": {"message": "api.succes"}}',
    b'{"data": {"remaining": null, "total": null, "expired_at": null, "is_unlimited": null,'
    b' "remaining_voice": null, "remaining_text": null, "total_voice": null,'
    b' "total_text": null}}',
    b'{"data": {"unrelated": 1}}',
]


@pytest.mark.parametrize("body", EMPTY_USAGE)
def test_usage_without_any_figure_is_undecodable(body: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        usage_decoder.decode(body)


@pytest.mark.parametrize(
    "name",
    sorted(
        p.name
        for p in (Path(__file__).parents[1] / "fixtures" / "payloads" / "airalo").glob("usage_200*")
    ),
)
def test_documented_usage_payloads_still_decode(payload: Any, name: str) -> None:
    usage = usage_decoder.decode(payload(f"airalo/{name}")).data
    assert usage.status.is_known and usage.status is not UsageStatus.UNKNOWN


def test_a_usage_with_only_a_status_or_one_figure_decodes() -> None:
    assert usage_decoder.decode(b'{"data": {"status": "NOT_ACTIVE"}}').data.status == "NOT_ACTIVE"
    assert usage_decoder.decode(b'{"data": {"remaining": 0}}').data.remaining == 0


async def test_empty_usage_answer_is_retried_then_an_error_and_never_cached(
    mocked: aioresponses,
) -> None:
    mocked.post(TOKEN_URL, payload=token_body("empty-usage-token"))
    for _ in range(3):
        mocked.get(USAGE_URL, payload={"data": {}, "meta": {"message": "api.succes"}})
    mocked.get(USAGE_URL, payload=USAGE_OK)
    async with AiraloClient("id", "empty-usage-secret", clock=ManualClock()) as client:
        with pytest.raises(TransportError, match="undecodable"):
            await client.sims.usage(ICCID)
        assert gets(mocked) == 3  # the first try and two retries
        usage = await client.sims.usage(ICCID)  # nothing was cached: asked again
    assert gets(mocked) == 4
    assert usage.remaining == 512 and usage.status is UsageStatus.ACTIVE

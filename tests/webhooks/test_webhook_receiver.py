"""The framework-neutral receiver: raw body and headers in, a verified typed event (or a typed
error carrying its HTTP status) out; de-duplication, top-up re-arming, cache invalidation and
async-order delivery when a client is given; and the documented Starlette adapter, run from the
docs page itself."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from esim_async import AiraloClient, ManualClock
from esim_async.testing import Emulator, Fleet, ServerLimits
from esim_async.webhooks import (
    SIGNATURE_HEADER,
    AsyncOrderEvent,
    CreditLimitEvent,
    LowDataEvent,
    UnknownEvent,
    WebhookError,
    WebhookEvent,
    WebhookPayloadError,
    WebhookReceiver,
    WebhookSignatureError,
    WebhookTooLargeError,
    sign,
    status_for,
)

SECRET = "receiver-secret"
LOW = {"level": "90%", "package_name": "p", "remaining_percentage": 10, "iccid": "8944001"}
DOCS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "guide" / "webhooks.md"


def signed(payload: Any, *, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    """A body and the headers Airalo would send with it."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return body, {"content-type": "application/json", SIGNATURE_HEADER: sign(body, secret)}


async def chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# --------------------------------------------------------------------------- receive()


async def test_receive_returns_typed_events() -> None:
    receiver = WebhookReceiver(SECRET)
    low = await receiver.receive(*signed(LOW))
    assert isinstance(low, LowDataEvent) and low.iccid == "8944001" and low.level == "90%"
    credit = await receiver.receive(*signed({"message": "80% used", "remaining": 20.5}))
    assert isinstance(credit, CreditLimitEvent) and credit.remaining == 20.5
    unknown = await receiver.receive(*signed({"something": "new"}))
    assert isinstance(unknown, UnknownEvent) and unknown.raw == {"something": "new"}
    assert receiver.stats["received"] == 3 and receiver.stats["rejected"] == 0


@pytest.mark.parametrize("name", [SIGNATURE_HEADER, "Airalo-Signature", "AIRALO-SIGNATURE"])
async def test_the_signature_header_is_found_in_any_case(name: str) -> None:
    body, headers = signed(LOW)
    # A plain dict is case-sensitive; frameworks' header maps are not. Both work.
    plain = {name: headers[SIGNATURE_HEADER]}
    assert isinstance(await WebhookReceiver(SECRET).receive(body, plain), LowDataEvent)


@pytest.mark.parametrize(
    "headers",
    [{}, {SIGNATURE_HEADER: ""}, {SIGNATURE_HEADER: sign(json.dumps(LOW).encode(), "wrong")}],
    ids=["missing", "empty", "wrong-secret"],
)
async def test_a_missing_or_wrong_signature_is_a_401_and_passes_nothing_on(
    headers: dict[str, str],
) -> None:
    receiver = WebhookReceiver(SECRET)
    body = json.dumps(LOW).encode()
    with pytest.raises(WebhookSignatureError) as caught:
        await receiver.receive(body, headers)
    assert caught.value.status == 401 and status_for(caught.value) == 401
    assert isinstance(caught.value, WebhookError)
    assert receiver.stats["rejected"] == 1
    # Nothing was remembered: the same body, rightly signed, is delivered.
    assert isinstance(await receiver.receive(*signed(LOW)), LowDataEvent)


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"iccid": 5, "level": {"a": 1}}'])
async def test_a_signed_but_malformed_body_is_a_400(body: bytes) -> None:
    receiver = WebhookReceiver(SECRET)
    with pytest.raises(WebhookPayloadError) as caught:
        await receiver.receive(*signed(body))
    assert status_for(caught.value) == 400
    assert isinstance(caught.value, ValueError)  # what decode_event has always raised
    assert receiver.stats["malformed"] == 1 and receiver.stats["rejected"] == 0


async def test_an_oversized_body_is_a_413_before_its_signature_is_checked() -> None:
    receiver = WebhookReceiver(SECRET, max_body=256)
    big = {**LOW, "package_name": "x" * 1000}
    with pytest.raises(WebhookTooLargeError) as caught:
        await receiver.receive(*signed(big))
    assert status_for(caught.value) == 413
    # Unsigned and oversized: refused for its size, never hashed.
    with pytest.raises(WebhookTooLargeError):
        await receiver.receive(json.dumps(big).encode(), {})
    # A declared length over the cap is refused even when the bytes handed in are few.
    body, headers = signed(LOW)
    with pytest.raises(WebhookTooLargeError):
        await receiver.receive(body, {**headers, "content-length": "100000"})
    assert receiver.stats["too_large"] == 3 and receiver.stats["rejected"] == 0


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="secret"):
        WebhookReceiver("")
    with pytest.raises(ValueError, match="ack"):
        WebhookReceiver(SECRET, ack="later")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_body"):
        WebhookReceiver(SECRET, max_body=0)


def test_status_for_anything_else_is_500() -> None:
    assert status_for(RuntimeError("handler bug")) == 500
    assert status_for(WebhookSignatureError("invalid signature")) == 401


def test_errors_never_carry_the_secret_or_the_signature() -> None:
    receiver = WebhookReceiver("RECEIVER-SENTINEL-SECRET")
    body, headers = signed(LOW, secret="other")

    async def run() -> WebhookError:
        try:
            await receiver.receive(body, headers)
        except WebhookError as exc:
            return exc
        raise AssertionError("accepted")

    exc = asyncio.run(run())
    text = f"{exc} {exc!r}"
    assert "RECEIVER-SENTINEL-SECRET" not in text and headers[SIGNATURE_HEADER] not in text
    assert "RECEIVER-SENTINEL-SECRET" not in repr(receiver)


async def test_a_redelivery_is_none_until_the_dedup_window_has_passed() -> None:
    clock = ManualClock()
    receiver = WebhookReceiver(SECRET, dedup_ttl=60, clock=clock)
    assert isinstance(await receiver.receive(*signed(LOW)), LowDataEvent)
    assert await receiver.receive(*signed(LOW)) is None
    clock.advance(59)
    assert await receiver.receive(*signed(LOW)) is None
    clock.advance(2)
    assert isinstance(await receiver.receive(*signed(LOW)), LowDataEvent)
    assert receiver.stats["duplicates"] == 2


async def test_concurrent_redeliveries_pass_on_one_event() -> None:
    receiver = WebhookReceiver(SECRET)
    results = await asyncio.gather(*(receiver.receive(*signed(LOW)) for _ in range(5)))
    assert sum(r is not None for r in results) == 1


async def test_forget_lets_a_redelivery_through() -> None:
    receiver = WebhookReceiver(SECRET)
    body, headers = signed(LOW)
    assert await receiver.receive(body, headers) is not None
    receiver.forget(body)  # the handler failed: the provider's redelivery must be processed
    assert isinstance(await receiver.receive(body, headers), LowDataEvent)
    assert await receiver.receive(body, headers) is None


async def test_read_body_caps_what_it_reads() -> None:
    receiver = WebhookReceiver(SECRET, max_body=10)
    assert await receiver.read_body(chunks([b"12345", b"67890"])) == b"1234567890"
    with pytest.raises(WebhookTooLargeError):
        await receiver.read_body(chunks([b"12345", b"67890", b"1"]))

    pulled: list[bytes] = []

    async def endless() -> AsyncIterator[bytes]:
        while True:
            pulled.append(b"x")
            yield b"x" * 4

    with pytest.raises(WebhookTooLargeError):
        await receiver.read_body(endless())
    assert len(pulled) == 3  # stopped as soon as the cap was passed
    # A declared length over the cap is refused before anything is read.
    pulled.clear()
    with pytest.raises(WebhookTooLargeError):
        await receiver.read_body(endless(), {"Content-Length": "11"})
    assert pulled == []


# --------------------------------------------------------------------------- with a client


async def test_low_data_marks_cached_usage_stale() -> None:
    fleet = Fleet.generate(3, seed=21)
    iccid = fleet.iccids()[0]
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited(), cache_ttl=0) as emu,
        AiraloClient("id", SECRET, base_url=emu.url) as client,
    ):
        receiver = WebhookReceiver(SECRET, client=client)
        await client.sims.usage(iccid)
        emu.set_usage(iccid, remaining=10)
        await client.sims.usage(iccid)
        assert emu.stats.usage_by_iccid[iccid] == 1  # served from the cache
        event = await receiver.receive(*signed({**LOW, "iccid": iccid}))
        assert isinstance(event, LowDataEvent)
        fresh = await client.sims.usage(iccid)
        assert fresh.raw_remaining == 10
        assert emu.stats.usage_by_iccid[iccid] == 2


async def test_low_data_drops_the_shared_redis_entry(redis_server: Any) -> None:
    from esim_async.backends.redis import RedisBackend

    fleet = Fleet.generate(3, seed=22)
    iccid = fleet.iccids()[0]
    async with Emulator(fleet=fleet, limits=ServerLimits.unlimited(), cache_ttl=0) as emu:
        receiving = AiraloClient(
            "acct", SECRET, base_url=emu.url, backend=RedisBackend.from_url(redis_server.url)
        )
        async with receiving:
            await receiving.sims.usage(iccid)  # cached here and in Redis
            receiver = WebhookReceiver(SECRET, client=receiving)
            assert await receiver.receive(*signed({**LOW, "iccid": iccid})) is not None
        # Closing waited for the shared invalidation. Another process reads Redis: it refetches.
        other = AiraloClient(
            "acct", SECRET, base_url=emu.url, backend=RedisBackend.from_url(redis_server.url)
        )
        async with other:
            await other.sims.usage(iccid)
        assert emu.stats.usage_by_iccid[iccid] == 2


async def test_a_shared_entry_survives_without_the_webhook(redis_server: Any) -> None:
    """The control for the test above: without the notification the other process hits Redis."""
    from esim_async.backends.redis import RedisBackend

    fleet = Fleet.generate(3, seed=22)
    iccid = fleet.iccids()[0]
    async with Emulator(fleet=fleet, limits=ServerLimits.unlimited(), cache_ttl=0) as emu:
        for _ in range(2):
            backend = RedisBackend.from_url(redis_server.url)
            async with AiraloClient("acct", SECRET, base_url=emu.url, backend=backend) as c:
                await c.sims.usage(iccid)
        assert emu.stats.usage_by_iccid[iccid] == 1


async def test_a_topup_rearms_that_esims_thresholds() -> None:
    fleet = Fleet.generate(3, seed=23)
    iccid = fleet.iccids()[0]
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu,
        AiraloClient("id", SECRET, base_url=emu.url) as client,
    ):
        receiver = WebhookReceiver(SECRET, client=client)
        other = {**LOW, "iccid": fleet.iccids()[1]}
        assert await receiver.receive(*signed({**LOW, "iccid": iccid})) is not None
        assert await receiver.receive(*signed(other)) is not None
        assert await receiver.receive(*signed({**LOW, "iccid": iccid})) is None
        packages = await client.sims.topup_packages(iccid)
        await client.orders.topup(packages[0].id, iccid)
        assert await receiver.receive(*signed({**LOW, "iccid": iccid})) is not None
        assert await receiver.receive(*signed(other)) is None  # only that eSIM re-armed


async def test_an_async_order_event_resolves_wait_async() -> None:
    async with AiraloClient("id", SECRET, base_url="http://127.0.0.1:9") as client:
        receiver = WebhookReceiver(SECRET, client=client)
        waiting = asyncio.ensure_future(client.orders.wait_async("REQ-1", timeout=5))
        await asyncio.sleep(0)
        event = await receiver.receive(*signed({"request_id": "REQ-1", "reason": "no stock"}))
        assert isinstance(event, AsyncOrderEvent)
        assert await waiting is event and not event.ok and event.reason == "no stock"


# --------------------------------------------------------------------------- handle()


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[WebhookEvent] = []
        self.fail = fail

    async def __call__(self, event: WebhookEvent) -> None:
        self.events.append(event)
        if self.fail:
            raise RuntimeError("handler bug")


async def test_handle_answers_each_outcome_with_its_status() -> None:
    recorder = Recorder()
    receiver = WebhookReceiver(SECRET, recorder, ack="after_handler", max_body=256)
    body, headers = signed(LOW)
    assert await receiver.handle(body, {}) == (401, "invalid signature")
    assert (await receiver.handle(*signed(b"{not json"))).status == 400
    assert await receiver.handle(*signed({**LOW, "package_name": "x" * 1000})) == (
        413,
        "body too large",
    )
    assert await receiver.handle(body, headers) == (200, "ok")
    assert await receiver.handle(body, headers) == (200, "duplicate")
    assert len(recorder.events) == 1


async def test_handle_after_a_failed_handler_lets_the_redelivery_through() -> None:
    recorder = Recorder(fail=True)
    receiver = WebhookReceiver(SECRET, recorder, ack="after_handler")
    body, headers = signed(LOW)
    assert await receiver.handle(body, headers) == (500, "handler failed")
    recorder.fail = False
    assert await receiver.handle(body, headers) == (200, "ok")
    assert await receiver.handle(body, headers) == (200, "duplicate")
    assert len(recorder.events) == 2
    assert receiver.stats["handler_errors"] == 1 and receiver.stats["delivered"] == 1


async def test_handle_immediate_runs_the_handler_in_the_background() -> None:
    gate = asyncio.Event()
    seen: list[WebhookEvent] = []

    async def slow(event: WebhookEvent) -> None:
        await gate.wait()
        seen.append(event)

    receiver = WebhookReceiver(SECRET, slow)
    assert await receiver.handle(*signed(LOW)) == (200, "ok")
    assert seen == []  # answered before the handler finished
    gate.set()
    await receiver.drain()
    assert len(seen) == 1 and receiver.stats["delivered"] == 1


# --------------------------------------------------------------------------- the docs example


def docs_example() -> dict[str, Any]:
    """Run the docs page's Python block and return what it defines."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS_PAGE.read_text(), flags=re.S)
    assert len(blocks) == 1, "the page has exactly one Python block, the tested example"
    namespace: dict[str, Any] = {"__name__": "docs_webhooks_example"}
    exec(compile(blocks[0], str(DOCS_PAGE), "exec"), namespace)
    return namespace


@pytest.fixture
def example() -> dict[str, Any]:
    return docs_example()


def post(http: TestClient, payload: Any, *, secret: str = SECRET, unsigned: bool = False) -> Any:
    body, headers = signed(payload, secret=secret)
    if unsigned:
        del headers[SIGNATURE_HEADER]
    return http.post("/airalo", content=body, headers=headers)


def test_the_starlette_example_answers_like_webhook_app(example: dict[str, Any]) -> None:
    recorder = Recorder()
    create_app: Callable[..., Starlette] = example["create_app"]
    app = create_app(WebhookReceiver(SECRET, max_body=512), recorder)
    with TestClient(app) as http:
        assert http.head("/airalo").status_code == 200
        assert post(http, LOW, unsigned=True).status_code == 401
        assert post(http, LOW, secret="wrong").status_code == 401
        assert post(http, b"{not json").status_code == 400
        assert post(http, {**LOW, "package_name": "x" * 1000}).status_code == 413
        assert recorder.events == []
        assert post(http, LOW).status_code == 200
        assert post(http, LOW).status_code == 200  # a redelivery, not passed on again
        assert len(recorder.events) == 1 and isinstance(recorder.events[0], LowDataEvent)


def test_the_starlette_example_has_the_provider_redeliver_after_a_handler_error(
    example: dict[str, Any],
) -> None:
    recorder = Recorder(fail=True)
    app = example["create_app"](WebhookReceiver(SECRET), recorder)
    with TestClient(app) as http:
        assert post(http, LOW).status_code == 500
        recorder.fail = False
        assert post(http, LOW).status_code == 200  # the redelivery is processed
        assert post(http, LOW).status_code == 200  # and then de-duplicated
    assert len(recorder.events) == 2


def test_the_docs_handler_prints_low_data(
    example: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    app = example["create_app"](WebhookReceiver(SECRET), example["on_event"])
    with TestClient(app) as http:
        assert post(http, LOW).status_code == 200
    assert "8944001" in capsys.readouterr().out


# --------------------------------------------------------------------------- webhook_app


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_webhook_app_reads_a_body_that_arrives_in_pieces(declared: bool) -> None:
    from aiohttp.test_utils import TestClient as AiohttpClient
    from aiohttp.test_utils import TestServer

    from esim_async.webhooks import webhook_app

    recorder = Recorder()
    body, headers = signed(LOW)
    if declared:
        headers["Content-Length"] = str(len(body))

    async def pieces() -> AsyncIterator[bytes]:
        yield body[:20]
        await asyncio.sleep(0.05)  # the rest arrives in a later segment
        yield body[20:]

    app = webhook_app(SECRET, on_event=recorder, ack="after_handler")
    async with AiohttpClient(TestServer(app)) as http:
        resp = await http.post("/", data=pieces(), headers=headers)
        assert resp.status == 200, await resp.text()
    assert len(recorder.events) == 1

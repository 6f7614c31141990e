"""Hostile notification bodies: nested beyond reading, signed or not, get the answer the receiver
promises (401 unsigned, 400 signed), never an unhandled error (a 500 the provider retries)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from esim_async import AiraloClient, ManualClock
from esim_async.webhooks import (
    SIGNATURE_HEADER,
    AsyncOrderEvent,
    WebhookPayloadError,
    WebhookReceiver,
    WebhookSignatureError,
    sign,
    webhook_app,
)

SECRET = "attack-webhook-secret"
#: Well within the default 1 MiB cap, nested far deeper than any decoder recurses.
DEEP_BODIES = [
    b"[" * 200_000 + b"]" * 200_000,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    b'{"data":' * 100_000 + b'{"request_id":"r"}' + b"}" * 100_000,
]


@pytest.mark.parametrize("body", DEEP_BODIES, ids=["arrays", "objects", "wrapped-order"])
async def test_an_unsigned_deeply_nested_body_is_refused_as_unsigned(body: bytes) -> None:
    receiver = WebhookReceiver(SECRET)
    with pytest.raises(WebhookSignatureError):
        await receiver.receive(body, {SIGNATURE_HEADER: "0" * 128})
    assert await receiver.handle(body, {SIGNATURE_HEADER: "0" * 128}) == (401, "invalid signature")
    assert receiver.stats["rejected"] == 2


@pytest.mark.parametrize("body", DEEP_BODIES, ids=["arrays", "objects", "wrapped-order"])
async def test_a_signed_deeply_nested_body_is_a_payload_error(body: bytes) -> None:
    receiver = WebhookReceiver(SECRET)
    headers = {SIGNATURE_HEADER: sign(body, SECRET)}
    with pytest.raises(WebhookPayloadError):
        await receiver.receive(body, headers)
    status, _ = await receiver.handle(body, headers)
    assert status == 400
    assert receiver.stats["malformed"] == 2


async def test_webhook_app_answers_hostile_bodies_with_401_and_400() -> None:
    events: list[object] = []

    async def on_event(event: object) -> None:
        events.append(event)

    app = webhook_app(SECRET, on_event=on_event, ack="after_handler")
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        body = DEEP_BODIES[1]
        unsigned = await http.post("/", data=body, headers={SIGNATURE_HEADER: "ab" * 64})
        signed = await http.post("/", data=body, headers={SIGNATURE_HEADER: sign(body, SECRET)})
        assert (unsigned.status, signed.status) == (401, 400)
    assert events == []


@pytest.mark.parametrize("signature", ["é" * 128, "\uff41" * 128, "\udcc3\udca9"])
async def test_a_non_ascii_signature_is_refused_as_unsigned(signature: str) -> None:
    receiver = WebhookReceiver(SECRET)
    body = b'{"level": "90%", "iccid": "8944001"}'
    with pytest.raises(WebhookSignatureError):
        await receiver.receive(body, {SIGNATURE_HEADER: signature})
    assert await receiver.handle(body, {SIGNATURE_HEADER: signature}) == (401, "invalid signature")


async def test_webhook_app_answers_a_non_ascii_signature_header_with_401() -> None:
    app = webhook_app(SECRET)
    async with TestServer(app, host="127.0.0.1") as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        body = b'{"level": "90%", "iccid": "8944001"}'
        writer.write(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\n"
            + SIGNATURE_HEADER.encode()
            + b": "
            + "é".encode() * 64
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
    assert status_line.split()[1] == b"401"


def _async_order(**changes: object) -> bytes:
    """A finished async order as its webhook brings it (the order answer plus request_id)."""
    order = json.loads(
        (
            Path(__file__).resolve().parents[1] / "fixtures/payloads/airalo/order_200.json"
        ).read_text()
    )
    data = order["data"]
    data["request_id"] = "3NhR3gKmqCWK7IWppurpDX3Cg"
    for dotted, value in changes.items():
        target = data
        *path, last = dotted.split("__")
        for part in path:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
    return json.dumps(order).encode()


@pytest.mark.parametrize(
    "changes",
    [
        {"installation_guides": []},  # PHP's empty array for an empty map
        {"sims__0__msisdn": 883190601604295},  # a number where text was expected
        {"sims__0__apn": [], "sharing": []},
    ],
    ids=["guides-empty-list", "msisdn-number", "apn-and-sharing-empty-lists"],
)
async def test_a_paid_async_order_with_an_odd_field_still_reaches_its_waiter(
    changes: dict[str, object],
) -> None:
    # Refusing the notification (400) loses the order: the provider gives up after its
    # retries, wait_async times out, and the caller may order again.
    async with AiraloClient("id", SECRET, clock=ManualClock()) as client:
        receiver = WebhookReceiver(SECRET, client=client)
        body = _async_order(**changes)
        event = await receiver.receive(body, {SIGNATURE_HEADER: sign(body, SECRET)})
        assert isinstance(event, AsyncOrderEvent) and event.ok and event.order is not None
        assert [s.iccid for s in event.order.sims] == ["8944465400003573253"]
        assert event.order.id == 583747 and event.raw["data"]["request_id"] == event.request_id
        waited = await client.orders.wait_async("3NhR3gKmqCWK7IWppurpDX3Cg", timeout=5)
        assert waited is event
    if "sims__0__msisdn" in changes:
        assert event.order.sims[0].msisdn == "883190601604295"


async def test_a_handler_cancelled_mid_delivery_leaves_the_redelivery_to_be_handled() -> None:
    # ack="after_handler": the provider gets no answer when the handler is cancelled (its
    # connection dropped, the server shutting down) and redelivers; that redelivery must be
    # handled, not answered "duplicate" (the event would be lost).
    started = asyncio.Event()
    handled: list[object] = []

    async def on_event(event: object) -> None:
        if not handled and not started.is_set():
            started.set()
            await asyncio.Event().wait()  # cancelled here
        handled.append(event)

    receiver = WebhookReceiver(SECRET, on_event, ack="after_handler")
    body = b'{"level": "90%", "iccid": "8944001"}'
    headers = {SIGNATURE_HEADER: sign(body, SECRET)}
    first = asyncio.ensure_future(receiver.handle(body, headers))
    await asyncio.wait_for(started.wait(), 5)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await receiver.handle(body, headers) == (200, "ok")
    assert len(handled) == 1

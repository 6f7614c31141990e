"""Webhook signatures, event decoding and the receiver app."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aioresponses import aioresponses
from yarl import URL

from esim_async import AiraloClient, ManualClock
from esim_async.webhooks import (
    RECEIVER,
    AsyncOrderEvent,
    CreditLimitEvent,
    LowDataEvent,
    UnknownEvent,
    WebhookEvent,
    decode_event,
    sign,
    verify_signature,
    webhook_app,
)

SECRET = "test_secret"
SECRET_ID = "test_client_id"
AIRALO = "https://partners-api.airalo.com"
TOKEN = {"data": {"access_token": "tok", "expires_in": 3600}, "meta": {"message": "success"}}
VECTOR = (
    "dbcda7872bdfde3ec60c0fc59c4a448280cfa5f84f31e61728c9157a4b13651a"
    "e7b7d294e046095567c67bcdc9ff738110ff69b93402208d9ace15eb9bf137b9"
)


def test_documented_signature_vector() -> None:
    assert sign(b'{"key":"value"}', SECRET) == VECTOR
    assert verify_signature(b'{"key":"value"}', VECTOR, SECRET)
    assert verify_signature(b'{"key":"value"}', VECTOR.upper(), SECRET)


def test_canonical_re_encoding_also_verifies() -> None:
    # Sent pretty-printed, signed over the compact form with escaped slashes (the SDKs' reading).
    body = b'{\n  "url": "https://a.example/x",\n  "key": "value"\n}'
    signature = sign(b'{"url":"https:\\/\\/a.example\\/x","key":"value"}', SECRET)
    assert verify_signature(body, signature, SECRET)
    # Non-ASCII escaped PHP-style verifies too.
    body2 = '{"name": "Élan"}'.encode()
    assert verify_signature(body2, sign(b'{"name":"\\u00c9lan"}', SECRET), SECRET)


@pytest.mark.parametrize("signature", [None, "", "00" * 64, VECTOR[:-2], "zz"])
def test_wrong_or_missing_signatures_fail(signature: str | None) -> None:
    assert not verify_signature(b'{"key":"value"}', signature, SECRET)


def test_tampered_body_fails() -> None:
    assert not verify_signature(b'{"key":"valuE"}', VECTOR, SECRET)
    assert not verify_signature(b'{"key":"value"}', VECTOR, "other_secret")


def test_event_decoding(payload) -> None:
    low = decode_event(payload("airalo/webhook_low_data_payload.json"))
    assert isinstance(low, LowDataEvent)
    assert low.iccid == "87123123456889019" and low.level == "3days"  # 17 digits, kept
    credit = decode_event(payload("airalo/webhook_credit_limit_payload.json"))
    assert isinstance(credit, CreditLimitEvent) and credit.remaining == 225.35
    order = json.loads(payload("airalo/order_200.json"))
    order["data"]["request_id"] = "3NhR3gKmqCWK7IWppurpDX3Cg"
    event = decode_event(json.dumps(order).encode())
    assert isinstance(event, AsyncOrderEvent) and event.ok
    assert event.order is not None and event.order.sims
    failed = decode_event(b'{"request_id": "x" , "reason": "out of stock", "extra": 1}')
    assert isinstance(failed, AsyncOrderEvent) and not failed.ok
    assert failed.reason == "out of stock"
    assert isinstance(decode_event(b'{"something": "new"}'), UnknownEvent)
    for bad in (b"[1, 2]", b"not json", b'{"iccid": 5, "level": {"a": 1}}'):
        with pytest.raises(ValueError):
            decode_event(bad)


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[WebhookEvent] = []
        self.fail = fail
        self.seen = asyncio.Event()

    async def __call__(self, event: WebhookEvent) -> None:
        self.events.append(event)
        self.seen.set()
        if self.fail:
            raise RuntimeError("handler bug")


async def post(
    client: TestClient, payload: Any, *, secret: str = SECRET, signature: str | None = None
) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    sig = signature if signature is not None else sign(body, secret)
    if sig:
        headers["airalo-signature"] = sig
    return await client.post("/", data=body, headers=headers)


LOW = {"level": "90%", "package_name": "p", "remaining_percentage": 10, "iccid": "8944001"}


async def test_receiver_verifies_dedupes_and_dispatches() -> None:
    recorder = Recorder()
    clock = ManualClock()
    app = webhook_app(SECRET, on_event=recorder, dedup_ttl=60, clock=clock)
    async with TestClient(TestServer(app)) as client:
        assert (await client.head("/")).status == 200
        assert (await post(client, LOW, signature="")).status == 401
        assert (await post(client, LOW, secret="wrong")).status == 401
        assert recorder.events == []
        resp = await post(client, LOW)
        assert resp.status == 200
        await asyncio.wait_for(recorder.seen.wait(), 5)
        assert isinstance(recorder.events[0], LowDataEvent)
        # A redelivery is answered 200 and not passed on again ...
        assert (await post(client, LOW)).status == 200
        # ... until the dedup window has passed.
        clock.advance(61)
        assert (await post(client, LOW)).status == 200
        await asyncio.sleep(0.05)
        receiver = app[RECEIVER]
        assert receiver.stats["duplicates"] == 1
        assert receiver.stats["rejected"] == 2
        assert len(recorder.events) == 2
        assert (await post(client, b"{not json")).status == 400


async def test_rearm_after_topup() -> None:
    """A top-up bought through the client re-arms that eSIM's notifications (the same
    low-data body is passed on again); a top-up of another eSIM does not."""
    iccid, other = "8944465400000267221", "8944465400000267222"
    low = {**LOW, "iccid": iccid}
    recorder = Recorder()
    topup = {"data": {"id": 1, "type": "topup"}, "meta": {"message": "success"}}
    with aioresponses(passthrough=["http://127.0.0.1"]) as mocked:
        mocked.post(f"{AIRALO}/v2/token", payload=TOKEN, repeat=True)
        mocked.post(f"{AIRALO}/v2/orders/topups", payload=topup, repeat=True)
        async with AiraloClient(SECRET_ID, SECRET, clock=ManualClock()) as esims:
            app = webhook_app(SECRET, on_event=recorder, client=esims)
            async with TestClient(TestServer(app, host="127.0.0.1")) as client:
                await post(client, low)
                assert (await post(client, low)).status == 200  # a duplicate, dropped
                await esims.orders.topup("change-7days-1gb-topup", other)
                await post(client, low)  # still a duplicate
                await esims.orders.topup("change-7days-1gb-topup", iccid)
                await post(client, low)  # re-armed: passed on
                await asyncio.sleep(0.05)
                assert len(recorder.events) == 2
                assert app[RECEIVER].stats["duplicates"] == 2
    assert len(mocked.requests[("POST", URL(f"{AIRALO}/v2/orders/topups"))]) == 2


async def test_a_raising_handler_does_not_break_the_receiver(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder(fail=True)
    app = webhook_app(SECRET, on_event=recorder)
    async with TestClient(TestServer(app)) as client:
        assert (await post(client, LOW)).status == 200
        other = {**LOW, "iccid": "8944002"}
        assert (await post(client, other)).status == 200
        await asyncio.sleep(0.05)
        assert len(recorder.events) == 2
        assert app[RECEIVER].stats["handler_errors"] == 2
    assert "handler raised" in caplog.text


async def test_ack_after_handler_lets_the_provider_redeliver() -> None:
    recorder = Recorder(fail=True)
    app = webhook_app(SECRET, on_event=recorder, ack="after_handler")
    async with TestClient(TestServer(app)) as client:
        assert (await post(client, LOW)).status == 500
        recorder.fail = False
        assert (await post(client, LOW)).status == 200  # the redelivery is processed
        assert (await post(client, LOW)).status == 200  # and now de-duplicated
        assert len(recorder.events) == 2


async def test_oversized_bodies_are_refused() -> None:
    recorder = Recorder()
    app = webhook_app(SECRET, on_event=recorder, max_body=256)
    async with TestClient(TestServer(app)) as client:
        big = {**LOW, "package_name": "x" * 1000}
        resp = await post(client, big)
        assert resp.status == 413
        assert recorder.events == []


def test_secret_is_required_and_hidden() -> None:
    with pytest.raises(ValueError, match="secret"):
        webhook_app("")
    app = webhook_app("HOOK-SENTINEL-SECRET")
    assert "HOOK-SENTINEL-SECRET" not in repr(app[RECEIVER])

"""Part-2 endpoints against aioresponses with the documented payloads; local validation."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from esim_async import (
    AiraloClient,
    InvalidRequestError,
    ManualClock,
    PressOneClient,
    Rate,
    ValidationError,
)

from .landed import Landed, assert_held_back

BASE = "https://partners-api.airalo.com"
ICCID = "8944465400000267221"
TOKEN = {"data": {"access_token": "tok", "expires_in": 3600}, "meta": {"message": "success"}}
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def mocked() -> Any:
    with aioresponses() as m:
        m.post(f"{BASE}/v2/token", payload=TOKEN, repeat=True)
        yield m


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall=NOW.timestamp())


@pytest.fixture
async def client(clock: ManualClock) -> Any:
    async with AiraloClient("id", "secret", clock=clock, max_retries=0) as c:
        yield c


def calls(m: aioresponses, method: str, url: str) -> list[Any]:
    return m.requests.get((method, URL(url)), [])


async def test_future_order_create_list_cancel(mocked, client, payload) -> None:
    mocked.post(f"{BASE}/v2/future-orders", body=payload("airalo/future_order_200.json"))
    due = NOW + timedelta(days=3)
    created = await client.future_orders.create(
        "change-7days-1gb", 2, due, webhook_url="https://hooks.example/f", description="plan-7"
    )
    assert created.request_id == "9HrK4-KGgz8n71eGgdNS5cV7Y"
    (call,) = calls(mocked, "POST", f"{BASE}/v2/future-orders")
    assert call.kwargs["json"] == {
        "package_id": "change-7days-1gb",
        "quantity": 2,
        "description": "plan-7",
        "due_date": "2026-11-25 12:00",
        "webhook_url": "https://hooks.example/f",
    }
    listing = json.loads(payload("airalo/future_orders_list_200.json"))
    listing["meta"]["last_page"] = 1
    mocked.get(re.compile(r".*/v2/future-orders\?.*"), payload=listing)
    items = [f async for f in client.future_orders.list("pending")]
    assert items[0].status == "pending" and items[0].latest_cancellation_date
    mocked.post(
        f"{BASE}/v2/cancel-future-orders", body=payload("airalo/cancel_future_orders_200.json")
    )
    await client.future_orders.cancel([i.request_id for i in items])
    (cancel,) = calls(mocked, "POST", f"{BASE}/v2/cancel-future-orders")
    assert cancel.kwargs["json"] == {"request_ids": [i.request_id for i in items]}


@pytest.mark.parametrize(
    ("due", "fragment"),
    [
        (NOW + timedelta(days=1), "day after tomorrow"),
        (NOW + timedelta(days=400), "one year"),
        ("2026-12-01", "YYYY-MM-DD HH:MM"),
        ("tomorrow", "YYYY-MM-DD HH:MM"),
    ],
)
async def test_future_order_due_date_window(mocked, client, due, fragment) -> None:
    with pytest.raises(InvalidRequestError, match=fragment):
        await client.future_orders.create("change-7days-1gb", 1, due)
    assert not calls(mocked, "POST", f"{BASE}/v2/future-orders")


async def test_future_order_due_date_accepts_day_after_tomorrow(mocked, client, payload) -> None:
    mocked.post(f"{BASE}/v2/future-orders", body=payload("airalo/future_order_200.json"))
    await client.future_orders.create("change-7days-1gb", 1, "2026-11-24 00:00")


@pytest.mark.parametrize(
    ("ids", "fragment"),
    [
        ([], "1 to 10"),
        (["x" * 25] * 11, "1 to 10"),
        (["short"], "exactly 25"),
        (["a" * 25, "a" * 25], "unique"),
        ("a" * 25, "1 to 10"),
    ],
)
async def test_cancel_validation(mocked, client, ids, fragment) -> None:
    with pytest.raises(InvalidRequestError, match=fragment):
        await client.future_orders.cancel(ids)


async def test_cancel_field_errors(mocked, client, payload) -> None:
    examples = json.loads(payload("airalo/cancel_future_orders_422_examples.json"))
    mocked.post(
        f"{BASE}/v2/cancel-future-orders", status=422, payload=examples["already_processed"]
    )
    with pytest.raises(ValidationError) as info:
        await client.future_orders.cancel(["hjxVV6glJ9oTwieF4xeTgRuU6"])
    assert "request_ids.0" in info.value.fields


async def test_vouchers(mocked, client, payload) -> None:
    mocked.post(f"{BASE}/v2/voucher/esim", body=payload("airalo/esim_voucher_200.json"))
    vouchers = await client.vouchers.create_esim(
        [
            {"package_id": "jaco-mobile-7days-1gb", "quantity": 2, "booking_reference": "123"},
            {"package_id": "liberation-mobile-30days-3gb", "quantity": 1},
        ]
    )
    assert vouchers[0].codes == ["BIXLAAAA", "BSXLAAAA"]
    mocked.post(f"{BASE}/v2/voucher/airmoney", body=payload("airalo/voucher_airmoney_200.json"))
    air = await client.vouchers.create_airmoney(22, 1, usage_limit=40, voucher_code="ABC111")
    assert air.code == "ABC111" and air.created_at is not None
    with pytest.raises(InvalidRequestError, match=r"vouchers\.0\.quantity"):
        await client.vouchers.create_esim([{"package_id": "x-1", "quantity": 101}])
    with pytest.raises(InvalidRequestError, match="amount"):
        await client.vouchers.create_airmoney(100_001)
    with pytest.raises(InvalidRequestError, match="quantity 1"):
        await client.vouchers.create_airmoney(10, 2, voucher_code="FIXED")
    mocked.post(
        f"{BASE}/v2/voucher/esim", status=422, body=payload("airalo/esim_voucher_error.json")
    )
    with pytest.raises(ValidationError) as info:
        await client.vouchers.create_esim([{"package_id": "nope-1", "quantity": 1}])
    assert "vouchers.0.package_id" in info.value.fields


async def test_refunds(
    mocked: aioresponses, client: AiraloClient, clock: ManualClock, payload: Callable[[str], bytes]
) -> None:
    landed = Landed(clock)
    for _ in range(2):
        mocked.post(
            f"{BASE}/v2/refund",
            status=202,
            body=payload("airalo/refund_202.json"),
            callback=landed.record("refund"),
        )
    refund = await client.refunds.create([ICCID], "OTHERS", notes="wrong country")
    assert refund.refund_id == "12345"
    (call,) = calls(mocked, "POST", f"{BASE}/v2/refund")
    assert call.kwargs["data"] == [
        ("iccids[]", ICCID),
        ("reason", "OTHERS"),
        ("notes", "wrong country"),
    ]
    # One refund request per 5 minutes: the second waits for the first one's window.
    await client.refunds.create([ICCID], "NO_COVERAGE")
    assert_held_back(landed.times["refund"], Rate(1, 300.0))
    with pytest.raises(InvalidRequestError, match="notes"):
        await client.refunds.create([ICCID], "OTHERS")
    with pytest.raises(InvalidRequestError, match="reason"):
        await client.refunds.create([ICCID], "BORED")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="1 to 5"):
        await client.refunds.create([ICCID] * 6, "NO_COVERAGE")
    errors = json.loads(payload("airalo/refund_errors.json"))
    other = AiraloClient("id", "secret", clock=ManualClock(), max_retries=0)
    mocked.post(f"{BASE}/v2/refund", status=422, payload=errors["invalid_iccids"])
    with pytest.raises(ValidationError, match="do not belong"):
        await other.refunds.create([ICCID], "NO_COVERAGE")
    await other.aclose()


async def test_notifications(mocked, client, payload) -> None:
    mocked.post(
        f"{BASE}/v2/notifications/opt-in",
        body=payload("airalo/notification_opt_in_credit_limit_200.json"),
    )
    note = await client.notifications.opt_in(
        "webhook_credit_limit", webhook_url="https://example.com", levels=[50, 70, 80, 90]
    )
    assert note.levels == [50, 70, 80, 90] and note.contact_point == "https://example.com"
    mocked.get(
        f"{BASE}/v2/notifications/opt-in",
        body=payload("airalo/notification_opt_in_details_200.json"),
    )
    current = await client.notifications.get()
    assert current is not None and current.type == "webhook_low_data"
    mocked.post(f"{BASE}/v2/notifications/opt-out", status=204, body=b"")
    assert await client.notifications.opt_out("webhook_low_data") is None
    responses = json.loads(payload("airalo/webhook_simulator_responses.json"))
    mocked.post(f"{BASE}/v2/simulator/webhook", payload=responses["200"])
    sent = await client.notifications.simulate(
        "low_data_notification", type="data_90", iccid="87123123456889019"
    )
    assert sent == "Notification sent"
    for bad, fragment in [
        ({"type": "webhook_low_data"}, "webhook_url"),
        ({"type": "email_low_data"}, "email"),
        ({"type": "sms"}, "type"),
        ({"type": "webhook_low_data", "webhook_url": "https://x.test", "levels": [50]}, "levels"),
        (
            {"type": "webhook_credit_limit", "webhook_url": "https://x.test", "levels": [60]},
            "levels",
        ),
    ]:
        kind = bad.pop("type")
        with pytest.raises(InvalidRequestError, match=fragment):
            await client.notifications.opt_in(kind, **bad)
    with pytest.raises(InvalidRequestError, match="type"):
        await client.notifications.simulate("low_data_notification")
    with pytest.raises(InvalidRequestError, match="level"):
        await client.notifications.simulate("credit_limit_notification", level=60)


async def test_account_and_devices(mocked, client, payload) -> None:
    mocked.get(f"{BASE}/v2/balance", body=payload("airalo/balance_200.SCHEMA_DERIVED.json"))
    balances = await client.account.balance()
    assert len(balances.all()) == 1
    mocked.get(f"{BASE}/v2/balance", payload={"data": {"balances": []}, "meta": {}})
    assert (await client.account.balance()).all() == []
    mocked.get(
        re.compile(r".*/v2/finance/exchange-rates.*"),
        body=payload("airalo/exchange_rates_200.json"),
    )
    rates = await client.account.exchange_rates(date="2025-01-30", to=["aud", "GBP", "EUR"])
    assert rates.rates[0].from_ == "USD" and rates.rates[0].mid == pytest.approx(1.6059162)
    with pytest.raises(InvalidRequestError, match="to"):
        await client.account.exchange_rates(to="DOLLARS")
    mocked.get(
        f"{BASE}/v2/compatible-devices-lite",
        body=payload("airalo/compatible_devices_lite_200.json"),
    )
    devices = await client.devices.compatible()
    assert {d.os for d in devices} == {"android", "ios"}


async def test_pressone_voice_needs_a_key_and_keeps_raw_json() -> None:
    base = "https://voice.pressone.test"
    async with PressOneClient(
        "id",
        "secret",
        base_url="https://p1.test",
        voice_base_url=base,
        voice_api_key="pk_SENTINEL_KEY",
        clock=ManualClock(),
    ) as client:
        with aioresponses() as m:
            m.get(
                re.compile(rf"^{base}/api/third-party/partner/user/.*"),
                payload={
                    "results": [{"email": "a@b.co", "subscription": {"status": "x"}}],
                    "count": 1,
                },
            )
            users = await client.voice.users(email="a@b.co", page_size=10)
            assert users.items[0].email == "a@b.co" and users.total == 1
            assert users.raw["results"][0]["subscription"] == {"status": "x"}
            (((_, _url), (call,)),) = m.requests.items()
            assert call.kwargs["headers"]["Pressone-X-Api-Key"] == "pk_SENTINEL_KEY"
            assert call.kwargs["params"] == {"email": "a@b.co", "page_size": "10"}
        assert "pk_SENTINEL_KEY" not in repr(client) + repr(client.voice)
    async with PressOneClient("id", "secret", base_url="https://p1.test") as keyless:
        with pytest.raises(InvalidRequestError, match="voice_api_key"):
            await keyless.voice.renew_number("a@b.co")
    async with PressOneClient(
        "id",
        "secret",
        base_url="https://p1.test",
        voice_base_url=base,
        voice_api_key="pk_x",
        voice_paths={"claim_number": ("PUT", "/v9/claim")},
        clock=ManualClock(),
    ) as custom:
        with aioresponses() as m:  # anything but PUT /v9/claim fails the call
            m.put(f"{base}/v9/claim", payload={"success": True, "message": "claimed"})
            await custom.voice.claim_number("a@b.co")
            ((method, url),) = m.requests
            assert (method, url) == ("PUT", URL(f"{base}/v9/claim"))
            assert m.requests[(method, url)][0].kwargs["json"] == {"email": "a@b.co"}
        assert not hasattr(custom, "future_orders") and not hasattr(custom, "refunds")
    assert not hasattr(AiraloClient("id", "secret"), "voice")

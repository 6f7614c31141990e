"""Future orders: creation with its due-date window, listing, cancellation and its validation,
against aioresponses and through the emulator."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aioresponses import aioresponses

from esim_async import AiraloClient, InvalidRequestError, ValidationError

from .helpers import BASE, NOW, Payload, emulated, sent


async def test_future_order_create_list_cancel(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
    mocked.post(f"{BASE}/v2/future-orders", body=payload("airalo/future_order_200.json"))
    due = NOW + timedelta(days=3)
    created = await client.future_orders.create(
        "change-7days-1gb", 2, due, webhook_url="https://hooks.example/f", description="plan-7"
    )
    assert created.request_id == "9HrK4-KGgz8n71eGgdNS5cV7Y"
    (call,) = sent(mocked, "POST", f"{BASE}/v2/future-orders")
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
    (cancel,) = sent(mocked, "POST", f"{BASE}/v2/cancel-future-orders")
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
async def test_future_order_due_date_window(
    mocked: aioresponses, client: AiraloClient, due: datetime | str, fragment: str
) -> None:
    with pytest.raises(InvalidRequestError, match=fragment):
        await client.future_orders.create("change-7days-1gb", 1, due)
    assert not sent(mocked, "POST", f"{BASE}/v2/future-orders")


async def test_future_order_due_date_accepts_day_after_tomorrow(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
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
async def test_cancel_validation(
    mocked: aioresponses, client: AiraloClient, ids: Any, fragment: str
) -> None:
    with pytest.raises(InvalidRequestError, match=fragment):
        await client.future_orders.cancel(ids)


async def test_cancel_field_errors(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
    examples = json.loads(payload("airalo/cancel_future_orders_422_examples.json"))
    mocked.post(
        f"{BASE}/v2/cancel-future-orders", status=422, payload=examples["already_processed"]
    )
    with pytest.raises(ValidationError) as info:
        await client.future_orders.cancel(["hjxVV6glJ9oTwieF4xeTgRuU6"])
    assert "request_ids.0" in info.value.fields


async def test_future_orders_round_trip_through_the_emulator() -> None:
    async with (
        emulated() as emu,
        AiraloClient("id", "secret", base_url=emu.url, max_retries=0) as client,
    ):
        due = datetime.now(UTC) + timedelta(days=5)
        scheduled = await client.future_orders.create(
            "change-7days-1gb", 1, due, webhook_url="https://hooks.test/x"
        )
        pending = [f async for f in client.future_orders.list()]
        assert [f.request_id for f in pending] == [scheduled.request_id]
        await client.future_orders.cancel([scheduled.request_id])
        assert [f async for f in client.future_orders.list()] == []
        with pytest.raises(ValidationError, match="already processed"):
            await client.future_orders.cancel([scheduled.request_id])

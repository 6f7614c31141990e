"""How future orders read dates: a due date and the list's due-date filters are a datetime
(naive: UTC) or ``"YYYY-MM-DD HH:MM"`` naming a real minute, sent as UTC text; the webhook URL
and the order fields are checked as for other orders, and a future order has no ``type``."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aioresponses import aioresponses

from esim_async import AiraloClient, InvalidRequestError

from .helpers import BASE, NOW, Payload, sent

FUTURE = f"{BASE}/v2/future-orders"


async def test_due_dates_are_sent_as_utc_minutes(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
    plus_two = timezone(timedelta(hours=2))
    for due in (
        datetime(2026, 11, 26, 14, 30, tzinfo=plus_two),
        datetime(2026, 11, 26, 12, 30),
        "2026-11-26 12:30",
    ):
        mocked.post(FUTURE, body=payload("airalo/future_order_200.json"))
        await client.future_orders.create("change-7days-1gb", 1, due)
    bodies = [c.kwargs["json"] for c in sent(mocked, "POST", FUTURE)]
    assert (
        bodies
        == [{"package_id": "change-7days-1gb", "quantity": 1, "due_date": "2026-11-26 12:30"}] * 3
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"due_date": "2026-02-30 12:00"}, "due_date"),
        ({"due_date": "2026-11-26 25:00"}, "due_date"),
        ({"due_date": 1764000000}, "due_date"),
        ({"webhook_url": "ftp://hooks.example/f"}, "webhook_url"),
        ({"quantity": 0}, "quantity"),
        ({"package_id": "no spaces"}, "package_id"),
        ({"to_email": "ops@example.com"}, "sharing_option"),
    ],
)
async def test_future_order_fields_are_checked_before_sending(
    mocked: aioresponses, client: AiraloClient, kwargs: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {
        "package_id": "change-7days-1gb",
        "quantity": 1,
        "due_date": NOW + timedelta(days=3),
        **kwargs,
    }
    with pytest.raises(InvalidRequestError) as info:
        await client.future_orders.create(**args)
    assert info.value.field == field
    assert not sent(mocked, "POST", FUTURE)


async def test_list_filters_read_dates_as_utc_minutes(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
    listing = json.loads(payload("airalo/future_orders_list_200.json"))
    listing["meta"]["last_page"] = 1
    mocked.get(re.compile(r".*/v2/future-orders\?.*"), payload=listing, repeat=True)
    plus_two = timezone(timedelta(hours=2))
    async for _ in client.future_orders.list(
        "failed",
        from_due_date=datetime(2026, 12, 1, 2, 0, tzinfo=plus_two),
        to_due_date="2026-12-31 23:59",
    ):
        pass
    (call,) = sent(mocked, "GET", re.compile(r".*/v2/future-orders\?.*"))
    assert call.kwargs["params"]["from_due_date"] == "2026-12-01 00:00"
    assert call.kwargs["params"]["to_due_date"] == "2026-12-31 23:59"
    assert call.kwargs["params"]["status"] == "failed"

    for bad in ("2026-12-01", "2026-13-01 00:00", 20261201):
        with pytest.raises(InvalidRequestError) as info:
            async for _ in client.future_orders.list(to_due_date=bad):  # type: ignore[arg-type]
                pass
        assert info.value.field == "to_due_date"

"""Orders and top-ups: request bodies, local validation that spends no request, business and
field errors, unknown outcomes, asynchronous orders, and PressOne's form bodies."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aioresponses import aioresponses

from esim_async import (
    AiraloClient,
    BusinessError,
    InvalidIccidError,
    InvalidRequestError,
    ManualClock,
    OutcomeUnknownError,
    PressOneClient,
    ValidationError,
)

from .helpers import BASE, ICCID, TOKEN, Payload, sent


async def test_create_order_body_and_result(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
    mocked.post(f"{BASE}/v2/orders", body=payload("airalo/order_200.json"))
    order = await client.orders.create(
        "uki-mobile-15days-2gb",
        1,
        description="my-id-42",
        to_email="a@b.co",
        sharing_option=["link", "pdf"],
    )
    assert order.id == 583747 and order.sims and order.sims[0].qrcode
    assert order.created_at is not None and order.created_at.tzinfo is not None
    (call,) = sent(mocked, "POST", f"{BASE}/v2/orders")
    assert call.kwargs["json"] == {
        "package_id": "uki-mobile-15days-2gb",
        "quantity": 1,
        "type": "sim",
        "description": "my-id-42",
        "to_email": "a@b.co",
        "sharing_option": ["link", "pdf"],
    }


async def test_discount_pricing_order(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
    mocked.post(f"{BASE}/v2/orders", body=payload("airalo/order_200_discount_pricing.json"))
    order = await client.orders.create("kallur-digital-7days-1gb", 1)
    assert order.quantity == 1  # sent as "1"
    assert order.pricing_model == "discount_pricing" and order.total_amount_paid == 8.55
    assert order.net_price is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"quantity": 0}, "quantity"),
        ({"quantity": 51}, "quantity"),
        ({"quantity": True}, "quantity"),
        ({"package_id": ""}, "package_id"),
        ({"package_id": "a/b"}, "package_id"),
        ({"to_email": "nope"}, "to_email"),
        ({"to_email": "a@b.co"}, "sharing_option"),
        ({"to_email": "a@b.co", "sharing_option": ["fax"]}, "sharing_option"),
        ({"sharing_option": ["link"]}, "to_email"),
        ({"to_email": "a@b.co", "sharing_option": ["link"], "copy_address": ["x"]}, "copy_address"),
        ({"description": "x" * 300}, "description"),
    ],
)
async def test_order_validation_spends_nothing(
    mocked: aioresponses, client: AiraloClient, kwargs: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {"package_id": "uki-mobile-15days-2gb", "quantity": 1, **kwargs}
    with pytest.raises(InvalidRequestError) as info:
        await client.orders.create(args.pop("package_id"), args.pop("quantity"), **args)
    assert info.value.field == field
    assert not sent(mocked, "POST", f"{BASE}/v2/orders")


async def test_order_with_unknown_outcome_is_not_retried(
    mocked: aioresponses, payload: Payload
) -> None:
    async with AiraloClient("id", "secret", clock=ManualClock(), max_retries=5) as client:
        mocked.post(f"{BASE}/v2/orders", status=502, body=b"<html>bad gateway</html>", repeat=True)
        with pytest.raises(OutcomeUnknownError, match=r"orders\.list\(description"):
            await client.orders.create("uki-mobile-15days-2gb", 1, description="mine-1")
        assert len(sent(mocked, "POST", f"{BASE}/v2/orders")) == 1


async def test_order_business_and_validation_errors(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
    examples = json.loads(payload("airalo/order_422_examples.json"))
    bodies = list(examples.values()) if isinstance(examples, dict) else examples
    # Business errors come as {"code", "reason"} (airalo.md §6.3).
    business = {
        "code": 34,
        "reason": "The requested eSIM package is invalid or it is "
        "currently out of stock. Please try again later.",
    }
    mocked.post(f"{BASE}/v2/orders", status=422, payload=business)
    with pytest.raises(BusinessError) as info:
        await client.orders.create("uki-mobile-15days-2gb", 1)
    assert info.value.code == 34 and info.value.retryable
    field_map = next(b for b in bodies if isinstance(b, dict) and isinstance(b.get("data"), dict))
    mocked.post(f"{BASE}/v2/orders", status=422, payload=field_map)
    with pytest.raises(ValidationError) as vinfo:
        await client.orders.create("uki-mobile-15days-2gb", 1)
    assert vinfo.value.fields


async def test_create_async_order(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
    mocked.post(f"{BASE}/v2/orders-async", status=202, body=payload("airalo/order_async_202.json"))
    accepted = await client.orders.create_async(
        "uki-mobile-15days-2gb", 2, webhook_url="https://hooks.example/airalo"
    )
    assert accepted.request_id == "3NhR3gKmqCWK7IWppurpDX3Cg"
    (call,) = sent(mocked, "POST", f"{BASE}/v2/orders-async")
    assert call.kwargs["json"]["webhook_url"] == "https://hooks.example/airalo"
    with pytest.raises(InvalidRequestError, match="webhook_url"):
        await client.orders.create_async("uki-mobile-15days-2gb", 1, webhook_url="ftp://x")


async def test_get_and_list_orders(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
    listing = json.loads(payload("airalo/orders_list_200.json"))
    listing["meta"]["last_page"] = 1
    mocked.get(re.compile(r".*/v2/orders\?.*"), payload=listing)
    orders = [
        o
        async for o in client.orders.list(
            description="Example",
            include=["sims", "status"],
            created_at=("2023-02-01", "2023-03-01"),
            order_status="completed",
        )
    ]
    assert orders[0].status is not None and orders[0].status.slug == "completed"
    assert orders[1].type == "topup" and orders[1].sims == []
    (call,) = sent(mocked, "GET", re.compile(r".*/v2/orders\?.*"))
    assert call.kwargs["params"] == {
        "include": "sims,status",
        "filter[created_at]": "2023-02-01 - 2023-03-01",
        "filter[order_status]": "completed",
        "filter[description]": "Example",
        "page": "1",
    }
    single = {"data": listing["data"][0], "meta": {"message": "success"}}
    mocked.get(re.compile(r".*/v2/orders/9666.*"), payload=single)
    order = await client.orders.get(9666)
    assert order.code == "20230227-009666"
    with pytest.raises(InvalidRequestError, match="order_id"):
        await client.orders.get("12/../../token")


async def test_topup(mocked: aioresponses, client: AiraloClient, payload: Payload) -> None:
    mocked.post(f"{BASE}/v2/orders/topups", body=payload("airalo/topup_order_200.json"))
    order = await client.orders.topup("change-7days-1gb-topup", ICCID, description="t-1")
    assert order.type == "topup"
    (call,) = sent(mocked, "POST", f"{BASE}/v2/orders/topups")
    assert call.kwargs["json"] == {
        "package_id": "change-7days-1gb-topup",
        "iccid": ICCID,
        "description": "t-1",
    }
    with pytest.raises(InvalidIccidError):
        await client.orders.topup("change-7days-1gb-topup", "12")
    recycled = json.loads(payload("airalo/topup_order_422_examples.json"))
    body73 = next(
        (
            v
            for v in (recycled.values() if isinstance(recycled, dict) else recycled)
            if isinstance(v, dict) and v.get("code") == 73
        ),
        None,
    )
    if body73 is not None:
        mocked.post(f"{BASE}/v2/orders/topups", status=422, payload=body73)
        with pytest.raises(BusinessError) as info:
            await client.orders.topup("change-7days-1gb-topup", ICCID)
        assert info.value.recycled


async def test_pressone_sends_forms_under_its_prefix(mocked: aioresponses) -> None:
    base = "https://esim.pressone.test"
    mocked.post(f"{base}/customer/v2/token", payload=TOKEN)
    mocked.post(
        f"{base}/customer/v2/orders/topups",
        payload={"data": {"id": 1, "type": "topup"}, "meta": {"message": "success"}},
    )
    async with PressOneClient("id", "secret", base_url=base, clock=ManualClock()) as client:
        order = await client.orders.topup("change-7days-1gb-topup", ICCID)
        assert order.type == "topup"
    (call,) = sent(mocked, "POST", f"{base}/customer/v2/orders/topups")
    assert call.kwargs["data"] == [("package_id", "change-7days-1gb-topup"), ("iccid", ICCID)]
    assert not hasattr(client.orders, "create_async")
    assert not hasattr(client.sims, "update_brand")
    assert not hasattr(client.packages, "product_information")

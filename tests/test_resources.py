"""Every part-1 endpoint against aioresponses, with the documented payloads."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from esim_async import (
    AiraloClient,
    BusinessError,
    InvalidIccidError,
    InvalidRequestError,
    ManualClock,
    NotFoundError,
    OutcomeUnknownError,
    PressOneClient,
    Rate,
    RateLimitedError,
    ValidationError,
)

from .landed import Landed, assert_held_back, assert_not_held

BASE = "https://partners-api.airalo.com"
ICCID = "8944465400000267221"
TOKEN = {"data": {"access_token": "tok", "expires_in": 3600}, "meta": {"message": "success"}}
Payload = Callable[[str], bytes]


@pytest.fixture
def mocked() -> Any:
    with aioresponses() as m:
        m.post(f"{BASE}/v2/token", payload=TOKEN, repeat=True)
        yield m


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def client(clock: ManualClock) -> Any:
    async with AiraloClient("id", "secret", clock=clock, max_retries=0) as c:
        yield c


def sent(m: aioresponses, method: str, url: str | re.Pattern[str]) -> list[Any]:
    out = []
    for (meth, u), calls in m.requests.items():
        if meth == method and (u == URL(url) if isinstance(url, str) else url.match(str(u))):
            out.extend(calls)
    return out


def only_url(m: aioresponses, method: str) -> URL:
    urls = [u for (meth, u) in m.requests if meth == method and "token" not in str(u)]
    assert len(urls) == 1, urls
    return urls[0]


# ------------------------------------------------------------------ catalogue


async def test_packages_list_walks_every_page_on_our_own_host(mocked, client, payload) -> None:
    page1 = json.loads(payload("airalo/packages_200.json"))
    page1["meta"]["last_page"] = 3
    page2 = json.loads(payload("airalo/packages_200.json"))
    # Page 2 in the documented quirk: data keyed by index (and links to another host).
    page2["data"] = {"2": page2["data"][0], "3": page2["data"][1]}
    page3 = json.loads(payload("airalo/packages_200_global.json"))
    page3["meta"]["last_page"] = 3
    pattern = re.compile(r"^https://partners-api\.airalo\.com/v2/packages\?.*$")
    for body in (page1, page2, page3):
        mocked.get(pattern, payload=body)
    items = [
        c
        async for c in client.packages.list(
            country="us", include_topup=True, page_size=2, language="de"
        )
    ]
    assert [c.slug for c in items[:4]] == ["united-states", "france", "united-states", "france"]
    assert len(items) == 4 + len(page3["data"])
    calls = sent(mocked, "GET", pattern)
    assert len(calls) == 3
    urls = [str(u) for (meth, u) in mocked.requests if meth == "GET"]
    assert all(u.startswith(f"{BASE}/v2/packages?") for u in urls)
    params = [c.kwargs["params"] for c in calls]
    assert [p["page"] for p in params] == ["1", "2", "3"]
    assert params[0] == {"filter[country]": "US", "include": "topup", "page": "1", "limit": "2"}
    assert calls[0].kwargs["headers"]["Accept-Language"] == "de"
    first = items[0]
    package = first.operators[0].packages[0]
    assert package.id == "change-in-7days-1gb"
    assert package.net_price == 1.8 and package.amount == 1024
    assert first.min_price is not None and first.min_price.net_price is not None


async def test_packages_max_items_and_discount_pricing(mocked, client, payload) -> None:
    mocked.get(
        re.compile(r".*/v2/packages.*"),
        body=payload("airalo/packages_200_discount_pricing.json"),
        repeat=True,
    )
    items = [c async for c in client.packages.list(max_items=1)]
    assert len(items) == 1
    assert items[0].operators[0].packages[0].net_price is None  # absent under discount pricing
    page = await client.packages.page(1, type="global")
    assert page.number == 1 and page.last_page == 107 and page.meta.total == 213
    assert page.meta.per_page == 2  # sent as the string "2"
    assert page.pricing is not None and page.pricing.model == "discount_pricing"


async def test_packages_422_and_local_validation(mocked, client, payload) -> None:
    with pytest.raises(InvalidRequestError, match="type"):
        [c async for c in client.packages.list(type="regional")]  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="country"):
        [c async for c in client.packages.list(country="USA")]
    with pytest.raises(InvalidRequestError, match="page_size"):
        [c async for c in client.packages.list(page_size=0)]
    assert not [k for k in mocked.requests if "packages" in str(k[1])]
    mocked.get(
        re.compile(r".*/v2/packages.*"), status=422, body=payload("airalo/packages_422.json")
    )
    with pytest.raises(ValidationError) as info:
        [c async for c in client.packages.list()]
    assert "filter.type" in info.value.fields


async def test_product_information(
    mocked: aioresponses, client: AiraloClient, clock: ManualClock, payload: Payload
) -> None:
    landed = Landed(clock)
    slug, other = "change-in-3days-unlimited", "change-in-7days-1gb"
    for name in (slug, other):
        mocked.get(
            f"{BASE}/v2/packages/{name}/product-information",
            body=payload("airalo/product_information_200.json"),
            repeat=True,
            callback=landed.record(name),
        )
    pib = await client.packages.product_information(slug)
    assert pib.is_unlimited and pib.data_allowance_mb == "Unbegrenzt"
    assert pib.pib_version_date is not None and pib.pib_version_date.tzinfo is not None
    with pytest.raises(InvalidRequestError, match="slug"):
        await client.packages.product_information("../token")
    # 60 per minute per package: the 61st for one package waits, another package does not.
    for _ in range(59):
        await client.packages.product_information(slug)
    await client.packages.product_information(other)
    await client.packages.product_information(slug)
    assert_held_back(landed.times[slug], Rate(60, 60.0))
    assert landed.times[other] == [0.0]


# ------------------------------------------------------------------ orders


async def test_create_order_body_and_result(mocked, client, payload) -> None:
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


async def test_discount_pricing_order(mocked, client, payload) -> None:
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
async def test_order_validation_spends_nothing(mocked, client, kwargs, field) -> None:
    args: dict[str, Any] = {"package_id": "uki-mobile-15days-2gb", "quantity": 1, **kwargs}
    with pytest.raises(InvalidRequestError) as info:
        await client.orders.create(args.pop("package_id"), args.pop("quantity"), **args)
    assert info.value.field == field
    assert not sent(mocked, "POST", f"{BASE}/v2/orders")


async def test_order_with_unknown_outcome_is_not_retried(mocked, payload) -> None:
    async with AiraloClient("id", "secret", clock=ManualClock(), max_retries=5) as client:
        mocked.post(f"{BASE}/v2/orders", status=502, body=b"<html>bad gateway</html>", repeat=True)
        with pytest.raises(OutcomeUnknownError, match=r"orders\.list\(description"):
            await client.orders.create("uki-mobile-15days-2gb", 1, description="mine-1")
        assert len(sent(mocked, "POST", f"{BASE}/v2/orders")) == 1


async def test_order_business_and_validation_errors(mocked, client, payload) -> None:
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


async def test_create_async_order(mocked, client, payload) -> None:
    mocked.post(f"{BASE}/v2/orders-async", status=202, body=payload("airalo/order_async_202.json"))
    accepted = await client.orders.create_async(
        "uki-mobile-15days-2gb", 2, webhook_url="https://hooks.example/airalo"
    )
    assert accepted.request_id == "3NhR3gKmqCWK7IWppurpDX3Cg"
    (call,) = sent(mocked, "POST", f"{BASE}/v2/orders-async")
    assert call.kwargs["json"]["webhook_url"] == "https://hooks.example/airalo"
    with pytest.raises(InvalidRequestError, match="webhook_url"):
        await client.orders.create_async("uki-mobile-15days-2gb", 1, webhook_url="ftp://x")


async def test_get_and_list_orders(mocked, client, payload) -> None:
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


async def test_topup(mocked, client, payload) -> None:
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


# ------------------------------------------------------------------ eSIMs


async def test_get_and_list_sims(mocked, client, payload) -> None:
    mocked.get(re.compile(rf".*/v2/sims/{ICCID}\?.*"), body=payload("airalo/sim_200.json"))
    sim = await client.sims.get(ICCID, include=["order", "order.status"])
    assert sim.recycled is True and sim.recycled_at is not None
    assert sim.order is not None and sim.order.status is not None
    listing = json.loads(payload("airalo/sims_list_200.json"))
    listing["meta"]["last_page"] = 1
    mocked.get(re.compile(r".*/v2/sims\?.*"), payload=listing)
    sims = [s async for s in client.sims.list(iccid="8910", page_size=50)]
    assert sims[0].iccid == "891000000000009125"
    with pytest.raises(InvalidRequestError, match="include"):
        await client.sims.get(ICCID, include=["everything"])  # type: ignore[list-item]


async def test_topup_packages_are_never_cached(mocked, client, payload) -> None:
    url = f"{BASE}/v2/sims/{ICCID}/topups"
    mocked.get(url, body=payload("airalo/sim_topups_available_200.json"))
    mocked.get(url, payload={"data": []})
    first = await client.sims.topup_packages(ICCID)
    assert [p.id for p in first][:1] == ["bonbon-mobile-30days-3gb-topup"]
    assert await client.sims.topup_packages(ICCID) == []
    assert len(sent(mocked, "GET", url)) == 2


async def test_package_history_is_cached_and_limited_per_iccid(
    mocked: aioresponses, client: AiraloClient, clock: ManualClock, payload: Payload
) -> None:
    landed = Landed(clock)
    other = "8944465400000267222"
    for iccid in (ICCID, other):
        mocked.get(
            f"{BASE}/v2/sims/{iccid}/packages",
            body=payload("airalo/sim_package_history_200.json"),
            repeat=True,
            callback=landed.record(iccid),
        )
    history = await client.sims.package_history(ICCID)
    assert history[0].package is not None and history[0].package.id
    assert history[0].activated_at is not None and history[0].activated_at.tzinfo is not None
    assert await client.sims.package_history(ICCID) == history
    assert len(landed.times[ICCID]) == 1
    await client.sims.package_history(ICCID, refresh=True)
    assert len(landed.times[ICCID]) == 2
    # 10 per minute per eSIM: the 11th read of this one waits, another eSIM does not.
    for _ in range(8):
        await client.sims.package_history(ICCID, refresh=True)
    await client.sims.package_history(other)
    await client.sims.package_history(ICCID, refresh=True)
    assert_held_back(landed.times[ICCID], Rate(10, 60.0))
    assert landed.times[other] == [0.0]
    # Cached for 15 minutes from the last answer.
    clock.advance(899)
    await client.sims.package_history(ICCID)
    assert len(landed.times[ICCID]) == 11
    clock.advance(1)
    await client.sims.package_history(ICCID)
    assert len(landed.times[ICCID]) == 12


async def test_package_history_errors(mocked, client, payload) -> None:
    url = f"{BASE}/v2/sims/{ICCID}/packages"
    mocked.get(url, status=404, body=payload("airalo/sim_package_history_404_invalid_iccid.json"))
    with pytest.raises(NotFoundError):
        await client.sims.package_history(ICCID)
    with pytest.raises(NotFoundError):  # negative cache
        await client.sims.package_history(ICCID)
    other = "8944465400000267222"
    mocked.get(
        f"{BASE}/v2/sims/{other}/packages",
        status=429,
        body=payload("airalo/sim_package_history_429.json"),
    )
    with pytest.raises(RateLimitedError):
        await client.sims.package_history(other)


async def test_instructions_and_brand(mocked, client, payload) -> None:
    mocked.get(
        f"{BASE}/v2/sims/{ICCID}/instructions", body=payload("airalo/sim_instructions_200.json")
    )
    instructions = await client.sims.instructions(ICCID, language="fr")
    assert instructions.ios and instructions.ios[0].installation_via_qr_code is not None
    steps = instructions.ios[0].installation_via_qr_code.ordered_steps()
    assert steps[0].startswith("Go to Settings")
    (call,) = sent(mocked, "GET", f"{BASE}/v2/sims/{ICCID}/instructions")
    assert call.kwargs["headers"]["Accept-Language"] == "fr"
    mocked.put(
        f"{BASE}/v2/sims/{ICCID}/brand",
        payload={"data": {"brand_settings_name": None}, "meta": {"message": "success"}},
    )
    assert await client.sims.update_brand(ICCID, None) is None
    (put,) = sent(mocked, "PUT", f"{BASE}/v2/sims/{ICCID}/brand")
    assert put.kwargs["json"] == {"brand_settings_name": None}  # null means unbranded


# ------------------------------------------------------------------ PressOne


async def test_pressone_sends_forms_under_its_prefix(mocked) -> None:
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


async def test_pressone_package_history_is_one_per_15_minutes_per_esim(
    mocked: aioresponses, payload: Payload
) -> None:
    base = "https://esim.pressone.test"
    clock = ManualClock()
    landed = Landed(clock)
    other = "8944465400000267222"
    mocked.post(f"{base}/customer/v2/token", payload=TOKEN)
    for iccid in (ICCID, other):
        mocked.get(
            f"{base}/customer/v2/sims/{iccid}/packages",
            body=payload("airalo/sim_package_history_200.json"),
            repeat=True,
            callback=landed.record(iccid),
        )
    async with PressOneClient("id", "secret", base_url=base, clock=clock) as client:
        await client.sims.package_history(ICCID)
        await client.sims.package_history(other)
        await client.sims.package_history(ICCID, refresh=True)
    assert_held_back(landed.times[ICCID], Rate(1, 900.0))
    assert landed.times[other] == [0.0]


async def test_pressone_catalogue_is_not_held_back(mocked: aioresponses, payload: Payload) -> None:
    """PressOne publishes no catalogue limit: more pages at once than Airalo's 80 a minute."""
    base = "https://esim.pressone.test"
    clock = ManualClock()
    landed = Landed(clock)
    mocked.post(f"{base}/customer/v2/token", payload=TOKEN)
    mocked.get(
        re.compile(rf"^{re.escape(base)}/customer/v2/packages(\?.*)?$"),
        body=payload("airalo/packages_200.json"),
        repeat=True,
        callback=landed.record("packages"),
    )
    async with PressOneClient("id", "secret", base_url=base, clock=clock) as client:
        for _ in range(81):
            await client.packages.page()
    assert len(landed.times["packages"]) == 81
    assert_not_held(landed.times["packages"])


async def test_sandbox_adds_an_account_wide_limit(payload: Payload) -> None:
    """Sandbox: 50 requests a minute over the whole account, token and usage included."""
    clock = ManualClock()
    landed = Landed(clock)
    with aioresponses() as mocked:  # its own mock: the token's arrival is counted too
        mocked.post(f"{BASE}/v2/token", payload=TOKEN, repeat=True, callback=landed.record("all"))
        mocked.get(
            f"{BASE}/v2/balance",
            body=payload("airalo/balance_200.SCHEMA_DERIVED.json"),
            repeat=True,
            callback=landed.record("all"),
        )
        mocked.get(
            f"{BASE}/v2/sims/{ICCID}/usage",
            payload={"data": {"remaining": 1, "total": 2, "status": "ACTIVE"}, "meta": {}},
            callback=landed.record("all"),
        )
        async with AiraloClient("id", "secret", sandbox=True, clock=clock) as client:
            for _ in range(49):
                await client.account.balance()  # 49 and the token: 50
            await client.sims.usage(ICCID)  # the 51st, on an endpoint of its own
        assert len(mocked.requests[("POST", URL(f"{BASE}/v2/token"))]) == 1
    assert_held_back(landed.times["all"], Rate(50, 60.0))


async def test_limits_option_sets_an_endpoints_limit(
    mocked: aioresponses, payload: Payload
) -> None:
    clock = ManualClock()
    landed = Landed(clock)
    mocked.get(
        re.compile(r"^https://partners-api\.airalo\.com/v2/packages(\?.*)?$"),
        body=payload("airalo/packages_200.json"),
        repeat=True,
        callback=landed.record("packages"),
    )
    with pytest.raises(InvalidRequestError, match="unknown endpoints"):
        AiraloClient("id", "secret", limits={"nope": Rate(1, 1)})
    async with AiraloClient(
        "id", "secret", limits={"packages": Rate(40, 60.0)}, clock=clock
    ) as custom:
        for _ in range(41):
            await custom.packages.page()
    assert_held_back(landed.times["packages"], Rate(40, 60.0))

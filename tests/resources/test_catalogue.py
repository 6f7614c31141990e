"""The catalogue: package pages and their quirks, product information and its per-package
limit, and the catalogue limits of each provider (aioresponses, with the documented payloads)."""

from __future__ import annotations

import json
import re

import pytest
from aioresponses import aioresponses

from esim_async import (
    AiraloClient,
    InvalidRequestError,
    ManualClock,
    PressOneClient,
    Rate,
    ValidationError,
)

from ..landed import Landed, assert_held_back, assert_not_held
from .helpers import BASE, TOKEN, Payload, sent


async def test_packages_list_walks_every_page_on_our_own_host(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
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


async def test_packages_max_items_and_discount_pricing(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
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


async def test_packages_422_and_local_validation(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
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

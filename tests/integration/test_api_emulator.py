"""Every part-1 method against the emulator, for both providers."""

from __future__ import annotations

import asyncio
import re

import pytest

from esim_async import (
    AiraloClient,
    BusinessError,
    NotFoundError,
    PressOneClient,
    ValidationError,
)
from esim_async.testing import Emulator, Fleet, ServerLimits
from esim_async.testing.catalogue import CATALOGUE

from ..arrivals import ArrivalLog

HISTORY = re.compile(r"/sims/(?P<key>[^/]+)/packages$")


@pytest.fixture
def log() -> ArrivalLog:
    return ArrivalLog()


@pytest.fixture
async def emu(log: ArrivalLog) -> Emulator:
    async with Emulator(
        fleet=Fleet.generate(30, seed=12), middlewares=[log.middleware]
    ) as emulator:
        yield emulator  # type: ignore[misc]


async def test_airalo_catalogue(emu: Emulator) -> None:
    emu.packages_page_as_object = True
    async with AiraloClient("id", "secret", base_url=emu.url) as client:
        everything = [c async for c in client.packages.list(page_size=3)]
        assert len(everything) == 8  # three pages, the later ones keyed by index
        assert [c.slug for c in everything] == [e["slug"] for e in CATALOGUE]
        assert emu.stats.arrivals["packages"] == 3
        assert all(p.type == "sim" for c in everything for p in c.packages())
        with_topups = [c async for c in client.packages.list(include_topup=True)]
        assert any(p.type == "topup" for c in with_topups for p in c.packages())
        local_fr = [c async for c in client.packages.list(type="local", country="fr")]
        assert [c.slug for c in local_fr] == ["france"]
        regional = [c async for c in client.packages.list(type="global")]
        assert {c.slug for c in regional} == {"europe", "world"}
        assert all(c.country_code == "" for c in regional)
        capped = [c async for c in client.packages.list(max_items=2, page_size=1)]
        assert len(capped) == 2
        page = await client.packages.page(2, page_size=3)
        assert page.number == 2 and page.last_page == 3 and len(page.items) == 3
        pid = everything[0].packages()[0].id
        pib = await client.packages.product_information(pid)
        assert pib.package_id == pid
        with pytest.raises(NotFoundError):
            await client.packages.product_information("no-such-package")


async def test_airalo_orders_and_topups(emu: Emulator) -> None:
    async with AiraloClient("id", "secret", base_url=emu.url) as client:
        order = await client.orders.create("change-7days-1gb", 3, description="crm-1001")
        assert order.quantity == 3 and len(order.sims) == 3
        iccid = order.sims[0].iccid
        assert iccid is not None
        assert (await client.orders.get(order.id or 0)).code == order.code
        found = [o async for o in client.orders.list(description="crm-1001")]
        assert [o.id for o in found] == [order.id]
        # The new eSIMs exist and can be topped up from their own top-up list.
        sim = await client.sims.get(iccid)
        assert sim.iccid == iccid and not sim.recycled
        offered = await client.sims.topup_packages(iccid)
        assert offered and all(p.type == "topup" for p in offered)
        topup = await client.orders.topup(offered[0].id, iccid, description="crm-1001-t")
        assert topup.type == "topup"
        history = await client.sims.package_history(iccid)
        assert [h.package.id for h in history if h.package] == ["change-7days-1gb", offered[0].id]
        usage = await client.sims.usage(iccid)
        assert usage.raw_total == 1024 + (offered[0].amount or 0)
        accepted = await client.orders.create_async(
            "change-7days-1gb", 1, webhook_url="https://hooks.example/x"
        )
        assert len(accepted.request_id) == 25
        assert accepted.request_id in emu.async_requests


async def test_airalo_order_errors(emu: Emulator) -> None:
    async with AiraloClient("id", "secret", base_url=emu.url) as client:
        with pytest.raises(BusinessError) as info:
            await client.orders.create("test-insufficient-balance-7days-1gb", 1)
        assert info.value.needs_credit
        with pytest.raises(BusinessError) as stock:
            await client.orders.create("test-out-of-stock-7days-1gb", 1)
        assert stock.value.retryable
        with pytest.raises(ValidationError) as invalid:
            await client.orders.create("change-7days-1gb-topup", 1)  # a top-up, not a sim
        assert "package_id" in invalid.value.fields
        with pytest.raises(ValidationError, match="opted in"):
            await client.orders.create_async("change-7days-1gb", 1)
        recycled = emu.fleet.iccids()[0]
        emu.set_usage(recycled, status="RECYCLED")
        with pytest.raises(BusinessError) as r73:
            await client.sims.topup_packages(recycled)
        assert r73.value.recycled
        with pytest.raises(BusinessError):
            await client.orders.topup("change-7days-1gb-topup", recycled)


async def test_airalo_sims(emu: Emulator, log: ArrivalLog) -> None:
    async with AiraloClient("id", "secret", base_url=emu.url) as client:
        sims = [s async for s in client.sims.list(page_size=7)]
        assert len(sims) == len(emu.fleet)
        assert emu.stats.arrivals["sims"] == 5
        iccid = sims[0].iccid
        instructions = await client.sims.instructions(iccid, language="de")
        assert instructions.language == "DE"
        assert instructions.ios[0].installation_via_qr_code is not None
        assert await client.sims.update_brand(iccid, "my-brand") == "my-brand"
        assert (await client.sims.get(iccid)).brand_settings_name == "my-brand"
        assert await client.sims.update_brand(iccid, None) is None
        # Package history: cached for 15 minutes, one request for many reads.
        for _ in range(3):
            await client.sims.package_history(iccid)
        assert emu.stats.arrivals["package_history"] == 1
        many = await asyncio.gather(*(client.sims.package_history(s.iccid) for s in sims[:12]))
        assert len(many) == 12
        assert emu.stats.rate_limited == 0
    assert log.count(HISTORY) == 12
    assert log.violations(per_key=emu.limits.package_history, pattern=HISTORY) == []


async def test_pressone_has_its_data_api() -> None:
    fleet = Fleet.generate(10, seed=13)
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.pressone()) as emu,
        PressOneClient("id", "secret", base_url=emu.url) as client,
    ):
        countries = [c async for c in client.packages.list()]
        assert countries
        order = await client.orders.create("elan-7days-1gb", 2, description="p1-order")
        assert len(order.sims) == 2
        # PressOne bodies go as forms.
        assert emu.write_log[-1] == (
            "orders",
            {
                "package_id": "elan-7days-1gb",
                "quantity": "2",
                "type": "sim",
                "description": "p1-order",
            },
        )
        iccid = order.sims[0].iccid or ""
        assert (await client.sims.get(iccid)).iccid == iccid
        offered = await client.sims.topup_packages(iccid)
        await client.orders.topup(offered[0].id, iccid)
        assert len(await client.sims.package_history(iccid)) == 2
        assert [o.id async for o in client.orders.list(iccid=iccid[-6:])]
        assert (await client.sims.instructions(iccid)).language == "EN"
        assert emu.stats.rate_limited == 0

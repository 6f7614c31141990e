"""eSIMs: details and listing, top-up packages, package history (cached, limited per eSIM,
negative answers), instructions and branding."""

from __future__ import annotations

import json
import re

import pytest
from aioresponses import aioresponses

from esim_async import (
    AiraloClient,
    InvalidRequestError,
    ManualClock,
    NotFoundError,
    PressOneClient,
    Rate,
    RateLimitedError,
)

from ..landed import Landed, assert_held_back
from .helpers import BASE, ICCID, TOKEN, Payload, sent


async def test_get_and_list_sims(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
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


async def test_topup_packages_are_never_cached(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
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


async def test_package_history_errors(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
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


async def test_instructions_and_brand(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
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

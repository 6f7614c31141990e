"""The account: balances, exchange rates, compatible devices, and the sandbox's account-wide
limit, against aioresponses and through the emulator for both providers."""

from __future__ import annotations

import re

import pytest
from aioresponses import aioresponses
from yarl import URL

from esim_async import AiraloClient, InvalidRequestError, ManualClock, PressOneClient, Rate
from esim_async.testing import Fleet, ServerLimits

from ..landed import Landed, assert_held_back
from .helpers import BASE, ICCID, TOKEN, Payload, emulated


async def test_account_and_devices(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
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


async def test_account_and_devices_through_the_emulator() -> None:
    async with (
        emulated() as emu,
        AiraloClient("id", "secret", base_url=emu.url, max_retries=0) as client,
    ):
        balances = await client.account.balance()
        assert balances.all()[0].available_balance is not None
        rates = await client.account.exchange_rates(to="EUR")
        assert [r.to for r in rates.rates] == ["EUR"]
        assert await client.devices.compatible()


async def test_pressone_account_and_devices_through_the_emulator() -> None:
    async with (
        emulated(fleet=Fleet.generate(3), limits=ServerLimits.pressone()) as emu,
        PressOneClient("id", "secret", base_url=emu.url) as client,
    ):
        assert (await client.account.balance()).all()
        assert await client.devices.compatible()

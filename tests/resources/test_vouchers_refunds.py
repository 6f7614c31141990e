"""Vouchers (eSIM and Airmoney) and refunds, with the one-refund-per-5-minutes limit proved at
arrival, against aioresponses and through the emulator."""

from __future__ import annotations

import json
import re

import pytest
from aioresponses import aioresponses

from esim_async import (
    AiraloClient,
    InvalidRequestError,
    ManualClock,
    Rate,
    RateLimitedError,
    ValidationError,
)

from ..arrivals import ArrivalLog
from ..landed import Landed, assert_held_back
from .helpers import BASE, ICCID, Payload, emulated, sent


async def test_vouchers(mocked: aioresponses, client: AiraloClient, payload: Payload) -> None:
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
    mocked: aioresponses, client: AiraloClient, clock: ManualClock, payload: Payload
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
    (call,) = sent(mocked, "POST", f"{BASE}/v2/refund")
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


REFUND_PATH = re.compile(r"/v2/refund$")


async def test_vouchers_through_the_emulator() -> None:
    async with (
        emulated() as emu,
        AiraloClient("id", "secret", base_url=emu.url, max_retries=0) as client,
    ):
        codes = await client.vouchers.create_esim(
            [{"package_id": "change-7days-1gb", "quantity": 3}]
        )
        assert len(codes[0].codes) == 3
        air = await client.vouchers.create_airmoney(25, usage_limit=5)
        assert air.amount == 25


async def test_a_second_refund_reaches_the_emulator_only_after_five_minutes() -> None:
    """One refund request per 5 minutes: on a clock the emulator shares, the second request
    arrives once the first one's window has passed, and the emulator (which keeps the same
    limit and answers a 429 otherwise) refuses neither."""
    clock = ManualClock()
    log = ArrivalLog(clock.now)
    async with (
        emulated(clock, log=log) as emu,
        AiraloClient("id", "secret", base_url=emu.url, clock=clock, max_retries=0) as client,
    ):
        iccids = emu.fleet.iccids()
        refund = await client.refunds.create(iccids[:2], "NO_COVERAGE", email="ops@example.com")
        assert refund.refund_id
        assert emu.refunds[0]["iccids"] == iccids[:2]
        await client.refunds.create(iccids[2:3], "NO_COVERAGE")
        assert [r["iccids"] for r in emu.refunds] == [iccids[:2], iccids[2:3]]
    times = log.times(REFUND_PATH)
    assert len(times) == 2, times
    assert times[1] - times[0] >= 300.0
    assert emu.stats.arrivals["refund"] == 2
    assert emu.stats.rate_limited == 0


async def test_the_emulator_refuses_a_second_refund_inside_five_minutes() -> None:
    """The other side of the test above: a client allowed two refunds at once draws the
    emulator's 429 for the second, so the emulator does check what the client keeps."""
    clock = ManualClock()
    async with (
        emulated(clock) as emu,
        AiraloClient(
            "id",
            "secret",
            base_url=emu.url,
            clock=clock,
            max_retries=0,
            limits={"refund": Rate(2, 300.0)},
        ) as client,
    ):
        iccids = emu.fleet.iccids()
        await client.refunds.create(iccids[:1], "NO_COVERAGE")
        with pytest.raises(RateLimitedError):
            await client.refunds.create(iccids[1:2], "NO_COVERAGE")
    assert emu.stats.rate_limited_by["refund"] == 1

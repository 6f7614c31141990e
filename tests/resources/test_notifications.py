"""Notifications: opt-in and its validation, opt-out, the webhook simulator and its limit (one
per 15 minutes, proved at arrival), against aioresponses and through the emulator."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aioresponses import aioresponses

from esim_async import AiraloClient, InvalidRequestError, ManualClock, Rate, RateLimitedError

from ..arrivals import ArrivalLog
from .helpers import BASE, Payload, emulated, sent


async def test_notifications(mocked: aioresponses, client: AiraloClient, payload: Payload) -> None:
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
    await client.notifications.opt_out("webhook_low_data")
    (opt_out,) = sent(mocked, "POST", f"{BASE}/v2/notifications/opt-out")
    assert opt_out.kwargs["json"] == {"type": "webhook_low_data"}
    responses = json.loads(payload("airalo/webhook_simulator_responses.json"))
    mocked.post(f"{BASE}/v2/simulator/webhook", payload=responses["200"])
    answer = await client.notifications.simulate(
        "low_data_notification", type="data_90", iccid="87123123456889019"
    )
    assert answer == "Notification sent"
    refused: list[tuple[dict[str, Any], str]] = [
        ({"type": "webhook_low_data"}, "webhook_url"),
        ({"type": "email_low_data"}, "email"),
        ({"type": "sms"}, "type"),
        ({"type": "webhook_low_data", "webhook_url": "https://x.test", "levels": [50]}, "levels"),
        (
            {"type": "webhook_credit_limit", "webhook_url": "https://x.test", "levels": [60]},
            "levels",
        ),
    ]
    for bad, fragment in refused:
        kind = bad.pop("type")
        with pytest.raises(InvalidRequestError, match=fragment):
            await client.notifications.opt_in(kind, **bad)
    with pytest.raises(InvalidRequestError, match="type"):
        await client.notifications.simulate("low_data_notification")
    with pytest.raises(InvalidRequestError, match="level"):
        await client.notifications.simulate("credit_limit_notification", level=60)  # type: ignore[arg-type]


SIMULATOR_PATH = re.compile(r"/v2/simulator/webhook$")


async def test_notifications_round_trip_through_the_emulator(hook_url: str) -> None:
    async with (
        emulated() as emu,
        AiraloClient("id", "secret", base_url=emu.url, max_retries=0) as client,
    ):
        note = await client.notifications.opt_in("webhook_low_data", webhook_url=hook_url)
        assert note.contact_point == hook_url
        assert (await client.notifications.get()) == note
        assert (
            await client.notifications.simulate("low_data_notification", type="data_75")
            == "Notification sent"
        )
        assert emu.simulated[-1]["webhook_url"] == hook_url
        assert emu.deliveries[-1]["status"] == 200
        await client.notifications.opt_out("webhook_low_data")
        assert await client.notifications.get() is None


async def test_a_second_simulation_reaches_the_emulator_only_after_15_minutes(
    hook_url: str,
) -> None:
    """One simulator request per 15 minutes: on a clock the emulator shares, the second
    simulation arrives once the first one's window has passed, and the emulator (which keeps
    the same limit and answers a 429 otherwise) refuses neither."""
    clock = ManualClock()
    log = ArrivalLog(clock.now)
    async with (
        emulated(clock, log=log) as emu,
        AiraloClient("id", "secret", base_url=emu.url, clock=clock, max_retries=0) as client,
    ):
        await client.notifications.opt_in("async_orders", webhook_url=hook_url)
        for _ in range(2):
            assert (
                await client.notifications.simulate("async_order_notification")
                == "Notification sent"
            )
    times = log.times(SIMULATOR_PATH)
    assert len(times) == 2, times
    assert times[1] - times[0] >= 900.0
    assert emu.stats.arrivals["simulator"] == 2
    assert emu.stats.rate_limited == 0
    assert [d["status"] for d in emu.deliveries] == [200, 200]


async def test_the_emulator_refuses_a_second_simulation_inside_15_minutes(hook_url: str) -> None:
    """The other side of the test above: a client allowed two simulations at once draws the
    emulator's 429 for the second."""
    clock = ManualClock()
    async with (
        emulated(clock) as emu,
        AiraloClient(
            "id",
            "secret",
            base_url=emu.url,
            clock=clock,
            max_retries=0,
            limits={"simulator": Rate(2, 900.0)},
        ) as client,
    ):
        await client.notifications.opt_in("async_orders", webhook_url=hook_url)
        await client.notifications.simulate("async_order_notification")
        with pytest.raises(RateLimitedError):
            await client.notifications.simulate("async_order_notification")
    assert emu.stats.rate_limited_by["simulator"] == 1

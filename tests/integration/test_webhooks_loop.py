"""The full loop: the emulator signs and POSTs notifications, the receiver verifies them,
invalidates cached usage and resolves awaited async orders."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from esim_async import AiraloClient, WaitTimeoutError
from esim_async.testing import Emulator, Fleet, ServerLimits
from esim_async.webhooks import RECEIVER, AsyncOrderEvent, LowDataEvent, WebhookEvent, webhook_app


async def start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/"


@pytest.mark.parametrize("canonical", [False, True], ids=["raw-body", "canonical-form"])
async def test_low_data_notification_invalidates_cached_usage(canonical: bool) -> None:
    fleet = Fleet.generate(5, seed=15)
    events: list[WebhookEvent] = []
    async with Emulator(fleet=fleet, limits=ServerLimits.unlimited(), cache_ttl=0) as emu:
        emu.sign_canonical = canonical
        async with AiraloClient("id", "my-client-secret", base_url=emu.url) as client:

            async def on_event(event: WebhookEvent) -> None:
                events.append(event)

            app = webhook_app("my-client-secret", on_event=on_event, client=client)
            runner, url = await start(app)
            try:
                iccid = fleet.iccids()[0]
                before = await client.sims.usage(iccid)
                emu.set_usage(iccid, remaining=10)  # the eSIM used its data meanwhile
                assert await client.sims.usage(iccid) is before  # still cached
                await client.notifications.opt_in("webhook_low_data", webhook_url=url)
                sent = await client.notifications.simulate(
                    "low_data_notification", type="data_90", iccid=iccid
                )
                assert sent == "Notification sent"
                for _ in range(100):
                    if events:
                        break
                    await asyncio.sleep(0.01)
                assert isinstance(events[0], LowDataEvent)
                assert events[0].iccid == iccid and events[0].level == "90%"
                fresh = await client.sims.usage(iccid)  # the cache entry was marked stale
                assert fresh.raw_remaining == 10
                assert emu.stats.usage_by_iccid[iccid] == 2
                assert app[RECEIVER].stats["rejected"] == 0
            finally:
                await runner.cleanup()


async def test_async_order_awaited_end_to_end() -> None:
    async with (
        Emulator(fleet=Fleet.generate(3)) as emu,
        AiraloClient("id", "secret-for-orders", base_url=emu.url) as client,
    ):
        runner, url = await start(webhook_app("secret-for-orders", client=client))
        try:
            accepted = await client.orders.create_async(
                "change-7days-1gb", 2, webhook_url=url, description="crm-async-1"
            )
            event = await client.orders.wait_async(accepted.request_id, timeout=10)
            assert isinstance(event, AsyncOrderEvent) and event.ok
            assert event.order is not None and len(event.order.sims) == 2
            assert event.order.description == "crm-async-1"
            # An event that arrives before anyone waits is kept for the waiter.
            second = await client.orders.create_async("change-7days-1gb", 1, webhook_url=url)
            await asyncio.sleep(0.3)
            early = await client.orders.wait_async(second.request_id, timeout=1)
            assert early.request_id == second.request_id
            with pytest.raises(WaitTimeoutError):
                await client.orders.wait_async("NEVER00000000000000000000", timeout=0.05)
        finally:
            await runner.cleanup()


async def test_wrongly_signed_deliveries_are_rejected() -> None:
    received: list[WebhookEvent] = []

    async def on_event(event: WebhookEvent) -> None:
        received.append(event)

    async with (
        Emulator(fleet=Fleet.generate(2)) as emu,
        AiraloClient("id", "real-secret", base_url=emu.url) as client,
    ):
        emu.webhook_secret = "an-attacker-key"
        app = webhook_app("real-secret", on_event=on_event)
        runner, url = await start(app)
        try:
            await client.notifications.opt_in("webhook_credit_limit", webhook_url=url)
            with pytest.raises(Exception, match="Could not push"):
                await client.notifications.simulate("credit_limit_notification", level=80)
            assert app[RECEIVER].stats["rejected"] == 1
            assert received == []
        finally:
            await runner.cleanup()


async def test_simulator_refuses_non_loopback_urls() -> None:
    async with (
        Emulator(fleet=Fleet.generate(2), limits=ServerLimits.unlimited()) as emu,
        AiraloClient("id", "s3cret", base_url=emu.url) as client,
    ):
        with pytest.raises(Exception, match="Could not push"):
            await client.notifications.simulate(
                "low_data_notification", type="data_75", webhook_url="https://example.com/hook"
            )
        assert emu.deliveries == []

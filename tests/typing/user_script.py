"""A user script calling every public method: ``mypy --strict`` must accept it as written.

It is type-checked in CI, not run.
"""

from __future__ import annotations

from esim_async import (
    AiraloClient,
    Country,
    Esim,
    Instructions,
    Order,
    PackageHistoryEntry,
    PressOneClient,
    ProductInformation,
    Rate,
    TopupPackage,
    Usage,
    UsageResult,
)
from esim_async.models import AsyncOrder, Page


async def airalo(client_id: str, secret: str, iccid: str) -> None:
    async with AiraloClient(client_id, secret, company_rate=Rate(5, 1.0), sandbox=False) as c:
        usage: Usage = await c.sims.usage(iccid, refresh=True, max_age=60.0)
        left: int | None = usage.remaining
        async with c.sims.usage_many([iccid], concurrency=4, ordered=True) as results:
            async for result in results:
                r: UsageResult = result
                print(r.iccid, r.usage, r.error, r.from_cache, r.fetched_at)
        sim: Esim = await c.sims.get(iccid, include=["order", "share"])
        sims: list[Esim] = [s async for s in c.sims.list(page_size=50, max_items=100)]
        topups: list[TopupPackage] = await c.sims.topup_packages(iccid)
        history: list[PackageHistoryEntry] = await c.sims.package_history(iccid)
        how: Instructions = await c.sims.instructions(iccid, language="en")
        brand: str | None = await c.sims.update_brand(iccid, "brand")
        countries: list[Country] = [x async for x in c.packages.list(type="local", country="US")]
        page: Page[Country] = await c.packages.page(1, include_topup=True)
        pib: ProductInformation = await c.packages.product_information("change-7days-1gb")
        order: Order = await c.orders.create("change-7days-1gb", 1, description="crm-1")
        accepted: AsyncOrder = await c.orders.create_async(
            "change-7days-1gb", 1, webhook_url="https://x.test/h"
        )
        fetched: Order = await c.orders.get(order.id or 0, include=["sims", "status"])
        orders: list[Order] = [o async for o in c.orders.list(description="crm-1")]
        topup: Order = await c.orders.topup(topups[0].id, iccid, description="t-1")
        print(
            left,
            sim,
            sims,
            history,
            how,
            brand,
            countries,
            page,
            pib,
            accepted,
            fetched,
            orders,
            topup,
        )


async def pressone(client_id: str, secret: str, iccid: str) -> None:
    async with PressOneClient(client_id, secret, base_url="https://p1.example") as c:
        usage: Usage = await c.sims.usage(iccid)
        order: Order = await c.orders.create("elan-7days-1gb", 1)
        history: list[PackageHistoryEntry] = await c.sims.package_history(iccid)
        print(usage, order, history)


async def airalo_part_two(client_id: str, secret: str, iccid: str) -> None:
    from datetime import UTC, datetime, timedelta

    from esim_async.models.account import (
        AirmoneyVoucher,
        Balances,
        Device,
        EsimVoucher,
        ExchangeRates,
        FutureOrder,
        Notification,
        Refund,
    )

    async with AiraloClient(client_id, secret) as c:
        due = datetime.now(UTC) + timedelta(days=7)
        scheduled: FutureOrder = await c.future_orders.create("change-7days-1gb", 1, due)
        pending: list[FutureOrder] = [f async for f in c.future_orders.list("pending")]
        await c.future_orders.cancel([scheduled.request_id])
        codes: list[EsimVoucher] = await c.vouchers.create_esim(
            [{"package_id": "change-7days-1gb", "quantity": 2}]
        )
        air: AirmoneyVoucher = await c.vouchers.create_airmoney(10, 1)
        refund: Refund = await c.refunds.create([iccid], "NO_COVERAGE")
        note: Notification = await c.notifications.opt_in(
            "webhook_low_data", webhook_url="https://x.test/h"
        )
        current: Notification | None = await c.notifications.get()
        await c.notifications.opt_out("webhook_low_data")
        sent: str = await c.notifications.simulate("low_data_notification", type="data_90")
        balances: Balances = await c.account.balance()
        rates: ExchangeRates = await c.account.exchange_rates(to=["EUR"])
        devices: list[Device] = await c.devices.compatible()
        print(pending, codes, air, refund, note, current, sent, balances, rates, devices)


async def pressone_voice(client_id: str, secret: str) -> None:
    from esim_async.models.voice import VoiceList, VoiceNumber, VoiceResult, VoiceUser

    async with PressOneClient(
        client_id, secret, base_url="https://p1.example", voice_api_key="pk_live"
    ) as c:
        numbers: VoiceList[VoiceNumber] = await c.voice.available_numbers(page_size=5)
        claimed: VoiceResult = await c.voice.claim_number("a@b.co", phone_number="+234")
        renewed: VoiceResult = await c.voice.renew_number("a@b.co")
        users: VoiceList[VoiceUser] = await c.voice.users(email="a@b.co")
        print(numbers, claimed, renewed, users)

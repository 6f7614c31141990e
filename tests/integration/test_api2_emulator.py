"""Part-2 methods against the emulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from esim_async import AiraloClient, AuthenticationError, PressOneClient, ValidationError
from esim_async.testing import Emulator, Fleet, ServerLimits


async def test_airalo_part_two(hook_url: str) -> None:
    fleet = Fleet.generate(6, seed=14)
    async with (
        Emulator(fleet=fleet) as emu,
        AiraloClient("id", "secret", base_url=emu.url, max_retries=0) as client,
    ):
        due = datetime.now(UTC) + timedelta(days=5)
        scheduled = await client.future_orders.create(
            "change-7days-1gb", 1, due, webhook_url="https://hooks.test/x"
        )
        pending = [f async for f in client.future_orders.list()]
        assert [f.request_id for f in pending] == [scheduled.request_id]
        await client.future_orders.cancel([scheduled.request_id])
        assert [f async for f in client.future_orders.list()] == []
        with pytest.raises(ValidationError, match="already processed"):
            await client.future_orders.cancel([scheduled.request_id])

        codes = await client.vouchers.create_esim(
            [{"package_id": "change-7days-1gb", "quantity": 3}]
        )
        assert len(codes[0].codes) == 3
        air = await client.vouchers.create_airmoney(25, usage_limit=5)
        assert air.amount == 25

        refund = await client.refunds.create(
            fleet.iccids()[:2], "NO_COVERAGE", email="ops@example.com"
        )
        assert refund.refund_id
        assert emu.refunds[0]["iccids"] == fleet.iccids()[:2]
        # The refund endpoint allows one request per 5 minutes: the client keeps to it and a
        # second one within the window waits, so a short timeout surfaces it instead.
        state = client.rate_limit_state()["refund"]
        assert state.configured is not None and state.configured.count == 1

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

        balances = await client.account.balance()
        assert balances.all()[0].available_balance is not None
        rates = await client.account.exchange_rates(to="EUR")
        assert [r.to for r in rates.rates] == ["EUR"]
        assert await client.devices.compatible()


async def test_simulator_limit_is_kept(hook_url: str) -> None:
    async with (
        Emulator(fleet=Fleet.generate(2)) as emu,
        AiraloClient("id", "secret", base_url=emu.url, retry_after_cap=0.5) as client,
    ):
        await client.notifications.opt_in("async_orders", webhook_url=hook_url)
        await client.notifications.simulate("async_order_notification")
        # A second simulation inside 15 minutes would wait for the limiter: the client keeps
        # the budget (no request goes out), and the emulator saw exactly one.
        state = client.rate_limit_state()["simulator"]
        assert state.configured is not None and state.configured.count == 1
        assert emu.stats.arrivals["simulator"] == 1
        assert emu.stats.rate_limited == 0


async def test_pressone_part_two_and_voice() -> None:
    async with Emulator(fleet=Fleet.generate(3), limits=ServerLimits.pressone()) as emu:
        emu.voice_api_key = "pk_test"
        async with PressOneClient(
            "id", "secret", base_url=emu.url, voice_base_url=emu.url, voice_api_key="pk_test"
        ) as client:
            assert (await client.account.balance()).all()
            assert await client.devices.compatible()
            numbers = await client.voice.available_numbers(page_index=1, page_size=5)
            assert len(numbers.items) == 5 and numbers.total == 25
            claimed = await client.voice.claim_number(
                "ada@example.com",
                phone_number=numbers.items[0].phone_number,
                mobile="+2348012345678",
                first_name="Ada",
                referral="xyz",
            )
            assert claimed.message == "Number claimed"
            assert claimed.data["phone_number"] == numbers.items[0].phone_number
            renewed = await client.voice.renew_number("ada@example.com")
            assert renewed.data["subscription"]["renewed"] == 1
            users = await client.voice.users(email="ada@example.com")
            assert users.items[0].first_name == "Ada"
            assert users.items[0].subscription == {
                "status": "active",
                "plan": "basic",
                "renewed": 1,
            }
        async with PressOneClient(
            "id", "secret", base_url=emu.url, voice_base_url=emu.url, voice_api_key="pk_wrong"
        ) as wrong:
            with pytest.raises(AuthenticationError):
                await wrong.voice.users()

"""PressOne's voice API: its key (sent, never shown), raw JSON kept, configurable paths, and
numbers claimed, renewed and listed through the emulator."""

from __future__ import annotations

import re

import pytest
from aioresponses import aioresponses
from yarl import URL

from esim_async import (
    AiraloClient,
    AuthenticationError,
    InvalidRequestError,
    ManualClock,
    PressOneClient,
)
from esim_async.testing import Fleet, ServerLimits

from .helpers import emulated


async def test_pressone_voice_needs_a_key_and_keeps_raw_json() -> None:
    base = "https://voice.pressone.test"
    async with PressOneClient(
        "id",
        "secret",
        base_url="https://p1.test",
        voice_base_url=base,
        voice_api_key="pk_SENTINEL_KEY",
        clock=ManualClock(),
    ) as client:
        with aioresponses() as m:
            m.get(
                re.compile(rf"^{base}/api/third-party/partner/user/.*"),
                payload={
                    "results": [{"email": "a@b.co", "subscription": {"status": "x"}}],
                    "count": 1,
                },
            )
            users = await client.voice.users(email="a@b.co", page_size=10)
            assert users.items[0].email == "a@b.co" and users.total == 1
            assert users.raw["results"][0]["subscription"] == {"status": "x"}
            (((_, _url), (call,)),) = m.requests.items()
            assert call.kwargs["headers"]["Pressone-X-Api-Key"] == "pk_SENTINEL_KEY"
            assert call.kwargs["params"] == {"email": "a@b.co", "page_size": "10"}
        assert "pk_SENTINEL_KEY" not in repr(client) + repr(client.voice)
    async with PressOneClient("id", "secret", base_url="https://p1.test") as keyless:
        with pytest.raises(InvalidRequestError, match="voice_api_key"):
            await keyless.voice.renew_number("a@b.co")
    async with PressOneClient(
        "id",
        "secret",
        base_url="https://p1.test",
        voice_base_url=base,
        voice_api_key="pk_x",
        voice_paths={"claim_number": ("PUT", "/v9/claim")},
        clock=ManualClock(),
    ) as custom:
        with aioresponses() as m:  # anything but PUT /v9/claim fails the call
            m.put(f"{base}/v9/claim", payload={"success": True, "message": "claimed"})
            await custom.voice.claim_number("a@b.co")
            ((method, url),) = m.requests
            assert (method, url) == ("PUT", URL(f"{base}/v9/claim"))
            assert m.requests[(method, url)][0].kwargs["json"] == {"email": "a@b.co"}
        assert not hasattr(custom, "future_orders") and not hasattr(custom, "refunds")
    assert not hasattr(AiraloClient("id", "secret"), "voice")


async def test_pressone_voice_through_the_emulator() -> None:
    async with emulated(fleet=Fleet.generate(3), limits=ServerLimits.pressone()) as emu:
        emu.voice_api_key = "pk_test"
        async with PressOneClient(
            "id", "secret", base_url=emu.url, voice_base_url=emu.url, voice_api_key="pk_test"
        ) as client:
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

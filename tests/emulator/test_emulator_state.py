"""The emulator's one state: what is set on the ``Emulator`` reaches every route module, and what
the handlers record shows on the ``Emulator``, whichever domain module answered."""

from __future__ import annotations

from typing import Any

import aiohttp

from esim_async.testing import Emulator, Fleet, ServerLimits
from esim_async.testing.webhooks import sign


async def token(http: aiohttp.ClientSession, url: str) -> dict[str, str]:
    async with http.post(
        url + "/v2/token",
        data={"client_id": "id", "client_secret": "s", "grant_type": "client_credentials"},
    ) as resp:
        assert resp.status == 200
        return {"Authorization": "Bearer " + (await resp.json())["data"]["access_token"]}


async def get(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, Any]:
    async with http.get(url, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_settings_made_on_the_emulator_reach_the_handlers() -> None:
    first, second = Fleet.generate(2, seed=1), Fleet.generate(2, seed=2, prefix="894411")
    async with (
        Emulator(fleet=first, limits=ServerLimits.unlimited()) as emu,
        aiohttp.ClientSession() as http,
    ):
        auth = await token(http, emu.url)
        emu.balance = 12.5
        status, body = await get(http, emu.url + "/v2/balance", auth)
        assert body["data"]["balances"]["availableBalance"]["amount"] == 12.5

        emu.fleet = second
        status, _ = await get(http, emu.url + f"/v2/sims/{first.iccids()[0]}", auth)
        assert status == 404
        status, body = await get(http, emu.url + f"/v2/sims/{second.iccids()[0]}/usage", auth)
        assert status == 200 and body["data"]["status"] == second.sims[second.iccids()[0]].status

        emu.packages_page_as_object = True
        status, body = await get(http, emu.url + "/v2/packages?limit=2&page=2", auth)
        assert isinstance(body["data"], dict) and set(body["data"]) == {"2", "3"}

        emu.voice_api_key = "pk_right"
        voice = emu.url + "/api/third-party/partner/user/"
        status, _ = await get(
            http, voice, {"Pressone-X-Api-Key": "pk_wrong", "Authorization": "Bearer pk_wrong"}
        )
        assert status == 401
        status, _ = await get(
            http, voice, {"Pressone-X-Api-Key": "pk_right", "Authorization": "Bearer pk_right"}
        )
        assert status == 200

        emu.expire_tokens()
        status, _ = await get(http, emu.url + "/v2/balance", auth)
        assert status == 401
        assert emu.stats.unauthorized == 1


async def test_what_the_handlers_record_shows_on_the_emulator() -> None:
    seen: list[str] = []
    async with (
        Emulator(fleet=Fleet.generate(3, seed=4), limits=ServerLimits.unlimited()) as emu,
        aiohttp.ClientSession() as http,
    ):
        emu.on_request = lambda endpoint, request: seen.append(endpoint)
        auth = await token(http, emu.url)
        async with http.post(
            emu.url + "/v2/orders",
            json={"package_id": "change-7days-1gb", "quantity": 2},
            headers=auth,
        ) as resp:
            assert resp.status == 200
            order = (await resp.json())["data"]
        assert list(emu.orders) == [order["id"]]
        assert emu.write_log == [("orders", {"package_id": "change-7days-1gb", "quantity": 2})]
        # The ordered eSIMs joined the fleet the eSIM routes serve.
        new = [s["iccid"] for s in order["sims"]]
        assert all(i in emu.fleet for i in new)
        status, body = await get(http, emu.url + f"/v2/sims/{new[0]}/usage", auth)
        assert status == 200 and body["data"]["status"] == "NOT_ACTIVE"

        async with http.post(
            emu.url + "/v2/notifications/opt-in",
            json={"type": "email_low_data", "email": "ops@example.com"},
            headers=auth,
        ) as resp:
            assert resp.status == 200
        assert emu.notifications["email_low_data"]["contact_point"] == "ops@example.com"
        assert emu.async_webhook_url is None

        emu.inject("balance", "503")
        status, _ = await get(http, emu.url + "/v2/balance", auth)
        assert status == 503
        assert emu.stats.faults["503"] == 1
    assert seen == ["token", "orders", "usage", "notifications_opt_in", "balance"]
    assert emu.stats.arrivals == {
        "token": 1,
        "orders": 1,
        "usage": 1,
        "notifications_opt_in": 1,
        "balance": 1,
    }
    assert emu.stats.tokens_issued == 1


def test_webhooks_are_signed_as_the_reference_documents() -> None:
    # The reference's test vector: secret ``test_secret``, payload ``{"key":"value"}``.
    assert sign(b'{"key":"value"}', "test_secret") == (
        "dbcda7872bdfde3ec60c0fc59c4a448280cfa5f84f31e61728c9157a4b13651a"
        "e7b7d294e046095567c67bcdc9ff738110ff69b93402208d9ace15eb9bf137b9"
    )

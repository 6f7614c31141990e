"""The emulator attacked from outside, with plain aiohttp: what it counts (the voice API too),
how it paginates, what its 429s announce, how it starts and stops, where its webhooks go, how
fleet life detaches, and how it answers hostile order, voucher, refund and opt-in bodies."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from esim_async import Rate
from esim_async.testing import Emulator, Fleet, ServerLimits
from esim_async.testing.life import FleetLife

VOICE = "/api/third-party/partner"
VOICE_AUTH = {"Pressone-X-Api-Key": "pk_test", "Authorization": "Bearer pk_test"}


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


# ---------------------------------------------------------------------------- voice API


async def test_voice_requests_are_counted_and_seen_by_the_hook() -> None:
    seen: list[str] = []
    async with Emulator() as emu, aiohttp.ClientSession() as http:
        emu.on_request = lambda endpoint, request: seen.append(endpoint)
        async with http.post(
            emu.url + VOICE + "/claim-number/", json={"email": "a@b.c"}, headers=VOICE_AUTH
        ) as resp:
            assert resp.status == 201
        async with http.post(
            emu.url + VOICE + "/renew-number/", json={"email": "a@b.c"}, headers=VOICE_AUTH
        ) as resp:
            assert resp.status == 200
        await get(http, emu.url + VOICE + "/available-numbers/", VOICE_AUTH)
        await get(http, emu.url + VOICE + "/user/", {})  # refused, but it arrived
        assert emu.stats.arrivals["voice_claim"] == 1
        assert emu.stats.arrivals["voice_renew"] == 1
        assert emu.stats.arrivals["voice_numbers"] == 1
        assert emu.stats.arrivals["voice_users"] == 1
        assert sorted(seen) == ["voice_claim", "voice_numbers", "voice_renew", "voice_users"]


async def test_a_dropped_renewal_can_be_injected_and_a_retry_is_visible() -> None:
    async with Emulator() as emu, aiohttp.ClientSession() as http:
        emu.inject("voice_renew", "drop")
        async with http.post(
            emu.url + VOICE + "/claim-number/", json={"email": "a@b.c"}, headers=VOICE_AUTH
        ) as resp:
            assert resp.status == 201
        with pytest.raises(aiohttp.ClientError):
            async with http.post(
                emu.url + VOICE + "/renew-number/", json={"email": "a@b.c"}, headers=VOICE_AUTH
            ) as resp:
                await resp.read()
        assert emu.stats.faults["drop"] == 1
        assert emu.stats.arrivals["voice_renew"] == 1
        assert emu.voice_users["a@b.c"]["subscription"]["renewed"] == 0


async def test_a_non_integer_voice_page_size_is_a_client_error_not_a_crash() -> None:
    async with Emulator() as emu, aiohttp.ClientSession() as http:
        status, body = await get(
            http, emu.url + VOICE + "/available-numbers/?page_size=ten", VOICE_AUTH
        )
        assert status == 400
        assert "page_size" in body


# ---------------------------------------------------------------------------- pagination


@pytest.mark.parametrize("page", ["0", "-1"])
async def test_a_page_below_one_is_the_first_page(page: str) -> None:
    async with (
        Emulator(fleet=Fleet.generate(60), limits=ServerLimits.unlimited()) as emu,
        aiohttp.ClientSession() as http,
    ):
        auth = await token(http, emu.url)
        _, first = await get(http, emu.url + "/v2/sims?limit=25&page=1", auth)
        status, body = await get(http, emu.url + f"/v2/sims?limit=25&page={page}", auth)
        assert status == 200
        assert [s["iccid"] for s in body["data"]] == [s["iccid"] for s in first["data"]]
        assert body["meta"]["current_page"] == 1
        assert body["links"]["prev"] is None


async def test_a_non_integer_page_is_refused_naming_the_page() -> None:
    async with Emulator(limits=ServerLimits.unlimited()) as emu, aiohttp.ClientSession() as http:
        auth = await token(http, emu.url)
        status, body = await get(http, emu.url + "/v2/orders?page=two", auth)
        assert status == 422
        assert body["data"] == {"page": "The page must be an integer."}
        status, body = await get(http, emu.url + "/v2/orders?page=two&limit=x", auth)
        assert status == 422
        assert set(body["data"]) == {"limit", "page"}


# ---------------------------------------------------------------------------- 429 headers


async def test_the_429_reset_header_is_a_unix_time_as_laravel_sends() -> None:
    limits = ServerLimits.unlimited()
    limits.usage_iccid = Rate(1, 60.0)
    async with (
        Emulator(fleet=Fleet.generate(1), limits=limits) as emu,
        aiohttp.ClientSession() as http,
    ):
        auth = await token(http, emu.url)
        url = emu.url + f"/v2/sims/{emu.fleet.iccids()[0]}/usage"
        assert (await get(http, url, auth))[0] == 200
        before = time.time()
        async with http.get(url, headers=auth) as resp:
            assert resp.status == 429
            retry = int(resp.headers["Retry-After"])
            reset = int(resp.headers["X-RateLimit-Reset"])
        after = time.time()
        assert 1 <= retry <= 60
        assert int(before) + retry <= reset <= int(after) + retry + 1


# ---------------------------------------------------------------------------- life cycle


async def test_starting_twice_is_refused_and_stop_leaves_nothing_serving() -> None:
    emu = Emulator()
    url = await emu.start()
    try:
        with pytest.raises(RuntimeError):
            await emu.start()
        assert emu.url == url
    finally:
        await emu.stop()
        await emu.stop()  # a second stop is harmless
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await get(http, url + "/v2/balance", {})


async def test_an_emulator_can_be_started_again_after_it_stopped() -> None:
    emu = Emulator()
    async with emu:
        pass
    async with emu, aiohttp.ClientSession() as http:
        auth = await token(http, emu.url)
        status, _ = await get(http, emu.url + "/v2/balance", auth)
        assert status == 200


# ---------------------------------------------------------------------------- webhooks


async def test_a_webhook_receiver_cannot_redirect_the_emulator_off_loopback() -> None:
    """The emulator posts to loopback URLs only: it does not follow a receiver's redirect to
    a host it would not post to (``0x7f000001`` reaches this machine, but is no loopback URL)."""
    reached: list[str] = []

    async def target(request: web.Request) -> web.Response:
        reached.append(request.method)
        return web.Response(status=200)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"http://0x7f000001:{target_port}/hook")

    target_app = web.Application()
    target_app.router.add_route("*", "/hook", target)
    redirect_app = web.Application()
    redirect_app.router.add_post("/hook", redirect)
    target_runner = web.AppRunner(target_app, access_log=None)
    redirect_runner = web.AppRunner(redirect_app, access_log=None)
    await target_runner.setup()
    await redirect_runner.setup()
    try:
        target_site = web.TCPSite(target_runner, "127.0.0.1", 0)
        await target_site.start()
        target_port = target_runner.addresses[0][1]
        redirect_site = web.TCPSite(redirect_runner, "127.0.0.1", 0)
        await redirect_site.start()
        redirect_port = redirect_runner.addresses[0][1]
        async with Emulator() as emu:
            assert await emu.post_webhook(f"http://0x7f000001:{target_port}/hook", {}, "s") is None
            status = await emu.post_webhook(
                f"http://127.0.0.1:{redirect_port}/hook", {"level": "75%"}, "s"
            )
            assert status == 307, reached
            assert emu.deliveries[-1]["status"] == 307
        assert reached == []
    finally:
        await redirect_runner.cleanup()
        await target_runner.cleanup()


# ---------------------------------------------------------------------------- fleet life


class ManualClock:
    """A clock that moves only when the test sets ``t``."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


async def test_detach_stops_life_even_under_a_hook_chained_after_attach() -> None:
    clock = ManualClock()
    async with (
        Emulator(
            fleet=Fleet.generate(20, seed=1),
            clock=clock,
            limits=ServerLimits.unlimited(),
            cache_ttl=0,
            token_ttl=10**9,
        ) as emu,
        aiohttp.ClientSession() as http,
    ):
        life = FleetLife(emu, time_scale=10_000, seed=1)
        life.attach()
        seen: list[str] = []
        chained = emu.on_request

        def mine(endpoint: str, request: web.Request) -> None:
            seen.append(endpoint)
            if chained is not None:
                chained(endpoint, request)

        emu.on_request = mine
        life.detach()
        auth = await token(http, emu.url)
        bursty = [i for i in emu.fleet.iccids() if life.mode(i) == "bursty"]
        assert bursty
        before = {i: emu.fleet.sims[i].remaining for i in bursty}
        clock.t = 1e6
        for iccid in bursty:
            assert (await get(http, emu.url + f"/v2/sims/{iccid}/usage", auth))[0] == 200
        assert seen.count("usage") == len(bursty)
        assert life.crossings == [] and life.transitions == []
        assert {i: emu.fleet.sims[i].remaining for i in bursty} == before


async def test_two_concurrent_starts_serve_once() -> None:
    emu = Emulator()
    results = await asyncio.gather(emu.start(), emu.start(), return_exceptions=True)
    urls = [r for r in results if isinstance(r, str)]
    try:
        assert len(urls) == 1
        assert sum(isinstance(r, RuntimeError) for r in results) == 1
    finally:
        await emu.stop()
    async with aiohttp.ClientSession() as http:
        for url in urls:
            with pytest.raises(aiohttp.ClientConnectionError):
                await get(http, url + "/v2/balance", {})


# ---------------------------------------------------------------------------- orders


async def test_a_fractional_quantity_is_refused_and_orders_nothing() -> None:
    async with (
        Emulator(fleet=Fleet.generate(2), limits=ServerLimits.unlimited()) as emu,
        aiohttp.ClientSession() as http,
    ):
        auth = await token(http, emu.url)
        fleet_size = len(emu.fleet.sims)
        async with http.post(
            emu.url + "/v2/orders",
            json={"package_id": "change-7days-1gb", "quantity": 2.5},
            headers=auth,
        ) as resp:
            status, body = resp.status, await resp.json()
        assert status == 422
        assert body["data"] == {"quantity": "The quantity must be an integer."}
        assert emu.orders == {} and len(emu.fleet.sims) == fleet_size
        async with http.post(
            emu.url + "/v2/orders",
            json={"package_id": "change-7days-1gb", "quantity": 2.0},
            headers=auth,
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["data"]["quantity"] == 2


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ({"package_id": "change-7days-1gb", "quantity": 1_000_000_000}, "vouchers.0.quantity"),
        ({"package_id": "change-7days-1gb", "quantity": "many"}, "vouchers.0.quantity"),
        ({"package_id": "change-7days-1gb", "quantity": 0}, "vouchers.0.quantity"),
        ("change-7days-1gb", "vouchers.0"),
    ],
)
async def test_a_hostile_voucher_line_is_refused_without_hanging_the_emulator(
    line: Any, field: str
) -> None:
    async with Emulator(limits=ServerLimits.unlimited()) as emu, aiohttp.ClientSession() as http:
        auth = await token(http, emu.url)
        async with http.post(
            emu.url + "/v2/voucher/esim", json={"vouchers": [line]}, headers=auth
        ) as resp:
            status, body = resp.status, await resp.json(content_type=None)
        assert status == 422
        assert set(body["data"]) == {field}
        async with http.post(
            emu.url + "/v2/voucher/esim",
            json={"vouchers": [{"package_id": "change-7days-1gb", "quantity": 3}]},
            headers=auth,
        ) as resp:
            assert resp.status == 200
            assert len((await resp.json())["data"][0]["codes"]) == 3


# ---------------------------------------------------------------------------- refunds, opt-in


@pytest.mark.parametrize(
    ("iccids", "message"),
    [
        (6, "The iccids may not have more than 5 items."),
        ([[1]], "The iccids must be an array of ICCIDs."),
        ("8944", "The iccids must be an array of ICCIDs."),
    ],
)
async def test_a_refund_outside_the_documented_shape_is_refused_and_recorded_nowhere(
    iccids: Any, message: str
) -> None:
    async with (
        Emulator(fleet=Fleet.generate(8), limits=ServerLimits.unlimited()) as emu,
        aiohttp.ClientSession() as http,
    ):
        emu.set_limit("refund", None)
        auth = await token(http, emu.url)
        if iccids == 6:
            iccids = emu.fleet.iccids()[:6]
        async with http.post(
            emu.url + "/v2/refund", json={"iccids": iccids, "reason": "OTHERS"}, headers=auth
        ) as resp:
            status, body = resp.status, await resp.json(content_type=None)
        assert status == 422
        assert body["data"] == {"iccids": message}
        assert emu.refunds == []
        async with http.post(
            emu.url + "/v2/refund",
            json={"iccids": emu.fleet.iccids()[:5], "reason": "OTHERS"},
            headers=auth,
        ) as resp:
            assert resp.status == 202
        assert len(emu.refunds) == 1


@pytest.mark.parametrize("path", ["/v2/notifications/opt-in", "/v2/notifications/opt-out"])
async def test_a_notification_type_that_is_not_text_is_refused_not_a_crash(path: str) -> None:
    async with Emulator(limits=ServerLimits.unlimited()) as emu, aiohttp.ClientSession() as http:
        auth = await token(http, emu.url)
        async with http.post(emu.url + path, json={"type": ["async_orders"]}, headers=auth) as resp:
            status, body = resp.status, await resp.json(content_type=None)
        assert status == 422
        assert body["data"] == {"type": "The selected type is invalid."}

"""Every write the emulator accepts is recorded in ``write_log`` under its endpoint's name, with
the body as sent, and requests refused before their handler (no token) are not."""

from __future__ import annotations

from typing import Any

import aiohttp

from esim_async.testing import Emulator, Fleet, ServerLimits


async def test_each_write_is_logged_under_its_endpoint() -> None:
    fleet = Fleet.generate(2, seed=5)
    iccid = fleet.iccids()[0]
    writes: list[tuple[str, str, dict[str, Any]]] = [
        ("orders", "/v2/orders", {"package_id": "change-7days-1gb", "quantity": 1}),
        ("orders_async", "/v2/orders-async", {"package_id": "change-7days-1gb", "quantity": 1}),
        ("topup_order", "/v2/orders/topups", {"package_id": "nope", "iccid": iccid}),
        ("future_orders", "/v2/future-orders", {"package_id": "change-7days-1gb", "quantity": 1}),
        ("voucher_esim", "/v2/voucher/esim", {"vouchers": []}),
        ("voucher_airmoney", "/v2/voucher/airmoney", {"amount": 5, "quantity": 1}),
        ("refund", "/v2/refund", {"iccids": [iccid], "reason": "OTHERS"}),
    ]
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu,
        aiohttp.ClientSession() as http,
    ):
        for _, path, body in writes:  # refused before the handler: nothing logged
            async with http.post(emu.url + path, json=body) as resp:
                assert resp.status == 401
        assert emu.write_log == []

        async with http.post(
            emu.url + "/v2/token",
            data={"client_id": "id", "client_secret": "s", "grant_type": "client_credentials"},
        ) as resp:
            auth = {"Authorization": "Bearer " + (await resp.json())["data"]["access_token"]}
        for _, path, body in writes:
            async with http.post(emu.url + path, json=body, headers=auth) as resp:
                assert resp.status < 500
        assert emu.write_log == [(name, body) for name, _, body in writes]

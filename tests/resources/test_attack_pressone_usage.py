"""PressOne's data API read in both readings of its docs, on a loopback server on 127.0.0.1:
figures that are markers rather than amounts never read as amounts, and a partner without an
account has an empty list of balances."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from esim_async import ManualClock, PressOneClient, Usage
from tests.local_server import LocalServer

ICCID = "8944465400000267221"
TOKEN = {"data": {"access_token": "tok", "expires_in": 3600}, "meta": {"message": "success"}}


class PressOne(LocalServer):
    """A loopback PressOne data API: ``usage`` and ``balance`` are the bodies it answers (sent
    as ``content_type``); ``arrivals`` counts the requests per path."""

    def __init__(self) -> None:
        self.usage: Any = {}
        self.balance: Any = {}
        self.content_type = "application/json"
        self.arrivals: dict[str, int] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/customer/v2/token", self._token)
        app.router.add_get("/customer/v2/sims/{iccid}/usage", self._usage)
        app.router.add_get("/customer/v2/balance", self._balance)
        return app

    def _count(self, request: web.Request) -> None:
        self.arrivals[request.path] = self.arrivals.get(request.path, 0) + 1

    async def _token(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(TOKEN)

    async def _usage(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        return web.json_response({"data": self.usage, "meta": {"message": "api.succes"}})

    async def _balance(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        return web.json_response(self.balance, content_type=self.content_type)


@pytest.fixture
async def server() -> AsyncIterator[PressOne]:
    async with PressOne() as served:
        yield served


def client_of(server: PressOne) -> PressOneClient:
    return PressOneClient("id", "secret", base_url=server.url, clock=ManualClock())


def usage_of(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "remaining": 512,
        "total": 1024,
        "expired_at": "2026-12-01 00:00:00",
        "is_unlimited": False,
        "status": "ACTIVE",
        "remaining_voice": 0,
        "remaining_text": 0,
        "total_voice": 0,
        "total_text": 0,
    }
    return {**base, **fields}


async def read(server: PressOne, body: dict[str, Any]) -> Usage:
    server.usage = body
    async with client_of(server) as client:
        return await client.sims.usage(ICCID)


@pytest.mark.parametrize(
    "figures",
    [
        {"remaining": -1, "total": -1},  # the usual "unlimited" marker of telecom APIs
        {"remaining": -1, "total": 1024},
        {"remaining": 512, "total": -1},
    ],
)
async def test_a_negative_figure_is_no_amount_of_data(
    server: PressOne, figures: dict[str, int]
) -> None:
    usage = await read(server, usage_of(**figures))
    assert usage.raw_remaining == figures["remaining"] and usage.raw_total == figures["total"]
    if figures["remaining"] < 0:
        assert usage.remaining is None
    if figures["total"] < 0:
        assert usage.total is None
    assert usage.used is None and usage.fraction_left is None
    assert not usage.is_low(mb=100) and not usage.is_low(fraction=0.5)
    assert server.arrivals == {f"/customer/v2/sims/{ICCID}/usage": 1}


async def test_a_voice_and_text_package_without_data_is_never_low_on_data(
    server: PressOne,
) -> None:
    """PressOne's "Voice and Text" packages carry no data: ``total`` 0 is not 0 MB left of a
    data package (and an unlimited package read in sandbox is reported as 0 / 0 too)."""
    body = usage_of(
        remaining=0,
        total=0,
        remaining_voice=80,
        total_voice=100,
        remaining_text=40,
        total_text=50,
    )
    usage = await read(server, body)
    assert (usage.remaining_voice, usage.total_voice) == (80, 100)
    assert (usage.remaining_text, usage.total_text) == (40, 50)
    assert not usage.is_low(mb=100)
    assert not usage.is_low(fraction=0.5)
    assert usage.fraction_left is None


async def test_a_limited_package_still_reads_as_low(server: PressOne) -> None:
    usage = await read(server, usage_of(remaining=50, total=1024))
    assert usage.remaining == 50 and usage.used == 974
    assert usage.is_low(mb=100) and usage.is_low(fraction=0.1)
    empty = await read(server, usage_of(remaining=0, total=1024, status="FINISHED"))
    assert empty.is_low(mb=1) and empty.fraction_left == 0.0


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
async def test_a_pressone_partner_without_an_account_has_no_balances(
    server: PressOne, content_type: str
) -> None:
    server.balance = {"data": [], "meta": {"message": "success"}}
    server.content_type = content_type
    async with client_of(server) as client:
        balances = await client.account.balance()
    assert balances.all() == []
    assert server.arrivals == {"/customer/v2/balance": 1}

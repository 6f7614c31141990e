"""PressOne's voice API attacked from outside: a loopback server on 127.0.0.1 that echoes the
API key, answers in either reading of the unpublished shapes or with an empty body; and inputs
that must be refused, with a typed error, before anything is sent."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from esim_async import (
    InvalidRequestError,
    ManualClock,
    OutcomeUnknownError,
    PressOneClient,
    ValidationError,
)
from esim_async.testing import Emulator
from esim_async.testing.faults import FaultKind
from tests.local_server import LocalServer

KEY = "pk_live_VOICE_SENTINEL_7731"
PREFIX = "/api/third-party/partner"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class VoiceServer(LocalServer):
    """A loopback voice API: ``answers`` maps a path to its handler; ``arrivals`` holds
    ``(method, path, query)`` of every request that reached it."""

    def __init__(self) -> None:
        self.answers: dict[str, Handler] = {}
        self.arrivals: list[tuple[str, str, list[tuple[str, str]]]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append((request.method, request.path, list(request.query.items())))
        handler = self.answers.get(request.path)
        if handler is None:
            return web.json_response({"detail": "Not found."}, status=404)
        return await handler(request)

    def answer(self, operation: str, body: Any = None, *, status: int = 200) -> None:
        """Answer ``operation`` (the last part of its path) with ``body`` as JSON (``None``:
        an empty body)."""

        async def handler(request: web.Request) -> web.StreamResponse:
            if body is None:
                return web.Response(status=status)
            return web.json_response(body, status=status)

        self.answers[f"{PREFIX}/{operation}/"] = handler

    def drop(self, operation: str) -> None:
        """Drop the connection of every request to ``operation`` without an answer."""

        async def handler(request: web.Request) -> web.StreamResponse:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError

        self.answers[f"{PREFIX}/{operation}/"] = handler


@pytest.fixture
async def server() -> AsyncIterator[VoiceServer]:
    async with VoiceServer() as served:
        yield served


def voice_client(server: VoiceServer, **options: Any) -> PressOneClient:
    options.setdefault("voice_api_key", KEY)
    options.setdefault("max_retries", 0)
    return PressOneClient(
        "id",
        "secret",
        base_url=server.url,
        voice_base_url=server.url,
        clock=ManualClock(),
        **options,
    )


# ------------------------------------------------------------------ the key, echoed or odd


async def test_a_key_echoed_in_a_voice_answer_is_never_shown(server: VoiceServer) -> None:
    server.answer(
        "claim-number",
        {"message": f"Number claimed with key {KEY}", "data": {"email": "a@b.co", "key": KEY}},
        status=201,
    )
    server.answer("user", {"data": [{"email": "a@b.co", "api_key": KEY}], "total": 1})
    async with voice_client(server) as client:
        claimed = await client.voice.claim_number("a@b.co")
        users = await client.voice.users()
    assert claimed.message is not None and claimed.message.startswith("Number claimed")
    assert claimed.data["email"] == "a@b.co"
    assert users.items[0].email == "a@b.co" and users.total == 1
    shown = [repr(claimed), claimed.message, repr(claimed.data), repr(claimed.raw)]
    shown += [repr(users), repr(users.raw), repr(users.items)]
    assert not [text for text in shown if KEY in text]


@pytest.mark.parametrize("key", [KEY + "\n", "   ", f"{KEY}\r\nX-Injected: 1"])
async def test_an_unusable_voice_key_is_refused_before_anything_is_sent(
    server: VoiceServer, key: str
) -> None:
    server.answer("user", {"data": [], "total": 0})
    async with voice_client(server, voice_api_key=key) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.voice.users()
    assert info.value.field == "voice_api_key"
    assert KEY not in str(info.value)
    assert server.arrivals == []


# ------------------------------------------------------------------ inputs, before any request


@pytest.mark.parametrize("mobile", ["", "   "])
async def test_a_blank_mobile_filter_is_refused_not_dropped(
    server: VoiceServer, mobile: str
) -> None:
    """A blank filter would reach the server as no filter at all: every user of the platform."""
    server.answer("user", {"data": [{"email": "a@b.co"}, {"email": "c@d.co"}], "total": 2})
    server.answer("claim-number", {"message": "Number claimed"}, status=201)
    async with voice_client(server) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.voice.users(mobile=mobile)
        with pytest.raises(InvalidRequestError) as claimed:
            await client.voice.claim_number("a@b.co", mobile=mobile)
        with pytest.raises(InvalidRequestError) as number:
            await client.voice.claim_number("a@b.co", phone_number=mobile)
    assert info.value.field == claimed.value.field == "mobile"
    assert number.value.field == "phone_number"
    assert server.arrivals == []


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ({"page_size": 0}, "page_size"),
        ({"page_size": -5}, "page_size"),
        ({"page_size": True}, "page_size"),
        ({"page_size": "10"}, "page_size"),
        ({"page_size": 2.5}, "page_size"),
        ({"page_index": -1}, "page_index"),
        ({"page_index": False}, "page_index"),
    ],
)
async def test_voice_page_arguments_are_checked_before_sending(
    server: VoiceServer, call: dict[str, Any], field: str
) -> None:
    server.answer("user", {"data": [], "total": 0})
    server.answer("available-numbers", {"data": [], "total": 0})
    async with voice_client(server) as client:
        with pytest.raises(InvalidRequestError) as users:
            await client.voice.users(**call)
        with pytest.raises(InvalidRequestError) as numbers:
            await client.voice.available_numbers(**call)
    assert users.value.field == numbers.value.field == field
    assert server.arrivals == []


@pytest.mark.parametrize("value", [math.nan, math.inf, [1, math.nan]])
async def test_a_body_value_json_cannot_carry_is_refused(server: VoiceServer, value: Any) -> None:
    server.answer("claim-number", {"message": "ok"}, status=201)
    async with voice_client(server) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.voice.claim_number("a@b.co", score=value)
    assert info.value.field == "score"
    assert server.arrivals == []


async def test_extra_query_values_pass_through_as_values_not_python_reprs(
    server: VoiceServer,
) -> None:
    server.answer("available-numbers", {"data": [], "total": 0})
    async with voice_client(server) as client:
        await client.voice.available_numbers(country_code=["NG", "GH"], page_size=5)
        with pytest.raises(InvalidRequestError) as info:
            await client.voice.available_numbers(filters={"a": 1})
        with pytest.raises(InvalidRequestError):
            await client.voice.available_numbers(ratio=math.nan)
    assert info.value.field == "filters"
    ((_, _, query),) = server.arrivals
    assert sorted(query) == [("country_code", "GH"), ("country_code", "NG"), ("page_size", "5")]


@pytest.mark.parametrize(
    "paths",
    [
        {"users": "/api/v2/users/"},
        {"users": ("GET",)},
        {"users": ("GET", 5)},
        {"users": ("FETCH", "/api/v2/users/")},
        {"claim": ("POST", "/api/v2/claim/")},
    ],
)
async def test_a_malformed_voice_path_override_is_a_typed_error(
    server: VoiceServer, paths: dict[str, Any]
) -> None:
    """Refused when the client is built, before anything is sent (and before
    ``set_instrumentation`` reads the paths)."""
    with pytest.raises(InvalidRequestError) as info:
        voice_client(server, voice_paths=paths)
    assert info.value.field == "voice_paths"
    assert server.arrivals == []


# ------------------------------------------------------------------ both readings of the answers


@pytest.mark.parametrize(
    ("body", "emails", "total"),
    [
        # PressOne's SDK reading: the list in ``data``, ``total`` beside it.
        ({"data": [{"email": "a@b.co"}], "total": 7}, ["a@b.co"], 7),
        # Django REST framework's: ``results`` and ``count``, wrapped in ``data`` with a message.
        (
            {"message": "ok", "data": {"results": [{"email": "a@b.co"}], "count": 7}},
            ["a@b.co"],
            7,
        ),
        ({"data": {"users": [{"email": "a@b.co"}], "total": "7"}}, ["a@b.co"], 7),
        ({"data": [{"email": "a@b.co"}], "total": "7"}, ["a@b.co"], 7),
        # One user, filtered by e-mail, sent as the object itself rather than a list of one.
        (
            {"message": "ok", "data": {"email": "a@b.co", "subscription": {"status": "trial"}}},
            ["a@b.co"],
            None,
        ),
        ({"email": "a@b.co", "mobile": "+2348012345678"}, ["a@b.co"], None),
        ({"message": "No user found.", "data": {}}, [], None),
        ({"data": {"results": [], "count": 0}}, [], 0),
        # Not a count: never read as one.
        ({"data": [{"email": "a@b.co"}], "total": True}, ["a@b.co"], None),
        ({"data": [{"email": "a@b.co"}], "total": -3}, ["a@b.co"], None),
        ({"data": [{"email": "a@b.co"}], "total": "seven"}, ["a@b.co"], None),
    ],
)
async def test_voice_lists_read_their_total_in_either_reading(
    server: VoiceServer, body: Any, emails: list[str], total: int | None
) -> None:
    server.answer("user", body)
    async with voice_client(server) as client:
        users = await client.voice.users()
    assert [u.email for u in users.items] == emails
    assert users.total == total


async def test_available_numbers_sent_as_bare_strings_are_all_kept(server: VoiceServer) -> None:
    server.answer(
        "available-numbers",
        {"data": ["+2348000000001", 2348000000002, {"phone_number": "+2348000000003"}, None]},
    )
    async with voice_client(server) as client:
        numbers = await client.voice.available_numbers()
    assert [n.phone_number for n in numbers.items] == [
        "+2348000000001",
        "2348000000002",
        "+2348000000003",
    ]


@pytest.mark.parametrize("status", [400, 422])
async def test_a_voice_field_error_names_its_fields(server: VoiceServer, status: int) -> None:
    """The voice API answers field errors as a bare field map (no ``data`` envelope)."""
    server.answer(
        "claim-number",
        {"phone_number": ["This number has already been claimed."], "mobile": "Too short."},
        status=status,
    )
    async with voice_client(server) as client:
        with pytest.raises(ValidationError) as info:
            await client.voice.claim_number("a@b.co", phone_number="+2348000000001", mobile="1")
    assert info.value.status == status
    assert info.value.fields == {
        "phone_number": ["This number has already been claimed."],
        "mobile": ["Too short."],
    }
    assert "phone_number: This number has already been claimed." in str(info.value)
    assert "mobile: Too short." in str(info.value)


# ------------------------------------------------------------------ money: a renewal that worked


@pytest.mark.parametrize("status", [200, 201, 204])
async def test_a_voice_write_answered_2xx_without_a_body_succeeded(
    server: VoiceServer, status: int
) -> None:
    server.answer("renew-number", None, status=status)
    server.answer("claim-number", None, status=status)
    async with voice_client(server) as client:
        renewed = await client.voice.renew_number("a@b.co")
        claimed = await client.voice.claim_number("a@b.co")
    assert renewed.raw is None and renewed.message is None
    assert claimed.raw is None
    assert [path for _, path, _ in server.arrivals] == [
        f"{PREFIX}/renew-number/",
        f"{PREFIX}/claim-number/",
    ]


@pytest.mark.parametrize("fault", ["drop", "500", "502", "html"])
async def test_a_voice_write_whose_outcome_is_unknown_is_sent_once(fault: FaultKind) -> None:
    async with (
        Emulator() as emu,
        PressOneClient(
            "id",
            "secret",
            base_url=emu.url,
            voice_base_url=emu.url,
            voice_api_key="pk_test",
            max_retries=3,
        ) as client,
    ):
        await client.voice.claim_number("ada@example.com")
        emu.inject("voice_renew", fault)
        emu.inject("voice_claim", fault)
        with pytest.raises(OutcomeUnknownError):
            await client.voice.renew_number("ada@example.com")
        with pytest.raises(OutcomeUnknownError):
            await client.voice.claim_number("bob@example.com")
        assert emu.stats.arrivals["voice_renew"] == 1
        assert emu.stats.arrivals["voice_claim"] == 2
        assert emu.voice_users["ada@example.com"]["subscription"]["renewed"] == 0


async def test_a_refused_voice_write_is_sent_again_and_takes_effect_once() -> None:
    """A 429 did nothing: the renewal is sent again after it, and renews once."""
    async with (
        Emulator() as emu,
        PressOneClient(
            "id", "secret", base_url=emu.url, voice_base_url=emu.url, voice_api_key="pk_test"
        ) as client,
    ):
        await client.voice.claim_number("ada@example.com")
        emu.inject("voice_renew", "429")
        renewed = await client.voice.renew_number("ada@example.com")
        assert renewed.data["subscription"]["renewed"] == 1
        assert emu.stats.arrivals["voice_renew"] == 2


@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_a_renewal_mapped_to_another_method_is_still_never_retried(
    server: VoiceServer, method: str
) -> None:
    server.drop("renew-number")
    paths = {"renew_number": (method, f"{PREFIX}/renew-number/")}
    async with voice_client(server, voice_paths=paths, max_retries=3) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.voice.renew_number("a@b.co")
    assert [m for m, _, _ in server.arrivals] == [method]


# ------------------------------------------------------------------ the emulator's pages


async def test_the_emulator_pages_through_available_numbers_and_users() -> None:
    async with (
        Emulator() as emu,
        PressOneClient(
            "id", "secret", base_url=emu.url, voice_base_url=emu.url, voice_api_key="pk_test"
        ) as client,
    ):
        seen: list[str | None] = []
        for page in (1, 2, 3):
            numbers = await client.voice.available_numbers(page_index=page, page_size=10)
            assert numbers.total == 25
            seen += [n.phone_number for n in numbers.items]
        for n in range(3):
            await client.voice.claim_number(f"user{n}@example.com", phone_number=seen[n])
        users = [
            u.email
            for page in (1, 2)
            for u in (await client.voice.users(page_index=page, page_size=2)).items
        ]
    assert len(seen) == 25 and len(set(seen)) == 25
    assert users == ["user0@example.com", "user1@example.com", "user2@example.com"]


async def test_the_emulator_refuses_a_number_or_an_email_claimed_twice() -> None:
    async with (
        Emulator() as emu,
        PressOneClient(
            "id", "secret", base_url=emu.url, voice_base_url=emu.url, voice_api_key="pk_test"
        ) as client,
    ):
        first, second = (await client.voice.available_numbers(page_size=2)).items
        await client.voice.claim_number("ada@example.com", phone_number=first.phone_number)
        with pytest.raises(ValidationError) as taken:
            await client.voice.claim_number("bob@example.com", phone_number=first.phone_number)
        with pytest.raises(ValidationError) as again:
            await client.voice.claim_number("ada@example.com", phone_number=second.phone_number)
        users = await client.voice.users()
        left = await client.voice.available_numbers(page_size=30)
    assert "phone_number" in taken.value.fields and "email" in again.value.fields
    assert [(u.email, u.phone_number) for u in users.items] == [
        ("ada@example.com", first.phone_number)
    ]
    assert left.total == 24 and first.phone_number not in {n.phone_number for n in left.items}

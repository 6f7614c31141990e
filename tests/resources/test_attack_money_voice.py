"""PressOne's voice API publishes no shapes: an answer with a number where the typed view has
text (a phone number sent as a JSON number) or a field of another type still gives a typed
view over the raw JSON, never msgspec's own error."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aioresponses import aioresponses

from esim_async import ManualClock, PressOneClient

VOICE = "https://voice.pressone.test"
NUMBERS = re.compile(rf"^{VOICE}/api/third-party/partner/available-numbers/.*")
USERS = re.compile(rf"^{VOICE}/api/third-party/partner/user/.*")


@pytest.fixture
async def client() -> AsyncIterator[PressOneClient]:
    async with PressOneClient(
        "id",
        "secret",
        base_url="https://p1.test",
        voice_base_url=VOICE,
        voice_api_key="pk_attack_money",
        clock=ManualClock(),
        max_retries=0,
    ) as c:
        yield c


async def test_numbers_sent_as_json_numbers_read_as_text(client: PressOneClient) -> None:
    with aioresponses() as m:
        m.get(
            NUMBERS,
            payload={
                "data": [
                    {"phone_number": 2348012345678, "country_code": 234},
                    {"phone_number": "+2348000000001", "country_code": "NG"},
                ],
                "total": 2,
            },
        )
        numbers = await client.voice.available_numbers(page_size=2)
    assert [(n.phone_number, n.country_code) for n in numbers.items] == [
        ("2348012345678", "234"),
        ("+2348000000001", "NG"),
    ]
    assert numbers.total == 2 and numbers.raw["data"][0]["phone_number"] == 2348012345678


async def test_a_field_of_another_type_is_left_out_of_the_typed_view(
    client: PressOneClient,
) -> None:
    user = {
        "id": 7,
        "email": ["a@b.co", "c@d.co"],
        "mobile": 2348012345678,
        "first_name": "Ada",
        "subscription": "trial",
    }
    with aioresponses() as m:
        m.get(USERS, payload={"results": [user], "count": 1})
        users = await client.voice.users(page_size=1)
    (item,) = users.items
    assert (item.id, item.email, item.mobile, item.first_name) == (7, None, "2348012345678", "Ada")
    assert item.subscription is None and users.raw["results"][0] == user

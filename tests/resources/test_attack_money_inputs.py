"""Bad input is a typed error naming its field before anything is sent, and an error body the
provider answers with a 2xx status (its docs list 422 bodies under 200 examples) is never read
as a success."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aioresponses import aioresponses

from esim_async import (
    AiraloClient,
    InvalidRequestError,
    ManualClock,
    PressOneClient,
    ValidationError,
)

from .helpers import BASE, Payload, sent

CANCEL_URL = f"{BASE}/v2/cancel-future-orders"
REQUEST_ID = "hjxVV6glJ9oTwieF4xeTgRuU6"


@pytest.mark.parametrize("example", ["already_processed", "does_not_exist", "validation_error"])
async def test_a_cancellation_answered_200_with_a_field_error_is_not_a_success(
    mocked: aioresponses, client: AiraloClient, payload: Payload, example: str
) -> None:
    # "Docs sometimes list 422-style bodies under the 200/202 examples (cancel-future-orders,
    # future-orders, refund). Decide by body shape as well as status." A cancellation taken
    # for done while the order stays pending is an order paid for by mistake.
    body = json.loads(payload("airalo/cancel_future_orders_422_examples.json"))[example]
    mocked.post(CANCEL_URL, status=200, payload=body)
    with pytest.raises(ValidationError) as info:
        await client.future_orders.cancel([REQUEST_ID])
    assert info.value.fields == {k: [v] for k, v in body["data"].items()}
    assert len(sent(mocked, "POST", CANCEL_URL)) == 1


async def test_a_cancellation_answered_200_with_the_documented_success_is_one(
    mocked: aioresponses, client: AiraloClient, payload: Payload
) -> None:
    mocked.post(CANCEL_URL, status=200, body=payload("airalo/cancel_future_orders_200.json"))
    assert await client.future_orders.cancel([REQUEST_ID]) is None


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.future_orders.create("change-7days-1gb", 1, "2027-13-01 10:00"), "due_date"),
        (lambda c: c.future_orders.create("change-7days-1gb", 1, "2027-02-30 10:00"), "due_date"),
        (lambda c: c.future_orders.create("change-7days-1gb", 1, "2027-01-01 25:00"), "due_date"),
        (
            lambda c: anext(c.future_orders.list(from_due_date="2027-02-30 10:00")),
            "from_due_date",
        ),
        (lambda c: anext(c.orders.list(created_at=("2026-02-30", "2026-03-01"))), "created_at"),
        (lambda c: c.account.exchange_rates(date="2026-13-01"), "date"),
    ],
    ids=["month-13", "feb-30", "hour-25", "list-feb-30", "orders-created-feb-30", "rates"],
)
async def test_an_impossible_date_is_a_typed_error_naming_its_field(
    mocked: aioresponses, client: AiraloClient, call: Any, field: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await call(client)
    assert info.value.field == field
    assert not [k for k in mocked.requests if not str(k[1]).endswith("/v2/token")]


@pytest.mark.parametrize(
    "url",
    ["http://", "https://", "http:///path", "https://hooks example.com/x", "https://a.b/\r\nX: y"],
)
async def test_a_webhook_url_without_a_host_or_with_spaces_is_refused_before_sending(
    mocked: aioresponses, client: AiraloClient, url: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await client.orders.create_async("change-7days-1gb", 1, webhook_url=url)
    assert info.value.field == "webhook_url"
    with pytest.raises(InvalidRequestError):
        await client.notifications.opt_in("async_orders", webhook_url=url)
    assert not [k for k in mocked.requests if not str(k[1]).endswith("/v2/token")]


async def test_a_voice_field_that_cannot_be_sent_is_a_typed_error_naming_it() -> None:
    voice = "https://voice.pressone.test"
    async with PressOneClient(
        "id",
        "secret",
        base_url="https://p1.test",
        voice_base_url=voice,
        voice_api_key="pk_attack_inputs",
        clock=ManualClock(),
    ) as client:
        with aioresponses() as m:
            with pytest.raises(InvalidRequestError) as info:
                await client.voice.claim_number("a@b.co", plan=object())
            assert info.value.field == "plan"
            with pytest.raises(InvalidRequestError) as info:
                await client.voice.renew_number("a@b.co", when={1, 2})
            assert info.value.field == "when"
            assert not m.requests


@pytest.mark.parametrize("language", ["en\r\nX-Injected: 1", "de\n", "d e", "é", 5])
async def test_a_language_that_cannot_be_a_header_is_refused_before_sending(
    mocked: aioresponses, client: AiraloClient, language: Any
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await client.packages.page(1, language=language)
    assert info.value.field == "language"
    with pytest.raises(InvalidRequestError):
        await anext(client.packages.list(language=language))
    assert not [k for k in mocked.requests if not str(k[1]).endswith("/v2/token")]


async def test_instructions_refuse_a_language_with_a_line_break(
    mocked: aioresponses, client: AiraloClient
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await client.sims.instructions("8944465400000267221", language="en\r\nX: 1")
    assert info.value.field == "language"

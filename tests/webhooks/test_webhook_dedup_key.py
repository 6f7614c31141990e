"""Redeliveries are recognised by what they report, as the provider's docs advise
(``request_id``; ICCID and level), not by their bytes: a redelivery encoded differently (key
order, spacing, escaping) is still a duplicate, while a new low-data event for a new package
is not."""

from __future__ import annotations

import json
from typing import Any

from esim_async.webhooks import (
    SIGNATURE_HEADER,
    AsyncOrderEvent,
    LowDataEvent,
    WebhookReceiver,
    sign,
)

SECRET = "dedup-secret"
LOW = {"level": "90%", "package_name": "bonbon-7gb", "remaining_percentage": 10, "iccid": "8944001"}
ORDER = {"data": {"request_id": "r" * 25, "reason": "out of stock"}}


def signed(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, {SIGNATURE_HEADER: sign(body, SECRET)}


def encodings(payload: dict[str, Any]) -> list[bytes]:
    """The same notification, encoded three ways."""
    return [
        json.dumps(payload).encode(),
        json.dumps(payload, separators=(",", ":")).encode(),
        json.dumps(dict(reversed(list(payload.items()))), indent=1).encode(),
    ]


async def test_a_low_data_redelivery_encoded_differently_is_a_duplicate() -> None:
    receiver = WebhookReceiver(SECRET)
    events = [await receiver.receive(*signed(body)) for body in encodings(LOW)]
    assert isinstance(events[0], LowDataEvent)
    assert events[1:] == [None, None]
    assert receiver.stats["duplicates"] == 2


async def test_an_async_order_redelivery_encoded_differently_is_a_duplicate() -> None:
    receiver = WebhookReceiver(SECRET)
    events = [await receiver.receive(*signed(body)) for body in encodings(ORDER)]
    assert isinstance(events[0], AsyncOrderEvent)
    assert events[1:] == [None, None]


async def test_the_same_level_of_a_new_package_is_a_new_event() -> None:
    receiver = WebhookReceiver(SECRET)
    first = await receiver.receive(*signed(json.dumps(LOW).encode()))
    again = await receiver.receive(
        *signed(json.dumps({**LOW, "package_name": "topup-3gb"}).encode())
    )
    assert isinstance(first, LowDataEvent) and isinstance(again, LowDataEvent)


async def test_forget_lets_a_differently_encoded_redelivery_through() -> None:
    receiver = WebhookReceiver(SECRET)
    first, second = encodings(LOW)[:2]
    assert await receiver.receive(*signed(first)) is not None
    receiver.forget(first)
    assert isinstance(await receiver.receive(*signed(second)), LowDataEvent)

"""Money is never spent twice: a top-up the provider confirmed is reported as bought even when a
top-up listener raises, and the async-order waits and unknown outcomes of writes hold under
hostile answers and concurrent waiters."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

import pytest
from aioresponses import aioresponses

from esim_async import AiraloClient, ManualClock, OutcomeUnknownError, TransportError
from esim_async.webhooks import AsyncOrderEvent

from .helpers import BASE, ICCID, NOW, Payload, sent

TOPUP_URL = f"{BASE}/v2/orders/topups"


async def test_a_raising_topup_listener_does_not_turn_a_bought_topup_into_an_error(
    mocked: aioresponses,
    client: AiraloClient,
    payload: Payload,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mocked.post(TOPUP_URL, body=payload("airalo/topup_order_200.json"))
    heard: list[str] = []

    def broken(iccid: str) -> None:
        raise RuntimeError("listener failed")

    client.orders.add_topup_listener(broken)
    client.orders.add_topup_listener(heard.append)
    with caplog.at_level(logging.ERROR, logger="esim_async"):
        order = await client.orders.topup("change-7days-1gb-topup", ICCID, description="t-1")
    # The provider confirmed the purchase: the caller gets the order, not the listener's error
    # (an error would invite a second purchase), and every other listener still hears of it.
    assert order.id == 111 and order.type == "topup"
    assert heard == [ICCID]
    assert len(sent(mocked, "POST", TOPUP_URL)) == 1
    assert any("listener" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


async def test_an_oversized_answer_to_a_write_is_an_unknown_outcome() -> None:
    # README, failure semantics: "response body over max_body_size | TransportError |
    # OutcomeUnknownError". The 2xx may well confirm an order that was placed.
    async with AiraloClient(
        "id", "secret", clock=ManualClock(), max_body_size=1000, max_retries=3
    ) as client:
        with aioresponses() as mocked:
            mocked.post(
                f"{BASE}/v2/token",
                payload={"data": {"access_token": "tok", "expires_in": 3600}},
                repeat=True,
            )
            big = json.dumps({"data": {"id": 1, "description": "x" * 5000}}).encode()
            mocked.post(f"{BASE}/v2/orders", body=big, repeat=True)
            with pytest.raises(TransportError) as info:
                await client.orders.create("uki-mobile-15days-2gb", 1, description="crm-9")
            assert len(sent(mocked, "POST", f"{BASE}/v2/orders")) == 1
    assert isinstance(info.value, OutcomeUnknownError), repr(info.value)


@pytest.mark.parametrize(("status", "unknown"), [(201, True), (502, True), (422, False)])
async def test_an_oversized_answer_to_a_write_is_unknown_unless_it_refused(
    status: int, unknown: bool
) -> None:
    # A 2xx or 5xx may have placed the order: unknown, never retried. A 4xx refused it: the
    # cap's own error, still never retried.
    async with AiraloClient(
        "id", "secret", clock=ManualClock(), max_body_size=1000, max_retries=3
    ) as client:
        with aioresponses() as mocked:
            mocked.post(
                f"{BASE}/v2/token",
                payload={"data": {"access_token": "tok", "expires_in": 3600}},
                repeat=True,
            )
            big = json.dumps({"data": {"id": 1, "description": "x" * 5000}}).encode()
            mocked.post(f"{BASE}/v2/orders", status=status, body=big, repeat=True)
            with pytest.raises(TransportError) as info:
                await client.orders.create("uki-mobile-15days-2gb", 1, description="crm-9")
            assert len(sent(mocked, "POST", f"{BASE}/v2/orders")) == 1
    assert isinstance(info.value, OutcomeUnknownError) is unknown, repr(info.value)


async def test_a_waiter_that_gives_up_does_not_take_the_event_from_another() -> None:
    async with AiraloClient("id", "secret", clock=ManualClock()) as client:
        first = asyncio.ensure_future(client.orders.wait_async("req-1", timeout=30))
        second = asyncio.ensure_future(client.orders.wait_async("req-1", timeout=30))
        await asyncio.sleep(0)
        first.cancel()  # e.g. the web request that waited went away
        await asyncio.sleep(0)
        client.orders.deliver_async_order(AsyncOrderEvent(request_id="req-1", reason="x"))
        done, _ = await asyncio.wait({second}, timeout=2)
        assert second in done, "the second waiter never got the delivered event"
        assert (await second).request_id == "req-1"


async def test_a_future_order_of_unknown_outcome_points_where_it_can_be_found(
    mocked: aioresponses, client: AiraloClient
) -> None:
    # A scheduled order is listed by future_orders.list() until its due date; orders.list()
    # does not show it, so looking there finds nothing and invites scheduling it twice.
    url = f"{BASE}/v2/future-orders"
    mocked.post(url, status=502, body=b"<html>bad gateway</html>", repeat=True)
    due = NOW + timedelta(days=3)
    with pytest.raises(OutcomeUnknownError) as info:
        await client.future_orders.create("change-7days-1gb", 1, due, description="plan-8")
    assert "client.future_orders.list(" in str(info.value)
    assert "client.orders.list(" not in str(info.value)
    assert len(sent(mocked, "POST", url)) == 1

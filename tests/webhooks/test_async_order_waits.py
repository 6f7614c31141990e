"""Async orders' webhook events and the callers waiting for them (``AsyncOrders``)."""

from __future__ import annotations

import asyncio

import pytest

from esim_async.context import AsyncOrders
from esim_async.errors import WaitTimeoutError
from esim_async.webhooks import AsyncOrderEvent


async def test_an_event_for_a_caller_that_just_gave_up_is_kept_for_the_next_wait() -> None:
    orders = AsyncOrders()
    waiting = asyncio.create_task(orders.wait("req-1", timeout=30))
    await asyncio.sleep(0)  # the caller now waits for the event
    waiting.cancel()  # it gives up; its task has not run again yet
    event = AsyncOrderEvent(request_id="req-1", reason="declined")
    orders.deliver(event)
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # Nobody received the event, so a caller that asks again still gets it.
    assert await orders.wait("req-1", timeout=1) is event


async def test_every_caller_waiting_for_one_order_gets_its_event() -> None:
    orders = AsyncOrders()
    waits = [asyncio.create_task(orders.wait("req-2", timeout=30)) for _ in range(3)]
    await asyncio.sleep(0)
    waits[0].cancel()
    event = AsyncOrderEvent(request_id="req-2", reason="declined")
    await asyncio.sleep(0)
    orders.deliver(event)
    assert [await w for w in waits[1:]] == [event, event]
    assert waits[0].cancelled()
    # Delivered to the callers still waiting: not kept for later.
    with pytest.raises(WaitTimeoutError):
        await orders.wait("req-2", timeout=0.01)

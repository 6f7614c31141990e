"""Single flight, priorities and closing, end to end through the client (aioresponses).

* A call that joins another's request lends it its priority and its retry policy.
* ``refresh=True`` never joins a request that started before it.
* ``aclose()`` wakes every caller (per-key waits, package history) and leaves no task.
* A caller that arrives while an abandoned request is being cancelled starts a fresh one.

Time is virtual: nothing here waits for a real rate-limit window.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from aioresponses import CallbackResult, aioresponses

from esim_async import AiraloClient, ManualClock, Rate, RateLimitedError, TransportError
from esim_async.cache import SingleFlight
from esim_async.limits import EndpointLimiter, Priority, QueueTicket

BASE = "https://partners-api.airalo.com"
TOKEN = {"data": {"access_token": "tok", "expires_in": 3600}, "meta": {"message": "success"}}
USAGE = re.compile(r"^https://partners-api\.airalo\.com/v2/sims/(\d+)/usage$")
ICCIDS = [f"89444654000002{n:05d}" for n in range(20)]


class VirtualClock:
    """Time moves only when the test advances it; sleepers wake in deadline order."""

    def __init__(self) -> None:
        self._now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    async def advance(self, seconds: float) -> None:
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            if not fut.done():
                fut.set_result(None)
            await settle()
        self._now = target
        await settle()


async def settle() -> None:
    """Let every runnable task run until it waits for time or a gate."""
    for _ in range(3):
        for _ in range(30):
            await asyncio.sleep(0)
        await asyncio.sleep(0.001)


def usage_body(remaining: int) -> str:
    return json.dumps(
        {
            "data": {
                "remaining": remaining,
                "total": 2048,
                "expired_at": "2030-01-01 00:00:00",
                "is_unlimited": False,
                "status": "ACTIVE",
                "remaining_voice": 0,
                "remaining_text": 0,
                "total_voice": 0,
                "total_text": 0,
            },
            "meta": {"message": "success"},
        }
    )


def iccid_of(url: Any) -> str:
    match = USAGE.match(str(url))
    assert match is not None, url
    return match.group(1)


def our_tasks() -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [
        t
        for t in asyncio.all_tasks()
        if t is not current and "esim_async" in (t.get_name() + repr(t.get_coro()))
    ]


@pytest.fixture
def mocked() -> Any:
    with aioresponses() as m:
        m.post(f"{BASE}/v2/token", payload=TOKEN, repeat=True)
        yield m


def serve_usage(m: aioresponses, order: list[str]) -> None:
    """Answer every usage request, recording the ICCIDs in the order the server saw them."""

    def answer(url: Any, **_: Any) -> CallbackResult:
        order.append(iccid_of(url))
        return CallbackResult(body=usage_body(100 + len(order)))

    m.get(USAGE, callback=answer, repeat=True)


async def drive(clock: VirtualClock, done: Callable[[], bool], step: float = 0.5) -> None:
    for _ in range(400):
        if done():
            return
        await clock.advance(step)
    raise AssertionError("the calls did not finish")


# ------------------------------------------------------------------ priority and call options


async def test_raised_ticket_moves_a_queued_wait_to_the_better_lane() -> None:
    clock = VirtualClock()
    limiter = EndpointLimiter("x", shared=Rate(1, 1.0), per_key=None, clock=clock)
    await limiter.acquire()  # spends the budget: the next ones queue
    admitted: list[str] = []
    ticket = QueueTicket(Priority.BULK)

    async def take(name: str, priority: Priority, with_ticket: bool = False) -> None:
        if with_ticket:
            with ticket.bind():
                await limiter.acquire(None, priority)
        else:
            await limiter.acquire(None, priority)
        admitted.append(name)

    tasks = [asyncio.create_task(take(f"bulk{i}", Priority.BULK, i == 3)) for i in range(5)]
    await settle()
    tasks.append(asyncio.create_task(take("interactive", Priority.INTERACTIVE)))
    await settle()
    ticket.raise_to(Priority.INTERACTIVE)  # behind the interactive waiter, ahead of the bulk
    ticket.raise_to(Priority.BULK)  # a ticket never drops
    await drive(clock, lambda: all(t.done() for t in tasks))
    assert admitted == ["interactive", "bulk3", "bulk0", "bulk1", "bulk2", "bulk4"]
    assert limiter.waiters() == 0
    await limiter.aclose()


async def test_interactive_joiner_lifts_a_queued_bulk_request_to_its_lane(mocked) -> None:
    order: list[str] = []
    serve_usage(mocked, order)
    clock = VirtualClock()
    finished: list[str] = []
    async with AiraloClient(
        "id", "secret", clock=clock, company_rate=Rate(1, 1.0), iccid_rate=None
    ) as client:
        bulk = ICCIDS[:8]

        async def sweep() -> None:
            async with client.sims.usage_many(bulk, concurrency=len(bulk)) as results:
                async for r in results:
                    assert r.error is None
                    finished.append(r.iccid)

        sweeping = asyncio.create_task(sweep())
        await settle()
        assert order == [bulk[0]]  # one request went out; the rest wait in the bulk lane

        async def interactive() -> None:
            await client.sims.usage(bulk[5])
            finished.append("interactive")

        joiner = asyncio.create_task(interactive())
        await settle()
        await drive(clock, lambda: sweeping.done() and joiner.done())
        await sweeping
        await joiner
    # The joined request left the bulk queue for the interactive lane: it went next, and the
    # interactive caller was answered before the bulk requests queued ahead of it.
    assert order == [bulk[0], bulk[5], *bulk[1:5], *bulk[6:]]
    assert finished.index("interactive") < finished.index(bulk[1])
    assert client.stats.coalesced == 1


async def test_priority_raised_during_the_per_key_wait_counts_in_the_shared_queue(mocked) -> None:
    order: list[str] = []
    serve_usage(mocked, order)
    clock = VirtualClock()
    async with AiraloClient(
        "id", "secret", clock=clock, company_rate=Rate(1, 1.0), iccid_rate=Rate(1, 10.0)
    ) as client:
        target = ICCIDS[0]
        others = ICCIDS[1:16]
        await client.sims.usage(target)  # spends the target's per-ICCID window
        client.sims.invalidate_usage(target)
        results: list[str] = []

        async def sweep() -> None:
            async with client.sims.usage_many([*others, target], concurrency=16) as rs:
                async for r in rs:
                    assert r.error is None
                    results.append(r.iccid)

        sweeping = asyncio.create_task(sweep())
        await settle()
        joiner = asyncio.create_task(client.sims.usage(target))  # joins the sweep's request
        await settle()
        assert not joiner.done()
        await drive(clock, lambda: sweeping.done() and joiner.done())
        await sweeping
        await joiner
    # The target waited out its own window, then took the first free company slot instead of
    # queueing behind every bulk request that arrived while it waited.
    second = order.index(target, 1)
    assert second < order.index(others[-3])
    assert order.count(target) == 2


async def test_joiner_that_retries_429_makes_the_shared_request_retry(mocked) -> None:
    iccid, alone = ICCIDS[0], ICCIDS[1]
    gate = asyncio.Event()
    seen: list[str] = []

    async def answer(url: Any, **_: Any) -> CallbackResult:
        key = iccid_of(url)
        seen.append(key)
        if seen.count(key) == 1:
            if key == iccid:
                await gate.wait()
            return CallbackResult(
                status=429,
                body=json.dumps({"message": "Too Many Attempts."}),
                headers={"Retry-After": "1"},
            )
        return CallbackResult(body=usage_body(500))

    mocked.get(USAGE, callback=answer, repeat=True)
    async with AiraloClient("id", "secret", clock=ManualClock()) as client:
        sims = client.sims
        # A sweep's request on its own does not retry a 429 (the sweep re-queues the ICCID).
        with pytest.raises(RateLimitedError):
            await sims.usage_entry(alone, priority=Priority.BULK, retry_rate_limited=False)
        assert seen == [alone]

        swept = asyncio.create_task(
            sims.usage_entry(iccid, priority=Priority.BULK, retry_rate_limited=False)
        )
        while iccid not in seen:
            await asyncio.sleep(0)
        joiner = asyncio.create_task(sims.usage(iccid))
        await settle()
        gate.set()
        usage = await asyncio.wait_for(joiner, 5)
        entry, _ = await asyncio.wait_for(swept, 5)
    assert usage.raw_remaining == 500
    assert entry.value == usage
    assert seen.count(iccid) == 2  # retried once, for both callers


async def test_joiner_with_more_retries_makes_the_queued_request_more_patient(mocked) -> None:
    iccid = ICCIDS[0]
    seen: list[str] = []

    def answer(url: Any, **_: Any) -> CallbackResult:
        key = iccid_of(url)
        seen.append(key)
        if key == iccid and seen.count(key) <= 2:
            return CallbackResult(status=503, body=json.dumps({"message": "unavailable"}))
        return CallbackResult(body=usage_body(300))

    mocked.get(USAGE, callback=answer, repeat=True)
    clock = VirtualClock()
    async with AiraloClient(
        "id", "secret", clock=clock, company_rate=Rate(1, 1.0), iccid_rate=None, max_retries=0
    ) as client:
        sims = client.sims
        await sims.usage(ICCIDS[1])  # the company slot is spent: the next request queues
        swept = asyncio.create_task(
            sims.usage_entry(iccid, priority=Priority.BULK, retry_rate_limited=False)
        )
        await settle()
        joiner = asyncio.create_task(sims.usage(iccid, max_retries=2))
        await settle()
        await drive(clock, lambda: swept.done() and joiner.done())
        usage = await joiner
        entry, _ = await swept
    assert usage.raw_remaining == 300
    assert entry.value == usage
    assert seen.count(iccid) == 3  # the joiner's two retries, for both callers


async def test_refresh_never_joins_a_request_that_started_before_it(mocked) -> None:
    iccid = ICCIDS[0]
    gate = asyncio.Event()
    count = 0

    async def answer(url: Any, **_: Any) -> CallbackResult:
        nonlocal count
        count += 1
        n = count
        if n == 1:
            await gate.wait()  # the first request is on the wire
        return CallbackResult(body=usage_body(n))

    mocked.get(USAGE, callback=answer, repeat=True)
    async with AiraloClient("id", "secret", clock=ManualClock()) as client:
        first = asyncio.create_task(client.sims.usage(iccid))
        while count == 0:
            await asyncio.sleep(0)
        refreshed = asyncio.create_task(client.sims.usage(iccid, refresh=True))
        await settle()
        later = asyncio.create_task(client.sims.usage(iccid))  # joins the newest request
        await settle()
        gate.set()
        got = await asyncio.wait_for(asyncio.gather(first, refreshed, later), 5)
    assert [u.raw_remaining for u in got] == [1, 2, 2]
    assert count == 2


# ------------------------------------------------------------------ closing


async def test_aclose_wakes_per_key_waits_and_the_history_flight(mocked, payload) -> None:
    iccid = ICCIDS[0]
    history = payload("airalo/sim_package_history_200.json")
    info = payload("airalo/product_information_200.json")
    mocked.get(re.compile(r".*/v2/sims/\d+/packages$"), body=history, repeat=True)
    mocked.get(re.compile(r".*/v2/packages/[\w-]+/product-information.*"), body=info, repeat=True)
    client = AiraloClient(
        "id",
        "secret",
        limits={"package_history": Rate(1, 900.0), "product_information": Rate(1, 900.0)},
    )
    # Spend the 15-minute windows of one eSIM and one package.
    await client.sims.package_history(iccid)
    await client.packages.product_information("some-package")
    waiting = [
        # two refreshes in the history flight (the second does not join the first)
        asyncio.create_task(client.sims.package_history(iccid, refresh=True)),
        asyncio.create_task(client.sims.package_history(iccid, refresh=True)),
        # a per-key wait outside any single flight
        asyncio.create_task(client.packages.product_information("some-package")),
        # an async order's webhook
        asyncio.create_task(client.orders.wait_async("request-1")),
    ]
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in waiting)  # each waits out its per-key window
    async with asyncio.timeout(2):
        await client.aclose()
        results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, TransportError) for r in results), results
    await asyncio.sleep(0)
    assert our_tasks() == []
    with pytest.raises(TransportError):
        await client.sims.package_history(iccid, refresh=True)


# ------------------------------------------------------------------ joining a cancelled request


async def test_joining_an_abandoned_request_starts_a_fresh_one() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    cleanup = asyncio.Event()
    started = 0

    async def work() -> int:
        nonlocal started
        started += 1
        n = started
        try:
            await asyncio.sleep(3600 if n == 1 else 0)
        except asyncio.CancelledError:
            await cleanup.wait()  # the cancelled request takes a while to wind down
            raise
        return n

    first = asyncio.create_task(flight.run("k", work))
    for _ in range(10):
        if started:
            break
        await asyncio.sleep(0)
    first.cancel()  # its only caller leaves: the request is being cancelled
    await asyncio.sleep(0)
    second = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    cleanup.set()
    assert await asyncio.wait_for(second, 5) == (2, False)
    assert started == 2
    assert first.cancelled()


async def test_usage_caller_arriving_while_the_request_is_cancelled_gets_an_answer(
    mocked,
) -> None:
    iccid = ICCIDS[0]
    order: list[str] = []
    serve_usage(mocked, order)
    clock = VirtualClock()
    async with AiraloClient(
        "id", "secret", clock=clock, company_rate=Rate(1, 1.0), iccid_rate=None
    ) as client:
        await client.sims.usage(ICCIDS[1])  # the company slot is spent: the next one queues
        leaving = asyncio.create_task(client.sims.usage(iccid))
        await settle()
        leaving.cancel()
        arriving = asyncio.create_task(client.sims.usage(iccid))
        await settle()
        await drive(clock, arriving.done)
        usage = await arriving
    assert usage.raw_remaining > 0
    assert leaving.cancelled()
    assert order == [ICCIDS[1], iccid]

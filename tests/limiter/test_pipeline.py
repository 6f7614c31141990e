"""Limits as the request pipeline uses them: permits around the token, re-sends, 429 charging
and cool-downs bounded by ``retry_after_cap``, retry policy read when it is needed, closing.

Counts, results and errors are asserted; time bounds are virtual or hang guards.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Any

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from esim_async import (
    AiraloClient,
    ManualClock,
    Rate,
    RateLimitedError,
    ServerError,
    TransportError,
)
from esim_async.backends.memory import MemoryBackend
from esim_async.limits import EndpointLimiter, Priority, Slot
from esim_async.testing import Emulator, Fleet, ServerLimits

BASE = "https://partners-api.airalo.com"
TOKEN_URL = f"{BASE}/v2/token"
USAGE_RE = re.compile(r"^https://partners-api\.airalo\.com/v2/sims/(\d+)/usage$")
ICCIDS = [f"89444654000002673{i:02d}" for i in range(10)]
TOKEN = {"data": {"access_token": "tok-1", "expires_in": 86400}, "meta": {"message": "success"}}
USAGE = {"data": {"remaining": 512, "total": 1024, "status": "ACTIVE"}, "meta": {"message": "ok"}}
TOO_MANY = {"message": "Too Many Attempts."}


def usage_url(iccid: str) -> str:
    return f"{BASE}/v2/sims/{iccid}/usage"


@pytest.fixture
def mocked() -> Any:
    with aioresponses() as m:
        m.post(TOKEN_URL, payload=TOKEN, repeat=True)
        yield m


class CountingBackend(MemoryBackend):
    """Counts the permits each limiter (by endpoint) hands out."""

    def __init__(self) -> None:
        self.permits: Counter[str] = Counter()

    def limiter(self, name: str, **options: Any) -> EndpointLimiter:
        limiter = super().limiter(name, **options)
        permits, endpoint = self.permits, name.rsplit(":", 1)[-1]
        acquire = limiter.acquire

        async def counting(
            key: str | None = None, priority: Priority = Priority.INTERACTIVE
        ) -> Slot:
            slot = await acquire(key, priority)
            permits[endpoint] += 1
            return slot

        limiter.acquire = counting  # type: ignore[method-assign]
        return limiter


# ------------------------------------------------------------------ permits and the token


async def test_sandbox_with_a_cold_token_does_not_deadlock() -> None:
    """Every request of a sandbox account takes an account permit, the token request too:
    requests waiting for the token must not hold permits the token request needs."""
    fleet = Fleet.generate(5, seed=51)
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu,
        AiraloClient(
            "id",
            "secret",
            base_url=emu.url,
            sandbox=True,
            sandbox_rate=Rate(2, 1.0),
            clock=ManualClock(),
        ) as client,
    ):
        async with asyncio.timeout(10):  # a hang guard only
            results = await asyncio.gather(*(client.sims.usage(i) for i in fleet.iccids()))
    assert [r.status for r in results] == [fleet.sims[i].status for i in fleet.iccids()]
    assert emu.stats.tokens_issued == 1


async def test_re_sends_on_a_callers_session_take_an_account_permit_too() -> None:
    """A server drops reused keep-alive connections, so aiohttp re-sends requests by itself on
    a caller's session: each request that reaches the server took an endpoint permit and, in
    sandbox mode, an account permit."""
    arrivals: Counter[str] = Counter()
    served: Counter[int] = Counter()
    body = b'{"data": {"remaining": 1, "total": 2, "status": "ACTIVE"}, "meta": {"message": "ok"}}'
    token = b'{"data": {"access_token": "t0k3n-value", "expires_in": 3600}}'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode()
                for h in head.split(b"\r\n")[1:]:
                    if h.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(h.split(b":", 1)[1]))
                kind = "token" if "/token" in line else "usage"
                arrivals[kind] += 1
                if kind == "usage" and served[id(writer)] >= 1:
                    break  # drop a reused keep-alive connection without answering
                served[id(writer)] += 1
                payload = token if kind == "token" else body
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = CountingBackend()
    session = aiohttp.ClientSession()
    try:
        async with AiraloClient(
            "id",
            "secret",
            base_url=f"http://127.0.0.1:{port}",
            backend=backend,
            max_retries=3,
            session=session,
            sandbox=True,
            sandbox_rate=Rate(1000, 1.0),
        ) as client:
            for iccid in Fleet.generate(4, seed=2).iccids():
                await client.sims.usage(iccid)
            assert client.stats.resends >= 1  # aiohttp re-sent by itself
    finally:
        await session.close()
        server.close()
        await server.wait_closed()
    assert backend.permits["usage"] == arrivals["usage"]
    assert backend.permits["account"] == arrivals["usage"] + arrivals["token"]


# ------------------------------------------------------------------ 429s and the cap


@pytest.mark.parametrize("retry_after", [None, "-5", "NaN", "garbage", "inf"])
async def test_a_cool_down_without_a_usable_retry_after_is_bounded_by_the_cap(
    mocked: aioresponses, retry_after: str | None
) -> None:
    """No usable Retry-After: the cool-down is one period of the limit charged (the eSIM's
    minute here), longer than the 30 s callers wait, so the call is refused, not put to
    sleep; an infinite one is beyond any cap."""
    clock = ManualClock()
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    mocked.get(usage_url(ICCIDS[0]), status=429, payload=TOO_MANY, headers=headers)
    mocked.get(USAGE_RE, payload=USAGE, repeat=True)
    async with AiraloClient("id", "secret", clock=clock, retry_after_cap=30.0) as client:
        with pytest.raises(RateLimitedError):
            await client.sims.usage(ICCIDS[0])
        with pytest.raises(RateLimitedError):  # refused at once, no request
            await client.sims.usage(ICCIDS[0], refresh=True)
        assert clock.now() < 30.0  # nobody slept through the cool-down
        await client.sims.usage(ICCIDS[1])  # other eSIMs go
    assert len(mocked.requests[("GET", URL(usage_url(ICCIDS[0])))]) == 1


async def test_a_limit_header_that_is_not_the_companys_spares_the_company(
    mocked: aioresponses,
) -> None:
    """A sweep keeps the company window full; one eSIM's 429 says X-RateLimit-Limit: 2, neither
    the company's count nor the per-eSIM one: the company is not charged."""
    mocked.get(
        usage_url(ICCIDS[4]),
        status=429,
        payload=TOO_MANY,
        headers={"Retry-After": "1", "X-RateLimit-Limit": "2"},
    )
    mocked.get(USAGE_RE, payload=USAGE, repeat=True)
    async with AiraloClient(
        "id", "secret", clock=ManualClock(), company_rate=Rate(5, 1.0), max_retries=0
    ) as client:
        results = await asyncio.gather(
            *(client.sims.usage(i) for i in ICCIDS[:5]), return_exceptions=True
        )
        assert isinstance(results[4], RateLimitedError)
        state = client.rate_limit_state()["usage"]
    assert state.cooldown_remaining == 0
    assert state.effective_per_second == 5.0
    assert state.key_cooldowns == 1


# ------------------------------------------------------------------ retry policy, closing


async def test_a_joiners_retries_count_for_the_attempt_in_flight(mocked: aioresponses) -> None:
    gate = asyncio.Event()
    answers = iter([503, 200])

    async def answer(url: Any, **_: Any) -> CallbackResult:
        await gate.wait()
        status = next(answers)
        return CallbackResult(status=status, payload=USAGE if status == 200 else {})

    mocked.get(USAGE_RE, callback=answer, repeat=True)
    async with AiraloClient("id", "secret", clock=ManualClock()) as client:
        first = asyncio.create_task(client.sims.usage(ICCIDS[0], max_retries=0))
        await asyncio.sleep(0.05)  # its only attempt is on the wire
        second = asyncio.create_task(client.sims.usage(ICCIDS[0], max_retries=2))
        await asyncio.sleep(0.05)
        gate.set()
        async with asyncio.timeout(5):  # a hang guard only
            results = await asyncio.gather(first, second, return_exceptions=True)
    assert not any(isinstance(r, ServerError) for r in results), results
    assert results[0].remaining == results[1].remaining == 512  # type: ignore[union-attr]


class StillClock:
    """Time that never moves: a sleep lasts until it is cancelled."""

    def __init__(self) -> None:
        self.sleeping = 0

    def now(self) -> float:
        return 0.0

    def wall(self) -> float:
        return 1_900_000_000.0

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        self.sleeping += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.sleeping -= 1


async def test_closing_ends_a_writes_retry_back_off_at_once(mocked: aioresponses) -> None:
    """A write could not connect (nothing was sent) and sleeps in its back-off before trying
    again: closing the client ends it with a TransportError instead of letting the back-off
    run out."""
    mocked.post(f"{BASE}/v2/refund", exception=aiohttp.ConnectionTimeoutError(), repeat=True)
    clock = StillClock()
    client = AiraloClient("id", "secret", clock=clock)
    call = asyncio.create_task(client.refunds.create([ICCIDS[0]], "OTHERS", notes="x"))
    async with asyncio.timeout(5):  # a hang guard only
        while not clock.sleeping:
            await asyncio.sleep(0.01)
    await client.aclose()
    async with asyncio.timeout(2):  # a hang guard only
        with pytest.raises(TransportError, match="closed"):
            await call

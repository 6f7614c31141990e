"""No call sleeps longer than its documented caps, and none hangs.

Hostile server answers (``Retry-After`` huge, negative, NaN, infinite, an HTTP date far ahead
or behind, garbage; ``X-RateLimit-Reset`` far ahead; a 429 on every attempt; a 503 with
``Retry-After``; a token endpoint that throttles or hangs; a per-eSIM 429) are crossed with
the public calls (``sims.usage``, ``sims.usage_many``, ``orders.create``, PressOne's
``sims.usage``), served by this file's own server on 127.0.0.1.

Every sleep of the client goes through its clock. :class:`SkipClock` runs on the loop's time
but skips every sleep at once, adding it to its own time, so a call's wait is measured exactly
(its clock's time at the end minus at the start: real time spent plus every sleep) and a
hidden hour-long sleep costs nothing but a failed assertion. ``asyncio.sleep`` is wrapped as
well, for a sleep that would bypass the clock. The bounds come from README.md:

- "Reads (GET, PUT) are retried ... ``max_retries`` times ..., with jittered exponential
  backoff (0.5 s doubling, capped at 8 s)."  Retry ``n`` waits at most
  ``min(8, 0.5 * 2 ** (n - 1))``.
- "A 429 is retried after its cool-down when ``Retry-After`` is within ``retry_after_cap``;
  beyond it, ``RateLimitedError`` at once, for this call and every call that would wait for
  the same cool-down."  A cool-down waited is at most ``retry_after_cap`` (plus the jitter
  that spreads waking callers, under a second).
- "A cool-down longer than ``retry_after_cap`` ..., including the one-period default when
  ``Retry-After`` is missing or unusable, is never slept through."
- "``timeout=`` (30 s per attempt)": each attempt costs at most ``timeout``.
- "Writes ... never retried when their outcome is unknown: a timeout ... or a 5xx after
  sending raises ``OutcomeUnknownError``. A write refused before it did anything (... a
  429 ...) is retried."
"""

from __future__ import annotations

import asyncio
import email.utils
import heapq
import itertools
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from esim_async import (
    AiraloClient,
    EsimError,
    OutcomeUnknownError,
    PressOneClient,
    RateLimitedError,
    ServerError,
    TransportError,
)
from tests.conftest import PAYLOADS
from tests.local_server import LocalServer

#: Small caps so the whole file runs in seconds of real time.
CAP = 1.0  # retry_after_cap
TIMEOUT = 0.5  # timeout per attempt
RETRIES = 2  # max_retries
#: The jitter added to a cool-down so callers waking together spread (under a second).
JITTER = 1.0
#: Slack for the loop's own time between steps (real, not slept).
SLACK = 0.5
#: Real seconds after which a call counts as hung.
HANG = 8.0

ICCID = "8944465400000267221"
TOKEN_BODY = b'{"data": {"token_type": "Bearer", "expires_in": 3600, "access_token": "tok"}}'
USAGE_BODY = (PAYLOADS / "airalo/usage_200.json").read_bytes()
ORDER_BODY = (PAYLOADS / "airalo/order_200.json").read_bytes()
OTHER = "8944465400000267222"
THIRD = "8944465400000267223"

_REAL_SLEEP = asyncio.sleep


def backoff_ceiling(n: int) -> float:
    """README: retry ``n`` backs off at most ``0.5 s doubling, capped at 8 s``."""
    return min(8.0, 0.5 * 2.0 ** (n - 1))


def read_bound(attempts_timeout: int = RETRIES + 1) -> float:
    """The longest a read may take: every attempt up to ``timeout``, and before each retry the
    longer of its backoff and a cool-down within ``retry_after_cap`` (plus its jitter)."""
    waits = sum(max(backoff_ceiling(n), CAP + JITTER) for n in range(1, RETRIES + 1))
    return attempts_timeout * TIMEOUT + waits + SLACK


#: A call whose wait is refused "at once": one attempt, no sleep worth the name.
AT_ONCE = TIMEOUT + SLACK


class SkipClock:
    """The loop's time, plus the sleeps skipped (see the module docstring): once every task has
    had its turn, time jumps to the earliest sleeper's deadline, so concurrent sleeps wake in
    order (a sleep raced against another ends first if it is shorter) and cost no real time."""

    def __init__(self) -> None:
        self.skipped = 0.0
        #: Every delay passed to :meth:`sleep`, in order.
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._driver: asyncio.Task[None] | None = None

    def now(self) -> float:
        return asyncio.get_running_loop().time() + self.skipped

    def wall(self) -> float:
        return time.time() + self.skipped

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.sleeps.append(seconds)
        if not math.isfinite(seconds):
            raise AssertionError(f"a sleep of {seconds} seconds")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self.now() + seconds, next(self._seq), fut))
        if self._driver is None:
            self._driver = loop.create_task(self._drive())
        await fut

    async def _drive(self) -> None:
        try:
            while self._sleepers:
                for _ in range(20):  # everything runnable runs before time jumps
                    await _REAL_SLEEP(0)
                when, _, fut = heapq.heappop(self._sleepers)
                if fut.done():  # (cancelled)
                    continue
                self.skipped += max(0.0, when - self.now())
                fut.set_result(None)
        finally:
            self._driver = None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def hang(request: web.Request) -> web.StreamResponse:
    """Never answers (until the server stops)."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def fixed(body: bytes) -> Handler:
    """Answers 200 with ``body`` every time."""

    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    return answer


ok_token = fixed(TOKEN_BODY)
usage_ok = fixed(USAGE_BODY)
order_ok = fixed(ORDER_BODY)


def status(code: int, headers: dict[str, str]) -> Handler:
    """Answers ``code`` with ``headers`` every time."""

    async def answer(request: web.Request) -> web.StreamResponse:
        body = {"data": [], "meta": {"message": "Too Many Attempts."}}
        return web.Response(
            status=code, text=json.dumps(body), content_type="application/json", headers=headers
        )

    return answer


class Hostile(LocalServer):
    """Airalo's and PressOne's paths, each answered by a replaceable handler; ``arrivals``
    counts requests per path."""

    def __init__(self) -> None:
        self.token: Handler = ok_token
        self.usage: dict[str, Handler] = {}
        self.usage_default: Handler = usage_ok
        self.orders: Handler = order_ok
        self.arrivals: dict[str, int] = {}

    def app(self) -> web.Application:
        app = web.Application()
        for prefix in ("/v2", "/customer/v2"):
            app.router.add_post(f"{prefix}/token", self._token)
            app.router.add_get(prefix + "/sims/{iccid}/usage", self._usage)
            app.router.add_post(f"{prefix}/orders", self._orders)
        return app

    def _count(self, name: str) -> None:
        self.arrivals[name] = self.arrivals.get(name, 0) + 1

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self._count("token")
        return await self.token(request)

    async def _usage(self, request: web.Request) -> web.StreamResponse:
        iccid = request.match_info["iccid"]
        self._count(iccid)
        return await self.usage.get(iccid, self.usage_default)(request)

    async def _orders(self, request: web.Request) -> web.StreamResponse:
        self._count("orders")
        return await self.orders(request)


@dataclass
class Rig:
    """The server, the clock, and every ``asyncio.sleep`` of more than nothing."""

    server: Hostile
    clock: SkipClock
    real_sleeps: list[float] = field(default_factory=list)

    def airalo(self, **options: Any) -> AiraloClient:
        return AiraloClient("id", "secret", base_url=self.server.url, **self._options(options))

    def pressone(self, **options: Any) -> PressOneClient:
        return PressOneClient("id", "secret", base_url=self.server.url, **self._options(options))

    def _options(self, options: dict[str, Any]) -> dict[str, Any]:
        defaults: dict[str, Any] = {
            "clock": self.clock,
            "timeout": TIMEOUT,
            "connect_timeout": TIMEOUT,
            "max_retries": RETRIES,
            "retry_after_cap": CAP,
        }
        return {**defaults, **options}

    async def timed(self, call: Awaitable[Any]) -> tuple[Any, float]:
        """``call``'s result (or the error it raised) and how long it waited on the client's
        clock; a call still running after :data:`HANG` real seconds fails the test."""
        start = self.clock.now()
        try:
            async with asyncio.timeout(HANG):
                result: Any = await call
        except TimeoutError:
            pytest.fail(f"the call hung (over {HANG} s of real time)")
        except EsimError as exc:
            result = exc
        waited = self.clock.now() - start
        longest = max(self.real_sleeps, default=0.0)
        assert longest <= CAP + JITTER, f"asyncio.sleep({longest}) outside the clock"
        return result, waited


@pytest.fixture
async def rig(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    async with Hostile() as server:
        made = Rig(server, SkipClock())

        async def recording_sleep(delay: float, result: Any = None) -> Any:
            if delay > 0:
                made.real_sleeps.append(delay)
            return await _REAL_SLEEP(delay, result)

        monkeypatch.setattr(asyncio, "sleep", recording_sleep)
        yield made


def http_date(offset: float) -> str:
    return email.utils.formatdate(time.time() + offset, usegmt=True)


#: ``Retry-After`` values a client must neither sleep through nor choke on. The id says what
#: the README promises: ``refused`` (beyond the cap: ``RateLimitedError`` at once) or
#: ``bounded`` (waited within the cap, then retried).
HOSTILE_429: dict[str, Callable[[], dict[str, str]]] = {
    "huge": lambda: {"Retry-After": "1000000000"},
    "negative": lambda: {"Retry-After": "-5"},
    "nan": lambda: {"Retry-After": "NaN"},
    "inf": lambda: {"Retry-After": "inf"},
    "date-future": lambda: {"Retry-After": http_date(10 * 365 * 86400)},
    "date-past": lambda: {"Retry-After": http_date(-86400)},
    "garbage": lambda: {"Retry-After": "soon, maybe"},
    "missing": lambda: {},
    "reset-future": lambda: {"X-RateLimit-Reset": str(int(time.time()) + 10**9)},
    "within-cap": lambda: {"Retry-After": "0.3"},
    "beyond-cap": lambda: {"Retry-After": str(CAP + 0.5)},
}


def check_429(result: Any, waited: float, rig: Rig) -> None:
    """A call met with 429s: it ended with the answer or ``RateLimitedError``, within a read's
    bound; no clock sleep exceeded a cool-down within the cap or a backoff."""
    assert isinstance(result, RateLimitedError) or not isinstance(result, EsimError), result
    assert waited <= read_bound(), f"waited {waited:.2f} s"
    assert max(rig.clock.sleeps, default=0.0) <= max(CAP + JITTER, backoff_ceiling(RETRIES))


@pytest.mark.parametrize("answer", list(HOSTILE_429))
async def test_usage_429_every_attempt(rig: Rig, answer: str) -> None:
    """``sims.usage`` against a 429 on every attempt: typed error, within the cap."""
    rig.server.usage_default = status(429, HOSTILE_429[answer]())
    async with rig.airalo() as client:
        result, waited = await rig.timed(client.sims.usage(ICCID))
        check_429(result, waited, rig)
        assert isinstance(result, RateLimitedError)
        sent = rig.server.arrivals[ICCID]
        # A later call that would wait for the same cool-down: at once, nothing slept through.
        again, waited_again = await rig.timed(client.sims.usage(ICCID))
    assert isinstance(again, RateLimitedError)
    assert waited_again <= read_bound()
    assert sent <= RETRIES + 1


@pytest.mark.parametrize("answer", ["huge", "inf", "date-future", "beyond-cap"])
async def test_usage_429_beyond_cap_refused_at_once(rig: Rig, answer: str) -> None:
    """README: ``Retry-After`` above ``retry_after_cap``: ``RateLimitedError`` at once, for this
    call and every call that would wait for that cool-down."""
    rig.server.usage_default = status(429, HOSTILE_429[answer]())
    async with rig.airalo() as client:
        result, waited = await rig.timed(client.sims.usage(ICCID))
        assert isinstance(result, RateLimitedError)
        assert waited <= AT_ONCE
        assert rig.server.arrivals[ICCID] == 1
        again, waited_again = await rig.timed(client.sims.usage(ICCID, refresh=True))
    assert isinstance(again, RateLimitedError)
    assert waited_again <= AT_ONCE
    assert rig.server.arrivals[ICCID] == 1  # refused by the client, nothing sent


async def test_usage_503_with_retry_after(rig: Rig) -> None:
    """A 503 with a huge ``Retry-After`` is a 5xx: retried with backoff, then ``ServerError``."""
    rig.server.usage_default = status(503, {"Retry-After": "1000000000"})
    async with rig.airalo() as client:
        result, waited = await rig.timed(client.sims.usage(ICCID))
    assert isinstance(result, ServerError)
    assert waited <= read_bound()
    assert rig.server.arrivals[ICCID] == RETRIES + 1


async def test_usage_hangs(rig: Rig) -> None:
    """An endpoint that never answers: every attempt ends at ``timeout``."""
    rig.server.usage_default = hang
    async with rig.airalo() as client:
        result, waited = await rig.timed(client.sims.usage(ICCID))
    assert isinstance(result, TransportError)
    assert waited <= read_bound()


@pytest.mark.parametrize("answer", ["huge", "inf", "nan", "within-cap", "beyond-cap", "missing"])
async def test_token_endpoint_429(rig: Rig, answer: str) -> None:
    """A token endpoint that throttles: the call waiting for the token ends within the cap."""
    rig.server.token = status(429, HOSTILE_429[answer]())
    async with rig.airalo() as client:
        result, waited = await rig.timed(client.sims.usage(ICCID))
        assert isinstance(result, RateLimitedError)
        # The retries of the token request wait no longer than the cap, also when the 429s
        # lowered the token endpoint's rate (3 per minute halved: one request per 40 s).
        assert waited <= read_bound()
        again, waited_again = await rig.timed(client.sims.usage(ICCID))
    assert isinstance(again, RateLimitedError)
    # A later call's first token request waits for budget at the lowered rate: the README
    # caps no budget wait, so only an end within two periods of the token limit is asserted.
    assert waited_again <= 2 * 60.0
    assert ICCID not in rig.server.arrivals


async def test_usage_429_storm(rig: Rig) -> None:
    """Eight eSIMs read at once against a 429 on every attempt (``Retry-After`` within the
    cap): the company rate is lowered again and again, yet every call ends with
    ``RateLimitedError`` within a read's bound."""
    rig.server.usage_default = status(429, {"Retry-After": "0.5", "X-RateLimit-Limit": "5"})
    iccids = [f"89444654000002672{i:02d}" for i in range(8)]
    async with rig.airalo() as client:
        start = rig.clock.now()
        ends: list[float] = []

        async def one(iccid: str) -> Any:
            result, _ = await rig.timed(client.sims.usage(iccid))
            ends.append(rig.clock.now() - start)
            return result

        results = await asyncio.gather(*(one(i) for i in iccids))
    assert all(isinstance(r, RateLimitedError) for r in results), results
    assert max(ends) <= read_bound(), sorted(ends)


async def test_usage_per_call_timeout(rig: Rig) -> None:
    """README: ``timeout=`` per call: each attempt of a hanging read ends at it."""
    rig.server.usage_default = hang
    async with rig.airalo(timeout=30.0) as client:
        result, waited = await rig.timed(client.sims.usage(ICCID, timeout=TIMEOUT))
    assert isinstance(result, TransportError)
    assert waited <= read_bound()


async def test_token_endpoint_hangs(rig: Rig) -> None:
    """A token endpoint that never answers: ``TransportError`` after its attempts."""
    rig.server.token = hang
    async with rig.airalo() as client:
        result, waited = await rig.timed(client.sims.usage(ICCID))
    assert isinstance(result, TransportError)
    assert waited <= read_bound()


async def test_per_esim_cooldown_leaves_others_alone(rig: Rig) -> None:
    """README: a 429 for one eSIM cools only that eSIM down; the company budget is untouched."""
    rig.server.usage[ICCID] = status(429, {"Retry-After": "1000000000"})
    async with rig.airalo() as client:
        first, waited = await rig.timed(client.sims.usage(ICCID))
        assert isinstance(first, RateLimitedError)
        assert waited <= AT_ONCE
        other, waited_other = await rig.timed(client.sims.usage(OTHER))
        again, waited_again = await rig.timed(client.sims.usage(ICCID, refresh=True))
    assert not isinstance(other, EsimError)
    assert waited_other <= AT_ONCE
    assert isinstance(again, RateLimitedError)
    assert waited_again <= AT_ONCE
    assert rig.server.arrivals[ICCID] == 1


#: README, sweeps: a throttled ICCID is "re-queued behind the cool-down" and "an eSIM cooling
#: down for longer than ``retry_after_cap`` ends with ``RateLimitedError`` after a few
#: re-queues"; each re-queue waits at most one cool-down within the cap (plus its jitter).
#: "A few" is taken as at most ten.
SWEEP_REQUEUES = 10


@pytest.mark.parametrize("answer", ["huge", "nan", "missing", "within-cap", "reset-future"])
async def test_usage_many_with_a_throttled_esim(rig: Rig, answer: str) -> None:
    """A sweep where one eSIM is answered 429 every time: every ICCID yields one result, the
    others their usage, and the sweep ends within the re-queues' cool-downs."""
    rig.server.usage[ICCID] = status(429, HOSTILE_429[answer]())
    iccids = [ICCID, OTHER, THIRD]
    async with rig.airalo() as client:

        async def sweep() -> dict[str, Any]:
            async with client.sims.usage_many(iccids) as results:
                return {r.iccid: r async for r in results}

        got, waited = await rig.timed(sweep())
    assert isinstance(got, dict), got
    assert sorted(got) == sorted(iccids)
    assert got[OTHER].ok and got[THIRD].ok
    assert not got[ICCID].ok
    assert isinstance(got[ICCID].error, RateLimitedError)
    bound = SWEEP_REQUEUES * (CAP + JITTER + TIMEOUT) + SLACK
    assert waited <= bound, f"the sweep waited {waited:.2f} s"


@pytest.mark.parametrize(
    "token",
    [
        "huge",
        pytest.param(
            "within-cap",
            marks=pytest.mark.xfail(
                strict=True,
                reason="each re-queue fetches a token again, and a first token request waits "
                "for budget at the rate the 429s lowered (3 per minute, halved down to a "
                "tenth: up to 204 s per request) with no cap",
            ),
        ),
        "hang",
    ],
)
async def test_usage_many_without_a_token(rig: Rig, token: str) -> None:
    """A sweep whose token endpoint throttles or hangs: every ICCID yields one error, and the
    sweep ends within a read's bound per re-queue."""
    rig.server.token = hang if token == "hang" else status(429, HOSTILE_429[token]())
    iccids = [ICCID, OTHER, THIRD]
    async with rig.airalo() as client:

        async def sweep() -> dict[str, Any]:
            async with client.sims.usage_many(iccids) as results:
                return {r.iccid: r async for r in results}

        got, waited = await rig.timed(sweep())
    assert isinstance(got, dict), got
    assert sorted(got) == sorted(iccids)
    assert all(isinstance(r.error, EsimError) for r in got.values()), got
    assert waited <= SWEEP_REQUEUES * read_bound(), f"the sweep waited {waited:.2f} s"


@pytest.mark.parametrize("answer", ["huge", "inf", "date-future", "beyond-cap"])
async def test_orders_create_429_beyond_cap(rig: Rig, answer: str) -> None:
    """A write refused with a cool-down beyond the cap: ``RateLimitedError`` at once."""
    rig.server.orders = status(429, HOSTILE_429[answer]())
    async with rig.airalo() as client:
        result, waited = await rig.timed(client.orders.create("pkg", 1, description="o-1"))
    assert isinstance(result, RateLimitedError)
    assert waited <= AT_ONCE
    assert rig.server.arrivals["orders"] == 1


@pytest.mark.parametrize("answer", ["within-cap", "nan", "negative", "garbage", "missing"])
async def test_orders_create_429_every_attempt(rig: Rig, answer: str) -> None:
    """A write refused by 429 on every attempt (a known non-outcome): retried within the cap,
    then ``RateLimitedError``."""
    rig.server.orders = status(429, HOSTILE_429[answer]())
    async with rig.airalo() as client:
        result, waited = await rig.timed(client.orders.create("pkg", 1, description="o-1"))
    check_429(result, waited, rig)
    assert isinstance(result, RateLimitedError)
    assert rig.server.arrivals["orders"] <= RETRIES + 1


@pytest.mark.parametrize("handler", ["hang", "503"])
async def test_orders_create_unknown_outcome_not_retried(rig: Rig, handler: str) -> None:
    """A write that timed out or met a 5xx: ``OutcomeUnknownError`` after one attempt."""
    rig.server.orders = hang if handler == "hang" else status(503, {"Retry-After": "1000000000"})
    async with rig.airalo() as client:
        result, waited = await rig.timed(client.orders.create("pkg", 1, description="o-1"))
    assert isinstance(result, OutcomeUnknownError)
    assert waited <= AT_ONCE
    assert rig.server.arrivals["orders"] == 1


@pytest.mark.parametrize("answer", ["huge", "inf", "nan", "garbage", "within-cap", "date-past"])
async def test_pressone_usage_429(rig: Rig, answer: str) -> None:
    """PressOne's usage (no company limit: a 429 is that eSIM's) ends within the cap."""
    rig.server.usage_default = status(429, HOSTILE_429[answer]())
    async with rig.pressone() as client:
        result, waited = await rig.timed(client.sims.usage(ICCID))
        check_429(result, waited, rig)
        assert isinstance(result, RateLimitedError)
        again, waited_again = await rig.timed(client.sims.usage(ICCID, refresh=True))
    assert isinstance(again, RateLimitedError)
    assert waited_again <= read_bound()


async def test_pressone_hangs(rig: Rig) -> None:
    """PressOne's usage endpoint and token endpoint never answering: ``TransportError``."""
    rig.server.usage_default = hang
    async with rig.pressone() as client:
        result, waited = await rig.timed(client.sims.usage(ICCID))
    assert isinstance(result, TransportError)
    assert waited <= read_bound()
    rig.server.token = hang
    async with rig.pressone() as client:
        result, waited = await rig.timed(client.sims.usage(OTHER))
    assert isinstance(result, TransportError)
    assert waited <= read_bound()


def test_bounds_are_tight_enough() -> None:
    """The bounds used above cannot pass a one-period default of a minute slept through."""
    assert read_bound() < 60.0
    assert SWEEP_REQUEUES * (CAP + JITTER + TIMEOUT) + SLACK < 60.0

"""Rate-limit promises under failure: permits never leak, long cool-downs never put callers to
sleep, a 429 is charged to the limit that tripped it, sends are stamped in every window, and
every configured limit really holds requests back.

Time is virtual (``ManualClock``) wherever it can be; arrivals are counted where the requests
land (aioresponses callbacks, the loopback emulator), never through the client's own stats.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import msgspec
import pytest
from aioresponses import aioresponses
from yarl import URL

from esim_async import (
    AiraloClient,
    ManualClock,
    Rate,
    RateLimitedError,
    ServerError,
    TransportError,
)
from esim_async.auth import TokenManager
from esim_async.backends.memory import MemoryStore
from esim_async.limits import EndpointLimiter, Reply
from esim_async.models.auth import Token
from esim_async.stats import ClientStats
from esim_async.testing import Emulator, Fleet, ServerLimits
from esim_async.transport import Request, Transport

from .test_limits import max_in_any_window

BASE = "https://partners-api.airalo.com"
TOKEN_URL = f"{BASE}/v2/token"
USAGE_RE = re.compile(r"^https://partners-api\.airalo\.com/v2/sims/(\d+)/usage$")
PACKAGES_RE = re.compile(r"^https://partners-api\.airalo\.com/v2/packages(\?.*)?$")
ICCIDS = [f"89444654000002672{i:02d}" for i in range(20)]
USAGE_OK = {
    "data": {"remaining": 512, "total": 1024, "status": "ACTIVE"},
    "meta": {"message": "api.succes"},
}
TOKEN_OK = {
    "data": {"token_type": "Bearer", "expires_in": 86400, "access_token": "tok-1"},
    "meta": {"message": "success"},
}
TOO_MANY = {"message": "Too Many Attempts."}


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


class Arrivals:
    """Virtual arrival times of requests, recorded where they land (an aioresponses callback)."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.times: dict[str, list[float]] = defaultdict(list)

    def record(self, name: str, *, takes: float = 0.0) -> Callable[..., None]:
        """A callback counting an arrival under ``name``; the answer then ``takes`` seconds."""

        def callback(url: URL, **_: Any) -> None:
            match = USAGE_RE.match(str(url))
            self.times[name].append(self.clock.now())
            if match is not None:
                self.times[f"{name}:{match.group(1)}"].append(self.clock.now())
            if takes:
                self.clock.advance(takes)

        return callback

    def all(self) -> list[float]:
        return sorted(t for name, ts in self.times.items() if ":" not in name for t in ts)


def usage_url(iccid: str) -> str:
    return f"{BASE}/v2/sims/{iccid}/usage"


def client_on(clock: ManualClock, **options: Any) -> AiraloClient:
    return AiraloClient("my-id", "my-secret-value", clock=clock, **options)


# ------------------------------------------------------------------ permits never leak


async def test_failed_token_fetches_give_the_usage_permits_back(mocked: aioresponses) -> None:
    """Five usage calls fail on a 503 token answer (no retries): their permits come back, so
    the sixth call still goes out instead of waiting forever."""
    clock = ManualClock()
    for _ in range(5):
        mocked.post(TOKEN_URL, status=503, body=b"")
    mocked.post(TOKEN_URL, payload=TOKEN_OK, repeat=True)
    mocked.get(USAGE_RE, payload=USAGE_OK, repeat=True)
    async with client_on(clock, max_retries=0, token_rate=None) as client:
        for iccid in ICCIDS[:5]:
            with pytest.raises(ServerError):
                await client.sims.usage(iccid)
        async with asyncio.timeout(5):  # a hang guard only
            usage = await client.sims.usage(ICCIDS[5])
    assert usage.remaining == 512


async def test_callers_timing_out_during_a_slow_token_fetch_give_their_permits_back(
    mocked: aioresponses,
) -> None:
    clock = ManualClock()
    slow = asyncio.Event()

    async def slow_token(url: URL, **_: Any) -> None:
        if not slow.is_set():
            slow.set()
            await asyncio.sleep(0.5)

    mocked.post(TOKEN_URL, payload=TOKEN_OK, repeat=True, callback=slow_token)
    mocked.get(USAGE_RE, payload=USAGE_OK, repeat=True)
    async with client_on(clock, token_rate=None) as client:
        timed_out = await asyncio.gather(
            *(asyncio.wait_for(client.sims.usage(i), 0.1) for i in ICCIDS[:5]),
            return_exceptions=True,
        )
        assert all(isinstance(r, TimeoutError) for r in timed_out)
        async with asyncio.timeout(5):  # a hang guard only
            usage = await client.sims.usage(ICCIDS[5])
    assert usage.remaining == 512


async def test_cancelled_while_connecting_gives_the_permit_back() -> None:
    """A call cancelled while its connection is being set up (here: waiting for the only
    pooled connection) sent nothing: its permit goes back to the budget."""
    clock = ManualClock()
    fleet = Fleet.generate(4, seed=41)
    a, b, c, d = fleet.iccids()
    arrived: dict[str, float] = {}
    async with Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu:
        emu.on_request = lambda kind, req: arrived.setdefault(
            req.match_info.get("iccid", kind), clock.now()
        )
        async with AiraloClient(
            "id",
            "secret",
            base_url=emu.url,
            clock=clock,
            company_rate=Rate(3, 100.0),
            iccid_rate=None,
            token_rate=None,
            connection_limit=1,
        ) as client:
            await client.sims.usage(a)
            emu.faults.slow_seconds = 0.5
            emu.inject("usage", "slow")
            holding = asyncio.create_task(client.sims.usage(b))  # holds the only connection
            while b not in arrived:
                await asyncio.sleep(0.01)
            connecting = asyncio.create_task(client.sims.usage(c))
            await asyncio.sleep(0.05)
            connecting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await connecting
            await client.sims.usage(d)
            await holding
    assert c not in arrived
    # a and b went out; c's permit came back, so d needed no new window.
    assert arrived[d] < 100.0


async def test_closing_the_transport_before_the_send_gives_the_permit_back() -> None:
    """The client closes while a request waits for its token: the request ends with an error
    before anything is written, and its permit goes back."""
    clock = ManualClock()
    limiter = EndpointLimiter(
        "usage", shared=Rate(1, 100.0), per_key=None, clock=clock, margin=0.0, stamp_sends=True
    )
    gate = asyncio.Event()

    async def slow_token() -> Token:
        await gate.wait()
        return Token(access_token="tok-1", expires_in=3600)

    transport = Transport(BASE, clock=clock, stats=ClientStats())
    transport.auth = TokenManager(slow_token, clock=clock)
    request = Request("GET", "/v2/balance", msgspec.json.Decoder(), limiter=limiter)
    call = asyncio.create_task(transport.request(request))
    await asyncio.sleep(0.01)
    await transport.aclose()
    gate.set()
    with pytest.raises(TransportError, match="closed"):
        await call
    async with asyncio.timeout(5):  # a hang guard only
        await limiter.acquire()
    assert clock.now() == 0.0  # the closed request's permit was free again at once
    await limiter.aclose()


class _CancelOnAdmission(MemoryStore):
    """Cancels a chosen task at the very moment the store admits it."""

    victim: asyncio.Task[Any] | None = None

    async def reserve(self, *args: Any, **kwargs: Any) -> Reply:
        reply = await super().reserve(*args, **kwargs)
        # Cancelled after the admission is handed over, before the waiter runs again.
        if not reply.wait and self.victim is not None and not self.victim.done():
            asyncio.get_running_loop().call_soon(self.victim.cancel)
            self.victim = None
        return reply


async def test_admitted_then_cancelled_waiter_releases_its_permit() -> None:
    clock = ManualClock()
    store = _CancelOnAdmission(clock)
    limiter = EndpointLimiter(
        "usage",
        shared=Rate(1, 10.0),
        per_key=None,
        clock=clock,
        margin=0.0,
        stamp_sends=True,
        store=store,
    )
    first = await limiter.acquire()
    first.mark(0.0)
    victim = asyncio.create_task(limiter.acquire())
    store.victim = victim
    with pytest.raises(asyncio.CancelledError):
        await victim
    after = await limiter.acquire()
    # The victim was admitted at 10 and never sent: that slot is free again.
    assert after.time == 10.0
    await limiter.aclose()


# ------------------------------------------------------------------ Retry-After beyond the cap


async def test_retry_after_beyond_the_cap_does_not_put_the_endpoint_to_sleep(
    mocked: aioresponses, payload: Callable[[str], bytes]
) -> None:
    clock = ManualClock()
    mocked.post(TOKEN_URL, payload=TOKEN_OK, repeat=True)
    mocked.get(PACKAGES_RE, status=429, payload=TOO_MANY, headers={"Retry-After": "3600"})
    mocked.get(PACKAGES_RE, body=payload("airalo/packages_200.json"), repeat=True)
    async with client_on(clock) as client:
        with pytest.raises(RateLimitedError) as first:
            await client.packages.page()
        assert first.value.retry_after == 3600
        with pytest.raises(RateLimitedError) as later:
            await client.packages.page()
        assert later.value.retry_after is not None and 0 < later.value.retry_after <= 3600
    sent = [k for k in mocked.requests if k[0] == "GET" and "packages" in str(k[1])]
    assert sum(len(mocked.requests[k]) for k in sent) == 1


async def test_absurd_retry_after_raises_instead_of_sleeping_forever(
    mocked: aioresponses,
) -> None:
    clock = ManualClock()
    mocked.post(TOKEN_URL, status=429, payload=TOO_MANY, headers={"Retry-After": "1e300"})
    mocked.post(TOKEN_URL, payload=TOKEN_OK, repeat=True)
    mocked.get(USAGE_RE, payload=USAGE_OK, repeat=True)
    async with client_on(clock) as client:
        with pytest.raises(RateLimitedError):
            await client.sims.usage(ICCIDS[0])
        with pytest.raises(RateLimitedError) as later:
            await client.sims.usage(ICCIDS[1])
        assert later.value.retry_after is not None and later.value.retry_after > 1e299
    assert len(mocked.requests[("POST", URL(TOKEN_URL))]) == 1


async def test_one_esims_long_cool_down_refuses_that_esim_only(mocked: aioresponses) -> None:
    clock = ManualClock()
    arrivals = Arrivals(clock)
    mocked.post(TOKEN_URL, payload=TOKEN_OK, repeat=True)
    mocked.get(
        usage_url(ICCIDS[0]),
        status=429,
        payload=TOO_MANY,
        headers={"Retry-After": "3600", "X-RateLimit-Limit": "10"},
    )
    mocked.get(USAGE_RE, payload=USAGE_OK, repeat=True, callback=arrivals.record("usage"))
    async with client_on(clock) as client:
        with pytest.raises(RateLimitedError):
            await client.sims.usage(ICCIDS[0])
        with pytest.raises(RateLimitedError) as later:
            await client.sims.usage(ICCIDS[0], refresh=True)
        assert later.value.retry_after is not None and 0 < later.value.retry_after <= 3600
        await client.sims.usage(ICCIDS[1])
    assert len(mocked.requests[("GET", URL(usage_url(ICCIDS[0])))]) == 1
    assert arrivals.times[f"usage:{ICCIDS[1]}"][0] < 3600  # not held by the other eSIM


async def test_queued_waiters_are_refused_when_a_long_cool_down_starts() -> None:
    clock = ManualClock()
    limiter = EndpointLimiter("usage", shared=Rate(1, 10.0), per_key=None, clock=clock, margin=0.0)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    await limiter.penalize(3600.0, cap=60.0)
    with pytest.raises(RateLimitedError) as info:
        await waiter
    assert info.value.retry_after == pytest.approx(3600.0, abs=10.0)
    with pytest.raises(RateLimitedError):
        await limiter.acquire()
    assert limiter.waiters() == 0
    await limiter.aclose()


async def test_within_the_cap_a_cool_down_is_still_waited_out() -> None:
    clock = ManualClock()
    limiter = EndpointLimiter("usage", shared=Rate(10, 1.0), per_key=None, clock=clock, margin=0.0)
    await limiter.penalize(30.0, cap=60.0)
    await limiter.acquire()
    assert clock.now() == 30.0


async def test_a_sweep_finishes_when_one_esim_cools_down_beyond_the_cap(
    mocked: aioresponses,
) -> None:
    clock = ManualClock()
    mocked.post(TOKEN_URL, payload=TOKEN_OK, repeat=True)
    mocked.get(
        usage_url(ICCIDS[0]),
        status=429,
        payload=TOO_MANY,
        headers={"Retry-After": "3600", "X-RateLimit-Limit": "10"},
    )
    mocked.get(USAGE_RE, payload=USAGE_OK, repeat=True)
    async with (
        client_on(clock) as client,
        asyncio.timeout(5),
        client.sims.usage_many(ICCIDS[:4]) as results,
    ):
        got = {r.iccid: r async for r in results}
    assert isinstance(got[ICCIDS[0]].error, RateLimitedError)
    assert all(got[i].ok for i in ICCIDS[1:4])
    assert len(mocked.requests[("GET", URL(usage_url(ICCIDS[0])))]) == 1


# ------------------------------------------------------------------ charge the limit tripped


async def test_a_per_esim_429_leaves_the_company_budget_alone(mocked: aioresponses) -> None:
    clock = ManualClock()
    arrivals = Arrivals(clock)
    mocked.post(TOKEN_URL, payload=TOKEN_OK, repeat=True)
    mocked.get(
        usage_url(ICCIDS[0]),
        status=429,
        payload=TOO_MANY,
        headers={"Retry-After": "30", "X-RateLimit-Limit": "10"},
    )
    mocked.get(USAGE_RE, payload=USAGE_OK, repeat=True, callback=arrivals.record("usage"))
    async with client_on(clock, company_rate=Rate(8, 1.0), max_retries=0) as client:
        with pytest.raises(RateLimitedError):
            await client.sims.usage(ICCIDS[0])
        await asyncio.gather(*(client.sims.usage(i) for i in ICCIDS[1:9]))
        state = client.rate_limit_state()["usage"]
        assert state.effective_per_second == 8.0
        assert state.key_cooldowns == 1
    # The other eSIMs went out at once, at the full company rate (the 429'd request still
    # counts in our window, so seven of the eight fit in the first one).
    times = arrivals.all()
    assert len(times) == 8 and times[:7] == [0.0] * 7
    assert max_in_any_window(times, 1.0) == 7


async def test_a_429_whose_limit_matches_nothing_is_charged_to_the_esim(
    mocked: aioresponses,
) -> None:
    clock = ManualClock()
    arrivals = Arrivals(clock)
    mocked.post(TOKEN_URL, payload=TOKEN_OK, repeat=True)
    mocked.get(
        usage_url(ICCIDS[0]),
        status=429,
        payload=TOO_MANY,
        headers={"Retry-After": "1", "X-RateLimit-Limit": "3"},
    )
    mocked.get(USAGE_RE, payload=USAGE_OK, repeat=True, callback=arrivals.record("usage"))
    async with client_on(clock, company_rate=Rate(8, 1.0)) as client:
        await client.sims.usage(ICCIDS[0])  # retried after its own cool-down
        await asyncio.gather(*(client.sims.usage(i) for i in ICCIDS[1:9]))
        assert client.rate_limit_state()["usage"].effective_per_second == 8.0
    assert arrivals.times[f"usage:{ICCIDS[0]}"][0] >= 1.0  # its own cool-down was kept
    # The company budget was not cut: with the 429'd request, eight in one window.
    assert max_in_any_window(arrivals.all(), 1.0) == 7


async def test_a_ceiling_learned_from_a_company_429_recovers(mocked: aioresponses) -> None:
    clock = ManualClock()
    arrivals = Arrivals(clock)
    mocked.post(TOKEN_URL, payload=TOKEN_OK, repeat=True)
    for iccid in ICCIDS[:3]:
        mocked.get(usage_url(iccid), payload=USAGE_OK)
    mocked.get(
        usage_url(ICCIDS[3]),
        status=429,
        payload=TOO_MANY,
        headers={"Retry-After": "1", "X-RateLimit-Limit": "2"},
    )
    mocked.get(USAGE_RE, payload=USAGE_OK, repeat=True, callback=arrivals.record("usage"))
    async with client_on(
        clock, company_rate=Rate(4, 1.0), iccid_rate=None, max_retries=0
    ) as client:
        for iccid in ICCIDS[:3]:
            await client.sims.usage(iccid)
        with pytest.raises(RateLimitedError):  # the company window is full when it comes
            await client.sims.usage(ICCIDS[3])
        state = client.rate_limit_state()["usage"]
        assert state.cooldown_remaining > 0  # charged to the company ...
        assert state.ceiling == 2  # ... whose ceiling the header lowered
        clock.advance(600.0)
        start = len(arrivals.all())
        await asyncio.gather(*(client.sims.usage(i) for i in ICCIDS[4:8]))
        state = client.rate_limit_state()["usage"]
        assert state.ceiling is None
        assert state.effective_per_second == 4.0
    # Recovered: four requests in one window again.
    assert max_in_any_window(arrivals.all()[start:], 1.0) == 4


async def test_penalize_charges_the_limit_the_evidence_points_to() -> None:
    clock = ManualClock()

    def limiter() -> EndpointLimiter:
        return EndpointLimiter(
            "usage", shared=Rate(5, 1.0), per_key=Rate(10, 60.0), clock=clock, margin=0.0
        )

    quiet = limiter()
    await quiet.acquire("a")
    await quiet.penalize(1.0, 5, key="a")  # our window held one send: not the company's limit
    assert quiet.state().cooldown_remaining == 0 and quiet.state().key_cooldowns == 1

    busy = limiter()
    for key in "abcde":
        await busy.acquire(key)
    await busy.penalize(1.0, 5, key="e")  # five sends in the window: the company's limit
    assert busy.state().cooldown_remaining == 1.0 and busy.state().key_cooldowns == 0

    long = limiter()
    for key in "abcde":
        await long.acquire(key)
    await long.penalize(45.0, None, key="e")  # a 1 s window cannot ask for 45 s
    assert long.state().cooldown_remaining == 0 and long.state().key_cooldowns == 1

    per_key = limiter()
    for key in "abcde":
        await per_key.acquire(key)
    await per_key.penalize(1.0, 10, key="e")  # the per-eSIM count, not the company's
    assert per_key.state().cooldown_remaining == 0 and per_key.state().key_cooldowns == 1

    before = clock.now()
    await quiet.acquire("b")  # other keys go at once
    assert clock.now() == before
    await quiet.acquire("a")  # the cooled key waits
    assert clock.now() >= before + 1.0
    for lim in (quiet, busy, long, per_key):
        await lim.aclose()


# ------------------------------------------------------------------ send-time stamping


async def test_per_esim_window_counts_send_times_not_admission_times(
    mocked: aioresponses,
) -> None:
    """The first request waits 2 s for its token: the eSIM's window must count it from when it
    went out, or a later request lands inside the same server window."""
    clock = ManualClock()
    arrivals = Arrivals(clock)
    mocked.post(
        TOKEN_URL, payload=TOKEN_OK, repeat=True, callback=arrivals.record("token", takes=2)
    )
    mocked.get(USAGE_RE, payload=USAGE_OK, repeat=True, callback=arrivals.record("usage"))
    async with client_on(clock, iccid_rate=Rate(3, 10.0), company_rate=None) as client:
        await client.sims.usage(ICCIDS[0])
        for _ in range(3):
            await client.sims.usage(ICCIDS[0], refresh=True)
    times = arrivals.times["usage"]
    assert len(times) == 4
    assert max_in_any_window(times, 10.0) <= 3


async def test_company_window_counts_send_times_not_admission_times(
    mocked: aioresponses,
) -> None:
    clock = ManualClock()
    arrivals = Arrivals(clock)
    mocked.post(
        TOKEN_URL, payload=TOKEN_OK, repeat=True, callback=arrivals.record("token", takes=2)
    )
    mocked.get(USAGE_RE, payload=USAGE_OK, repeat=True, callback=arrivals.record("usage"))
    async with client_on(clock, company_rate=Rate(3, 10.0), iccid_rate=None) as client:
        for iccid in ICCIDS[:4]:
            await client.sims.usage(iccid)
    times = arrivals.times["usage"]
    assert len(times) == 4
    assert max_in_any_window(times, 10.0) <= 3


@pytest.mark.parametrize("which", ["per-esim", "company"])
async def test_server_never_sees_more_than_count_per_window_behind_a_slow_token(
    which: str,
) -> None:
    """End to end on loopback: the token endpoint answers late, so the first requests go out
    long after they were admitted. The emulator counts arrivals on its own clock."""
    fleet = Fleet.generate(6, seed=43)
    limits = ServerLimits(usage_iccid=None, usage_company=None, token=None)
    async with Emulator(fleet=fleet, limits=limits) as emu:
        emu.faults.slow_seconds = 0.4
        emu.inject("token", "slow")
        if which == "per-esim":
            rate = Rate(2, 0.6)
            options: dict[str, Any] = {"iccid_rate": rate, "company_rate": None}
        else:
            rate = Rate(3, 0.25)
            options = {"iccid_rate": None, "company_rate": rate}
        async with AiraloClient(
            "id", "secret", base_url=emu.url, token_rate=None, rate_margin=0.3, **options
        ) as client:
            if which == "per-esim":
                iccid = fleet.iccids()[0]
                for _ in range(4):
                    await client.sims.usage(iccid, refresh=True)
            else:
                await asyncio.gather(*(client.sims.usage(i) for i in fleet.iccids()))
        arrivals = sorted(emu.stats.usage_arrivals)
    assert len(arrivals) == (4 if which == "per-esim" else 6)
    assert max_in_any_window(arrivals, rate.period) <= rate.count


# ------------------------------------------------------------------ sandbox account limit


async def test_sandbox_account_limit_holds_usage_requests_too(mocked: aioresponses) -> None:
    clock = ManualClock()
    arrivals = Arrivals(clock)
    mocked.post(TOKEN_URL, payload=TOKEN_OK, repeat=True, callback=arrivals.record("token"))
    mocked.get(USAGE_RE, payload=USAGE_OK, repeat=True, callback=arrivals.record("usage"))
    async with client_on(clock, sandbox=True, sandbox_rate=Rate(3, 100.0)) as client:
        for iccid in ICCIDS[:4]:
            await client.sims.usage(iccid)
    assert len(arrivals.all()) == 5  # the token and four usage requests
    assert max_in_any_window(arrivals.all(), 100.0) <= 3


# ------------------------------------------------------------------ every configured limit holds


def _endpoint_cases(payload: Callable[[str], bytes]) -> dict[str, Any]:
    iccid = ICCIDS[0]
    return {
        "packages": (
            "GET",
            PACKAGES_RE,
            {"body": payload("airalo/packages_200.json")},
            lambda c: c.packages.page(),
        ),
        "product_information": (
            "GET",
            f"{BASE}/v2/packages/some-package/product-information",
            {"body": payload("airalo/product_information_200.json")},
            lambda c: c.packages.product_information("some-package"),
        ),
        "package_history": (
            "GET",
            f"{BASE}/v2/sims/{iccid}/packages",
            {"body": payload("airalo/sim_package_history_200.json")},
            lambda c: c.sims.package_history(iccid, refresh=True),
        ),
        "refund": (
            "POST",
            f"{BASE}/v2/refund",
            {"status": 202, "body": payload("airalo/refund_202.json")},
            lambda c: c.refunds.create([iccid], "OTHERS", notes="wrong country"),
        ),
        "simulator": (
            "POST",
            f"{BASE}/v2/simulator/webhook",
            {"payload": {"success": "Notification sent"}},
            lambda c: c.notifications.simulate("async_order_notification"),
        ),
    }


@pytest.mark.parametrize(
    "endpoint", ["packages", "product_information", "package_history", "refund", "simulator"]
)
async def test_every_endpoint_limit_holds_the_extra_calls_back(
    endpoint: str, mocked: aioresponses, payload: Callable[[str], bytes]
) -> None:
    method, url, answer, call = _endpoint_cases(payload)[endpoint]
    call: Callable[[AiraloClient], Awaitable[Any]]
    clock = ManualClock()
    arrivals = Arrivals(clock)
    mocked.post(TOKEN_URL, payload=TOKEN_OK, repeat=True)
    mocked.add(url, method, repeat=True, callback=arrivals.record(endpoint), **answer)
    async with client_on(clock, limits={endpoint: Rate(2, 50.0)}) as client:
        for _ in range(3):
            await call(client)
    times = arrivals.times[endpoint]
    assert len(times) == 3
    # The third call did not reach the server before the window of the first had passed.
    assert max_in_any_window(times, 50.0) == 2


async def test_per_key_window_is_checked_again_after_the_shared_wait() -> None:
    """Three concurrent requests for one key queue for the shared limit together; the third
    must wait for the key's window again once the shared limit lets it through."""
    clock = ManualClock()
    lim = EndpointLimiter(
        "usage", shared=Rate(1, 1.0), per_key=Rate(2, 10.0), clock=clock, margin=0.0
    )
    slots = await asyncio.gather(*(lim.acquire("k") for _ in range(3)))
    times = sorted(slot.time for slot in slots)
    assert max_in_any_window(times, 10.0) <= 2
    await lim.aclose()

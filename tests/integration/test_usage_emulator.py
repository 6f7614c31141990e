"""Usage against the loopback emulator: both dialects, strict limits, 429 storms, resends.

Fast limits, counts asserted, never durations.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import pytest

from esim_async import (
    AiraloClient,
    AuthenticationError,
    NotFoundError,
    PressOneClient,
    Rate,
    TransportError,
    UsageStatus,
)
from esim_async.backends.memory import MemoryBackend
from esim_async.limits import EndpointLimiter
from esim_async.testing import Emulator, Fleet, ServerLimits

from ..arrivals import ArrivalLog

FAST = ServerLimits(usage_iccid=Rate(3, 2.0), usage_company=Rate(8, 0.5), token=Rate(3, 5.0))


def fast_client(emu: Emulator, **kw: object) -> AiraloClient:
    options: dict[str, object] = {
        "iccid_rate": FAST.usage_iccid,
        "company_rate": FAST.usage_company,
        "token_rate": FAST.token,
        # The emulator shares the test's event loop: under a loaded CI machine its handlers
        # can start a hundred milliseconds late, which the server counts as arrival jitter; a
        # 30 % margin on 0.5 s windows absorbs it so the zero-429 assertions are deterministic.
        "rate_margin": 0.3,
    }
    options.update(kw)
    return AiraloClient("id", "secret", base_url=emu.url, **options)  # type: ignore[arg-type]


async def test_airalo_and_pressone_dialects() -> None:
    log = ArrivalLog()
    async with Emulator(fleet=Fleet.generate(10, seed=3), middlewares=[log.middleware]) as emu:
        iccid = emu.fleet.iccids()[0]
        expected = emu.fleet.sims[iccid]
        async with AiraloClient("id", "secret", base_url=emu.url) as airalo:
            usage = await airalo.sims.usage(iccid)
        assert usage.status == expected.status
        for path in (None, "/cusomter/v2/sims/{iccid}/usage"):
            async with PressOneClient(
                "id", "secret", base_url=emu.url, usage_path=path
            ) as pressone:
                p = await pressone.sims.usage(iccid)
            assert p.raw_remaining == expected.remaining
        assert emu.stats.arrivals["token"] == 3
        assert emu.stats.rate_limited == 0
    assert log.count() == 3
    log.assert_usage_within(company=emu.limits.usage_company, iccid=emu.limits.usage_iccid)


async def test_fleet_kinds_decode() -> None:
    fleet = Fleet.generate(200, seed=11)
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu,
        AiraloClient(
            "id", "secret", base_url=emu.url, iccid_rate=None, company_rate=None
        ) as client,
    ):
        results = {i: await client.sims.usage(i) for i in fleet.iccids()}
    kinds = Counter(s.kind for s in fleet.sims.values())
    assert len(kinds) >= 7  # every kind is represented
    for iccid, usage in results.items():
        sim = fleet.sims[iccid]
        if sim.kind == "unlimited":
            assert usage.remaining is None and usage.is_unlimited
        if sim.kind == "recycled":
            assert usage.status is UsageStatus.RECYCLED and usage.expired_at is None
        if sim.kind == "voice_text":
            assert usage.total_voice and usage.total_text


async def test_burst_over_many_iccids_draws_zero_429s() -> None:
    fleet = Fleet.generate(60, seed=5)
    log = ArrivalLog()
    async with (
        Emulator(fleet=fleet, limits=FAST, middlewares=[log.middleware]) as emu,
        fast_client(emu) as client,
    ):
        iccids = fleet.iccids()
        # Every ICCID asked four times concurrently: single flight + cache + limits.
        results = await asyncio.gather(*(client.sims.usage(i) for i in iccids * 4))
        assert len(results) == 240
        assert emu.stats.rate_limited == 0
        assert all(n == 1 for n in emu.stats.usage_by_iccid.values())
        assert emu.stats.usage_requests == 60
        assert client.stats.cache_hits + client.stats.coalesced == 180
        # refresh=True spends budget again, still without a 429 (per-ICCID 3 per 2 s).
        for _ in range(3):
            await asyncio.gather(*(client.sims.usage(i, refresh=True) for i in iccids[:10]))
        assert emu.stats.rate_limited == 0
        assert emu.stats.usage_requests == 90
    # What reached the server, counted outside the emulator: every window kept both limits.
    assert log.count() == 90
    log.assert_usage_within(company=FAST.usage_company, iccid=FAST.usage_iccid)


async def test_fixed_window_server_also_draws_zero_429s() -> None:
    limits = ServerLimits(
        usage_iccid=Rate(3, 2.0), usage_company=Rate(8, 0.5), token=Rate(3, 5.0), algorithm="fixed"
    )
    fleet = Fleet.generate(40, seed=6)
    log = ArrivalLog()
    async with (
        Emulator(fleet=fleet, limits=limits, middlewares=[log.middleware]) as emu,
        fast_client(emu) as client,
    ):
        await asyncio.gather(*(client.sims.usage(i) for i in fleet.iccids()))
        assert emu.stats.rate_limited == 0
        assert emu.stats.usage_requests == 40
    assert log.count() == 40
    # The client keeps the strict reading (any window), which no fixed window can refuse.
    log.assert_usage_within(company=limits.usage_company, iccid=limits.usage_iccid)


async def test_arrival_log_does_not_trust_the_server() -> None:
    """A server that limits nothing answers no 429 to a client running over the limits; the
    independent arrival log still sees every window that held too many."""
    fleet = Fleet.generate(20, seed=7)
    log = ArrivalLog()
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited(), middlewares=[log.middleware]) as emu,
        fast_client(emu, company_rate=Rate(20, 0.5), iccid_rate=None) as client,
    ):
        await asyncio.gather(*(client.sims.usage(i) for i in fleet.iccids()))
        await asyncio.gather(*(client.sims.usage(i, refresh=True) for i in fleet.iccids()[:4]))
        await asyncio.gather(*(client.sims.usage(i, refresh=True) for i in fleet.iccids()[:4]))
        assert emu.stats.rate_limited == 0
    assert log.count() == 28
    problems = log.violations(company=FAST.usage_company, per_key=Rate(2, 60.0))
    assert any(p.startswith("company-wide: ") for p in problems)
    assert sum(p.startswith("key ") for p in problems) == 4
    with pytest.raises(AssertionError, match="rate limits broken at arrival"):
        log.assert_usage_within(company=FAST.usage_company)


async def test_429_storm_adapts_and_every_call_succeeds() -> None:
    # The server allows far less than the client believes (another client on the account).
    server = ServerLimits(usage_iccid=None, usage_company=Rate(2, 0.5), token=None)
    fleet = Fleet.generate(12, seed=8)
    async with (
        Emulator(fleet=fleet, limits=server) as emu,
        fast_client(
            emu, company_rate=Rate(20, 0.5), iccid_rate=None, max_retries=8, retry_after_cap=5.0
        ) as client,
    ):
        results = await asyncio.gather(*(client.sims.usage(i) for i in fleet.iccids()))
        assert len(results) == 12
        assert emu.stats.rate_limited >= 1
        assert client.stats.rate_limited == emu.stats.rate_limited
        # One cool-down for everyone, not one per request: far fewer 429s than a blind retry
        # loop would draw (every waiting call retrying every time).
        assert emu.stats.rate_limited < 12 * 3
        state = client.rate_limit_state()["usage"]
        assert state.last_headers.get("X-RateLimit-Limit") == "2"


async def test_expired_token_is_refreshed_once() -> None:
    fleet = Fleet.generate(5, seed=9)
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu,
        AiraloClient("id", "secret", base_url=emu.url) as client,
    ):
        a, b = fleet.iccids()[:2]
        await client.sims.usage(a)
        emu.expire_tokens()
        await client.sims.usage(b)
        assert emu.stats.tokens_issued == 2
        assert client.stats.token_requests == 2


async def test_wrong_credentials_and_unknown_iccid() -> None:
    fleet = Fleet.generate(3)
    async with Emulator(fleet=fleet, credentials={"id": "right"}) as emu:
        async with AiraloClient("id", "wrong", base_url=emu.url) as bad:
            with pytest.raises(AuthenticationError) as info:
                await bad.sims.usage(fleet.iccids()[0])
            assert "wrong" not in str(info.value)
        async with AiraloClient("nobody", "right", base_url=emu.url) as unknown:
            with pytest.raises(AuthenticationError, match="client_id"):
                await unknown.sims.usage(fleet.iccids()[0])
        async with AiraloClient("id", "right", base_url=emu.url) as good:
            with pytest.raises(NotFoundError):
                await good.sims.usage("8999999999999999999")


async def test_faults_are_retried_and_per_call_timeout() -> None:
    fleet = Fleet.generate(4)
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu,
        AiraloClient(
            "id", "secret", base_url=emu.url, iccid_rate=None, company_rate=None
        ) as client,
    ):
        a, b, c, d = fleet.iccids()
        emu.inject("usage", "500", "html")
        assert (await client.sims.usage(a)).status == fleet.sims[a].status
        assert client.stats.retries == 2
        emu.inject("usage", "drop")
        assert (await client.sims.usage(b)).status == fleet.sims[b].status
        emu.faults.slow_seconds = 5.0
        emu.inject("usage", "slow")
        with pytest.raises(TransportError, match="timed out"):
            await client.sims.usage(c, timeout=0.2, max_retries=0)
        assert (await client.sims.usage(d)).status == fleet.sims[d].status


class CountingBackend(MemoryBackend):
    """Counts every permit the usage limiter hands out."""

    def __init__(self) -> None:
        self.permits: Counter[str] = Counter()

    def limiter(self, name, *, shared, per_key, margin, clock):  # type: ignore[no-untyped-def]
        backend = self

        class Counting(EndpointLimiter):
            async def acquire(self, key=None, priority=0):  # type: ignore[no-untyped-def]
                await super().acquire(key, priority)
                backend.permits[name.rsplit(":", 1)[-1]] += 1

        return Counting(name, shared=shared, per_key=per_key, clock=clock, margin=margin)


@pytest.mark.parametrize("own_session", [True, False], ids=["own-session", "caller-session"])
async def test_every_send_after_a_dropped_connection_takes_a_permit(own_session: bool) -> None:
    """A server that drops idle keep-alive connections makes a GET go out again on a new
    connection: on our own session the pipeline's retry sends it, on a caller's session aiohttp
    re-sends it by itself. Either way every request that reaches the server took a permit."""
    arrivals: Counter[str] = Counter()
    served_per_connection: Counter[int] = Counter()
    body = (
        b'{"data": {"remaining": 1, "total": 2, "status": "ACTIVE"},'
        b' "meta": {"message": "api.succes"}}'
    )
    token = b'{"data": {"access_token": "t0k3n-value", "expires_in": 3600}}'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = id(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode()
                length = 0
                for h in head.split(b"\r\n")[1:]:
                    if h.lower().startswith(b"content-length:"):
                        length = int(h.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                kind = "token" if "/token" in line else "usage"
                arrivals[kind] += 1
                if kind == "usage" and served_per_connection[conn] >= 1:
                    break  # drop a reused keep-alive connection without answering
                served_per_connection[conn] += 1
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
    session = None if own_session else aiohttp.ClientSession()
    try:
        async with AiraloClient(
            "id",
            "secret",
            base_url=f"http://127.0.0.1:{port}",
            backend=backend,
            max_retries=3,
            session=session,
        ) as client:
            fleet = Fleet.generate(4, seed=2).iccids()
            for iccid in fleet:
                await client.sims.usage(iccid)
            assert arrivals["usage"] == backend.permits["usage"]
            if own_session:
                assert client.stats.resends == 0  # aiohttp's own re-send is off ...
                assert client.stats.retries >= 1  # ... our retry sent it, with a permit
                assert arrivals["usage"] == len(fleet) + client.stats.retries
            else:
                assert client.stats.resends >= 1  # aiohttp re-sent, the middleware counted
                # (a re-sent request can be dropped too, and then the pipeline retries it)
                assert arrivals["usage"] == (
                    len(fleet) + client.stats.resends + client.stats.retries
                )
    finally:
        if session is not None:
            await session.close()
        server.close()
        await server.wait_closed()


async def test_shipped_pytest_fixture(esim_emulator: Emulator) -> None:
    """The ``esim_emulator`` fixture users get from the package's pytest plugin."""
    assert esim_emulator.url.startswith("http://127.0.0.1:")
    async with AiraloClient("id", "secret", base_url=esim_emulator.url) as client:
        iccid = esim_emulator.fleet.iccids()[0]
        assert (await client.sims.usage(iccid)).status == esim_emulator.fleet.sims[iccid].status

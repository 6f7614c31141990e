"""The Redis backend against a real redis-server on 127.0.0.1 (skipped without one, unless
ESIM_REQUIRE_REDIS=1). Counts are asserted, never rates."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esim_async import AiraloClient, MonotonicClock, Rate
from esim_async.backends.redis import BackendUnavailableError, RedisBackend
from esim_async.limits import EndpointLimiter, Priority, Slot
from esim_async.testing import Emulator, Fleet, ServerLimits

from ..arrivals import ArrivalLog
from ..conftest import RedisServer
from ..limiter.test_limits import max_in_any_window

ROOT = Path(__file__).resolve().parents[2]


def backend(server: RedisServer, **kw: object) -> RedisBackend:
    return RedisBackend.from_url(server.url, prefix="t", **kw)  # type: ignore[arg-type]


async def test_windows_are_kept_on_the_servers_clock(redis_server: RedisServer) -> None:
    b = backend(redis_server)
    clock = MonotonicClock()
    limiter = b.limiter(
        "acct:usage", shared=Rate(3, 0.2), per_key=Rate(2, 1.0), margin=0.0, clock=clock
    )
    sends: list[float] = []
    key_sends: list[float] = []
    for i in range(12):
        key = "8944" if i % 4 == 0 else None
        (await limiter.acquire(key)).mark(clock.now())
        sends.append(clock.now())
        if key is not None:
            key_sends.append(clock.now())
    assert max_in_any_window(sends, 0.2) <= 3
    assert max_in_any_window(key_sends, 1.0) <= 2  # at most 2 per second for one ICCID
    await limiter.aclose()
    await b.aclose()


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    gaps=st.lists(st.floats(min_value=0, max_value=0.05), min_size=4, max_size=12),
    lags=st.lists(st.floats(min_value=0, max_value=0.08), min_size=12, max_size=12),
    count=st.integers(min_value=1, max_value=4),
)
def test_two_processes_keep_one_window_on_arbitrary_schedules(
    redis_server_bin: str,
    tmp_path_factory: pytest.TempPathFactory,
    gaps: list[float],
    lags: list[float],
    count: int,
) -> None:
    """Two "processes" (each its own backend) share one window; each request goes out after
    its own lag (a token, a slow connection): their sends together keep the window."""
    server = RedisServer(redis_server_bin, tmp_path_factory.mktemp("r"))
    server.start()
    clock = MonotonicClock()

    async def run() -> list[float]:
        backends = [backend(server), backend(server)]
        limiters = [
            b.limiter("acct:usage", shared=Rate(count, 0.1), per_key=None, margin=0.0, clock=clock)
            for b in backends
        ]
        sends: list[float] = []

        async def request(i: int) -> None:
            slot = await limiters[i % 2].acquire()
            await asyncio.sleep(lags[i])
            slot.mark(clock.now())
            sends.append(clock.now())

        tasks = []
        for i, gap in enumerate(gaps):
            await asyncio.sleep(gap)
            tasks.append(asyncio.create_task(request(i)))
        async with asyncio.timeout(20):  # a hang guard only
            await asyncio.gather(*tasks)
        for lim, b in zip(limiters, backends, strict=True):
            await lim.aclose()
            await b.aclose()
        return sends

    try:
        sends = asyncio.run(run())
    finally:
        server.stop()
    assert len(sends) == len(gaps)
    assert max_in_any_window(sorted(sends), 0.1) <= count


async def test_quarantine_after_redis_lost_its_state(redis_server: RedisServer) -> None:
    b = backend(redis_server)
    clock = MonotonicClock()
    limiter = b.limiter("q", shared=Rate(5, 0.5), per_key=None, margin=0.0, clock=clock)
    (await limiter.acquire()).mark(clock.now())
    await b.redis.flushall()  # as after a restart without persistence
    lost = clock.now()
    (await limiter.acquire()).mark(clock.now())
    assert clock.now() >= lost + 0.5 * 0.99  # one period before anything goes out
    assert limiter.state().quarantines == 1
    await limiter.aclose()
    await b.aclose()


async def test_token_cache_and_single_flight_are_shared(redis_server: RedisServer) -> None:
    fleet = Fleet.generate(10, seed=31)
    async with Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu:
        a = AiraloClient("acct", "s1", base_url=emu.url, backend=backend(redis_server))
        b = AiraloClient("acct", "s1", base_url=emu.url, backend=backend(redis_server))
        async with a, b:
            iccid = fleet.iccids()[0]
            # Two "processes" ask for the same ICCID at once: one token, one request.
            first, second = await asyncio.gather(a.sims.usage(iccid), b.sims.usage(iccid))
            assert first.status == second.status
            assert emu.stats.tokens_issued == 1
            assert emu.stats.usage_by_iccid[iccid] == 1
            # A poll answered in one process is a cache hit in the other.
            other = fleet.iccids()[1]
            await a.sims.usage(other)
            await b.sims.usage(other)
            assert emu.stats.usage_by_iccid[other] == 1
            assert b.stats.cache_hits >= 1
            # Negative entries are shared too.
            with pytest.raises(Exception, match="404"):
                await a.sims.usage("8999999999999999998")
            with pytest.raises(Exception, match="404"):
                await b.sims.usage("8999999999999999998")
            assert emu.stats.usage_by_iccid["8999999999999999998"] == 1
            # Invalidating (a low-data webhook) drops the shared entry as well.
            a.sims.invalidate_usage(other)
            b.sims.invalidate_usage(other)
            await asyncio.sleep(0.05)
            await b.sims.usage(other)
            assert emu.stats.usage_by_iccid[other] == 2


async def test_cool_down_is_shared(redis_server: RedisServer) -> None:
    clock = __import__("esim_async").MonotonicClock()
    one, two = backend(redis_server), backend(redis_server)
    first = one.limiter("acct:usage", shared=Rate(50, 1.0), per_key=None, margin=0.0, clock=clock)
    second = two.limiter("acct:usage", shared=Rate(50, 1.0), per_key=None, margin=0.0, clock=clock)
    await first.penalize(30.0, 5)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await second.acquire()
    # the other process waits out the same cool-down
    assert second.state().cooldown_remaining > 25
    state = await two.redis.hgetall(two.key("acct:usage", "state"))
    assert int(state[b"ceiling"]) == 5  # the count the 429 taught is shared as well
    await one.aclose()
    await two.aclose()


async def test_unreachable_redis_fails_closed_with_a_typed_error() -> None:
    dead = RedisBackend.from_url("redis://127.0.0.1:9/0", wait=0.3, socket_timeout=0.2)
    async with (
        Emulator(fleet=Fleet.generate(2)) as emu,
        AiraloClient("acct", "s", base_url=emu.url, backend=dead) as client,
    ):
        with pytest.raises(BackendUnavailableError, match="Redis unavailable"):
            await client.sims.usage(emu.fleet.iccids()[0])
        assert emu.stats.usage_requests == 0  # nothing went out unlimited


def _two_per_second(backend: RedisBackend, emu: Emulator) -> AiraloClient:
    """A client whose usage budget comes to 2 per second (8 shared by 4 processes when Redis
    is down, or 2 in Redis)."""
    return AiraloClient(
        "acct",
        "s",
        base_url=emu.url,
        backend=backend,
        company_rate=Rate(8 if backend.fail_open else 2, 1.0),
        iccid_rate=None,
    )


async def test_fail_open_falls_back_to_a_share_of_the_budget() -> None:
    """Redis is down and four processes share 8 per second: this one sends 2 at once, then
    waits a window for the next 2."""
    dead = RedisBackend.from_url("redis://127.0.0.1:9/0", wait=0.3, socket_timeout=0.2, fail_open=4)
    limits = ServerLimits(usage_company=Rate(8, 1.0), usage_iccid=None, token=None)
    log = ArrivalLog()
    async with (
        Emulator(fleet=Fleet.generate(4), limits=limits, middlewares=[log.middleware]) as emu,
        _two_per_second(dead, emu) as client,
    ):
        await client.account.balance()  # the token first: each usage request goes when admitted
        results = await asyncio.gather(*(client.sims.usage(i) for i in emu.fleet.iccids()))
        assert len(results) == 4
        assert emu.stats.rate_limited == 0
    times = sorted(log.times())
    assert len(times) == 4
    assert max_in_any_window(times, 1.0) == 2, times  # 8 per second shared by 4


async def _arrivals_behind_a_slow_token(backend: RedisBackend) -> list[float]:
    """Four eSIMs read at once while the token answers 0.8 s late: the server's arrival times."""
    limits = ServerLimits(usage_company=Rate(8, 1.0), usage_iccid=None, token=None)
    log = ArrivalLog()
    async with (
        Emulator(fleet=Fleet.generate(4), limits=limits, middlewares=[log.middleware]) as emu,
        _two_per_second(backend, emu) as client,
    ):
        emu.faults.slow_seconds = 0.8
        emu.inject("token", "slow")
        await asyncio.gather(*(client.sims.usage(i) for i in emu.fleet.iccids()))
    return sorted(log.times())


async def test_redis_window_counts_send_times_behind_a_slow_token(
    redis_server: RedisServer,
) -> None:
    times = await _arrivals_behind_a_slow_token(backend(redis_server))
    assert len(times) == 4
    assert max_in_any_window(times, 1.0) == 2, times


async def test_fail_open_window_counts_send_times_behind_a_slow_token() -> None:
    dead = RedisBackend.from_url("redis://127.0.0.1:9/0", wait=0.3, socket_timeout=0.2, fail_open=4)
    times = await _arrivals_behind_a_slow_token(dead)
    assert len(times) == 4
    assert max_in_any_window(times, 1.0) == 2, times


async def test_four_processes_share_one_budget(redis_server: RedisServer) -> None:
    size, seed, rate = 120, 33, 20
    fleet = Fleet.generate(size, seed=seed)
    limits = ServerLimits(usage_company=Rate(rate, 1.0), usage_iccid=Rate(10, 60.0), token=None)
    async with Emulator(fleet=fleet, limits=limits) as emu:
        cmd = [
            sys.executable,
            "-m",
            "tests.integration.redis_worker",
            redis_server.url,
            emu.url,
            str(size),
            str(seed),
            str(rate),
        ]
        procs = [
            await asyncio.create_subprocess_exec(
                *cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for _ in range(4)
        ]
        outs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 120)
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err.decode()[-2000:]
        summaries = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outs]
    assert all(s["ok"] == size and s["errors"] == 0 for s in summaries)
    assert emu.stats.rate_limited == 0
    assert Counter(emu.stats.usage_by_iccid.values()) == {1: size}  # each ICCID fetched once
    assert emu.stats.tokens_issued == 1


class SendLog:
    """When the client's requests to one endpoint went out, by key: a witness kept outside the
    server, so that what the client sent can be told apart from what the path made of it.

    It wraps the public :meth:`EndpointLimiter.acquire` and :meth:`Slot.mark`: a slot that the
    limiter ``name`` handed out is recorded with its send time (the connection was ready and
    the request was written) when the transport stamps it.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.sends: list[tuple[str | None, float]] = []
        owners: dict[Slot, str | None] = {}
        acquire, mark = EndpointLimiter.acquire, Slot.mark

        async def acquiring(
            limiter: EndpointLimiter,
            key: str | None = None,
            priority: Priority = Priority.INTERACTIVE,
        ) -> Slot:
            slot = await acquire(limiter, key, priority)
            if limiter.name.endswith(name):
                owners[slot] = key
            return slot

        def marking(slot: Slot, t: float) -> None:
            mark(slot, t)
            if slot in owners and slot.sent:
                self.sends.append((owners.pop(slot), slot.time))

        monkeypatch.setattr(EndpointLimiter, "acquire", acquiring)
        monkeypatch.setattr(Slot, "mark", marking)

    def times(self) -> list[float]:
        return sorted(t for _, t in self.sends)

    def delays(self, arrivals: dict[str, list[float]]) -> list[float]:
        """Send -> arrival time of each request (the n-th send of a key with its n-th
        arrival; every send must have arrived)."""
        sent: defaultdict[str, list[float]] = defaultdict(list)
        for key, t in self.sends:
            assert key is not None
            sent[key].append(t)
        assert sorted(sent) == sorted(arrivals)
        return [
            got - out
            for key, times in sent.items()
            for out, got in zip(sorted(times), arrivals[key], strict=True)
        ]


async def test_redis_restart_mid_sweep_loses_no_iccid(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis restarts (losing every window) in the middle of a sweep at the full budget, and
    another process sharing the budget goes on right after it: every eSIM is answered, and the
    usage requests as they went out never exceed the budget in any window, the restart
    included (the first process to reach Redis again finds the state lost, and every process
    holds one period of the shared limit).

    The server counts arrivals, not sends. The client keeps at most ``count`` sends in any
    window of ``period * (1 + margin)``, so ``count + 1`` arrivals within one ``period`` need
    two requests whose send -> arrival delays differ by more than ``margin * period``. The
    emulator shares this process's event loop and the machine's CPU: on a loaded machine a
    stalled loop stamps one arrival late while a later request arrives on time. So zero 429s
    is owed only while the delays varied less than that; past it, the path (not the client)
    bunched the arrivals, and the sends are what the client answers for.
    """
    period, count, margin = 1.0, 20, 0.02  # the default margin
    fleet = Fleet.generate(60, seed=34)
    sweep, other = fleet.iccids()[:50], fleet.iccids()[50:]
    limits = ServerLimits(usage_company=Rate(count, period), usage_iccid=None, token=None)
    sends, log = SendLog(monkeypatch, "usage"), ArrivalLog()

    def process(emu: Emulator) -> AiraloClient:
        return AiraloClient(
            "acct",
            "s",
            base_url=emu.url,
            backend=backend(redis_server, wait=10.0),
            company_rate=Rate(count, period),
            iccid_rate=None,
            rate_margin=margin,
        )

    async with (
        Emulator(fleet=fleet, limits=limits, middlewares=[log.middleware]) as emu,
        process(emu) as client,
        process(emu) as peer,
    ):
        await peer.sims.usage(other[0])  # the peer has seen the shared state
        got = []
        async with client.sims.usage_many(sweep) as results:
            async for r in results:
                got.append(r)
                if len(got) == 25:  # the sweep has just filled a window
                    await asyncio.to_thread(redis_server.stop)
                    await asyncio.to_thread(redis_server.start)
                    await asyncio.gather(*(peer.sims.usage(i) for i in other[1:]))
        assert Counter(r.iccid for r in got) == Counter(sweep)
        assert all(r.ok for r in got), Counter(type(r.error).__name__ for r in got)
        states = (client.rate_limit_state()["usage"], peer.rate_limit_state()["usage"])
        assert sum(state.quarantines for state in states) >= 1
        assert sorted(log.times_by_key()) == sorted(fleet.iccids())
        assert max_in_any_window(sends.times(), period) <= count, sends.times()
        delays = sends.delays(log.times_by_key())
        if max(delays) - min(delays) < margin * period:
            assert emu.stats.rate_limited == 0, delays

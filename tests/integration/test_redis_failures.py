"""What the Redis backend does when Redis fails: it pauses, dies, restarts or forgets, and the
backend keeps its promises (fail closed together, fail open at a share of the budget, no
duplicate fetches, no waiting out its own ghosts). Real redis-server on 127.0.0.1 (skipped
without one, unless ESIM_REQUIRE_REDIS=1). Counts and errors are asserted, never durations;
time bounds are hang guards and fractions of the configured ``wait``."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.crc import key_slot

from esim_async import AiraloClient, ManualClock, MonotonicClock, Rate
from esim_async.backends.redis import BackendUnavailableError, RedisBackend
from esim_async.cache import CacheEntry
from esim_async.testing import Emulator, Fleet, ServerLimits

from ..conftest import RedisServer
from ..limiter.test_limits import max_in_any_window


def backend(server: RedisServer, **kw: Any) -> RedisBackend:
    return RedisBackend.from_url(server.url, prefix="t", **kw)


async def eventually(check: Callable[[], Awaitable[bool]], guard: float = 5.0) -> None:
    """Poll ``check`` until it holds (a hang guard, not a timing assertion)."""
    async with asyncio.timeout(guard):
        while not await check():
            await asyncio.sleep(0.05)


def count_round_trips(b: RedisBackend) -> list[tuple[Any, ...]]:
    """Record every command ``b`` sends (scripts included), in order."""
    sent: list[tuple[Any, ...]] = []
    original: Callable[..., Awaitable[Any]] = b.redis.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        sent.append(args)
        return await original(*args, **options)

    b.redis.execute_command = counting  # type: ignore[method-assign]
    return sent


# ---------------------------------------------------------------------------------- fail closed


async def test_queued_callers_fail_together_when_redis_dies(redis_server: RedisServer) -> None:
    wait = 0.8
    b = backend(redis_server, wait=wait, socket_timeout=0.2)
    limiter = b.limiter(
        "acct:usage", shared=Rate(1, 1.0), per_key=None, margin=0.0, clock=MonotonicClock()
    )
    await limiter.acquire()  # the first goes at once; the next ones queue for the window
    queued = [asyncio.create_task(limiter.acquire()) for _ in range(5)]
    await asyncio.sleep(0.05)
    await asyncio.to_thread(redis_server.stop)
    done, pending = await asyncio.wait(queued, timeout=10, return_when=asyncio.FIRST_EXCEPTION)
    assert any(t.exception() is not None for t in done)
    # The rest are told in the same breath, not one more ``wait`` each.
    _, still = await asyncio.wait(pending, timeout=wait / 3) if pending else (set(), set())
    assert not still, f"{len(still)} callers still waiting after the first was told"
    errors = [t.exception() for t in queued if t.exception() is not None]
    assert errors and all(isinstance(e, BackendUnavailableError) for e in errors)
    # Redis is known to be down: a new caller is refused without spending ``wait`` again.
    async with asyncio.timeout(wait / 2):
        with pytest.raises(BackendUnavailableError):
            await limiter.acquire()
    # It comes back: the backend notices by itself and admissions resume.
    await asyncio.to_thread(redis_server.start)

    async def admits() -> bool:
        try:
            await limiter.acquire()
        except BackendUnavailableError:
            return False
        return True

    await eventually(admits)
    await limiter.aclose()
    await b.aclose()


async def test_cache_lock_and_token_calls_fail_fast_once_redis_is_known_down(
    redis_server: RedisServer,
) -> None:
    wait = 1.0
    b = backend(redis_server, wait=wait, socket_timeout=0.2)
    cache = b.shared_cache("acct:usage", int, ttl=60.0, long_ttl=600.0)
    flight = b.flight("acct:usage")
    tokens = b.token_store("acct")
    await cache.set("k", CacheEntry(7, time.time(), 0.0))
    await asyncio.to_thread(redis_server.stop)
    assert await cache.get("k") is None  # the first call spends ``wait`` and learns
    async with asyncio.timeout(wait):  # ... the next ten do not, together
        for _ in range(5):
            assert await cache.get("k") is None
            await cache.set("k", CacheEntry(8, time.time(), 0.0))
        with pytest.raises(BackendUnavailableError):
            async with flight.lock("k"):
                pass
        with pytest.raises(BackendUnavailableError):
            await tokens.get()
    await asyncio.to_thread(redis_server.start)

    async def back() -> bool:
        await cache.set("k", CacheEntry(9, time.time(), 0.0))
        got = await cache.get("k")
        return got is not None and got.value == 9

    await eventually(back)
    await b.aclose()


async def test_a_sweep_fails_closed_at_once_when_redis_dies(redis_server: RedisServer) -> None:
    """Every eSIM still waiting gets its error within ``wait`` of Redis' death, not one after
    another."""
    wait = 0.5
    fleet = Fleet.generate(40, seed=44)
    limits = ServerLimits(usage_company=Rate(5, 1.0), usage_iccid=None, token=None)
    async with (
        Emulator(fleet=fleet, limits=limits) as emu,
        AiraloClient(
            "acct",
            "s",
            base_url=emu.url,
            backend=backend(redis_server, wait=wait, socket_timeout=0.2),
            company_rate=Rate(5, 1.0),
            iccid_rate=None,
        ) as client,
    ):
        got = []
        async with client.sims.usage_many(fleet.iccids()) as results:
            async for r in results:
                got.append(r)
                if len(got) == 3:
                    await asyncio.to_thread(redis_server.stop)
                    break
            async with asyncio.timeout(4 * wait):  # the rest, together
                async for r in results:
                    got.append(r)
        assert len(got) == 40
        failed = [r for r in got if not r.ok]
        assert failed and all(isinstance(r.error, BackendUnavailableError) for r in failed)
        assert emu.stats.usage_requests == len(got) - len(failed)  # nothing went out unlimited


# ------------------------------------------------------------------------------------ fail open


async def test_fail_open_keeps_its_share_of_the_budget_while_redis_stays_down() -> None:
    """Redis is down for good: the fallback does not stop for a per-eSIM period every few
    seconds; it admits budget/N per period, steadily."""
    dead = RedisBackend.from_url("redis://127.0.0.1:9/0", wait=0.3, socket_timeout=0.2, fail_open=2)
    clock = ManualClock()
    limiter = dead.limiter(
        "acct:usage", shared=Rate(10, 1.0), per_key=Rate(10, 60.0), margin=0.0, clock=clock
    )
    admitted: list[float] = []
    async with asyncio.timeout(5):  # hang guard
        for i in range(40):
            (await limiter.acquire(f"iccid-{i}")).mark(clock.now())  # it goes out at once
            admitted.append(clock.now())
    assert max_in_any_window(admitted, 1.0) <= 5  # budget / 2
    assert admitted[-1] < 10.0, admitted  # 40 at 5 per second: about 8 s, no 61 s stops
    await limiter.aclose()
    await dead.aclose()


async def test_back_from_fail_open_holds_one_shared_period(redis_server: RedisServer) -> None:
    b = backend(redis_server, wait=0.3, socket_timeout=0.2, fail_open=2)
    clock = ManualClock()
    limiter = b.limiter(
        "acct:usage", shared=Rate(10, 1.0), per_key=Rate(10, 60.0), margin=0.0, clock=clock
    )
    await asyncio.to_thread(redis_server.stop)
    await limiter.acquire("a")  # local, at budget / 2
    await asyncio.to_thread(redis_server.start)
    await asyncio.sleep(1.5)  # the backend re-probes Redis
    clock.advance(10.0)  # long after the local admission
    before = clock.now()
    async with asyncio.timeout(5):  # hang guard
        await limiter.acquire("b")  # through Redis again
    held = clock.now() - before
    # One company period (1 s) after the local phase, not the per-eSIM minute.
    assert 1.0 <= held <= 1.1, held
    await limiter.aclose()
    await b.aclose()


async def test_fail_open_cache_and_lock_calls_do_not_spend_wait(
    redis_server: RedisServer,
) -> None:
    wait = 2.0
    fleet = Fleet.generate(8, seed=41)
    limits = ServerLimits(usage_company=Rate(20, 1.0), usage_iccid=None, token=None)
    async with (
        Emulator(fleet=fleet, limits=limits) as emu,
        AiraloClient(
            "acct",
            "s",
            base_url=emu.url,
            backend=backend(redis_server, wait=wait, socket_timeout=0.2, fail_open=2),
            company_rate=Rate(20, 1.0),
            iccid_rate=None,
        ) as client,
    ):
        iccids = fleet.iccids()
        await client.sims.usage(iccids[0])
        await asyncio.to_thread(redis_server.stop)
        await client.sims.usage(iccids[1])  # this one learns that Redis is gone
        async with asyncio.timeout(wait):  # six more calls, less than one ``wait`` in all
            for iccid in iccids[2:]:
                await client.sims.usage(iccid)
        assert Counter(emu.stats.usage_by_iccid.values()) == {1: 8}


# -------------------------------------------------------------------------- lost state, markers


async def test_restart_quarantine_holds_the_shared_period(redis_server: RedisServer) -> None:
    b = backend(redis_server)
    limiter = b.limiter(
        "acct:usage",
        shared=Rate(5, 1.0),
        per_key=Rate(10, 60.0),
        margin=0.0,
        clock=MonotonicClock(),
    )
    clock = MonotonicClock()
    (await limiter.acquire("8944")).mark(clock.now())
    await b.redis.flushall()  # as after a restart without persistence
    lost = clock.now()
    (await limiter.acquire("8945")).mark(clock.now())
    assert limiter.state().quarantines == 1
    held = clock.now() - lost
    assert 0.99 <= held < 30.0, held  # the company period, not the per-eSIM minute
    await limiter.aclose()
    await b.aclose()


async def test_an_idle_marker_that_expired_is_not_lost_state(redis_server: RedisServer) -> None:
    b = backend(redis_server)
    clock = ManualClock()
    limiter = b.limiter("acct:usage", shared=Rate(5, 1.0), per_key=None, margin=0.0, clock=clock)
    (await limiter.acquire()).mark(clock.now())
    clock.advance(25 * 3600.0)  # a day of idleness ...
    await b.redis.delete(b.key("acct:usage", "state"))  # ... after which Redis expired it
    (await limiter.acquire()).mark(clock.now())
    assert clock.now() == 25 * 3600.0  # not held
    assert limiter.state().quarantines == 0
    await limiter.aclose()
    await b.aclose()


async def test_every_key_has_a_ttl(redis_server: RedisServer) -> None:
    b = backend(redis_server)
    clock = MonotonicClock()
    limiter = b.limiter(
        "acct:usage", shared=Rate(5, 0.2), per_key=Rate(10, 60.0), margin=0.0, clock=clock
    )
    (await limiter.acquire("8944")).mark(clock.now())
    await b.redis.flushall()
    await limiter.acquire("8944")  # quarantined: the state is written anew; still pending
    assert limiter.state().quarantines == 1
    cache = b.shared_cache("acct:usage", int, ttl=60.0, long_ttl=600.0)
    await cache.set("8944", CacheEntry(1, time.time(), 0.0))
    store = b.token_store("acct")
    await store.set("tok", 60.0)
    async with b.flight("acct:usage").lock("8945"):
        keys = [k async for k in b.redis.scan_iter("*")]
        assert len(keys) >= 5, keys
        ttls = {k: await b.redis.pttl(k) for k in keys}
    assert all(ttl > 0 for ttl in ttls.values()), ttls
    await b.aclose()


async def test_the_keys_of_one_script_share_a_cluster_slot(redis_server: RedisServer) -> None:
    b = backend(redis_server)
    sent = count_round_trips(b)
    limiter = b.limiter(
        "acct:usage", shared=Rate(5, 1.0), per_key=Rate(10, 60.0), margin=0.0, clock=ManualClock()
    )
    await limiter.acquire("8944")
    await limiter.penalize(1.0, None)
    cache = b.shared_cache("acct:usage", int, ttl=60.0, long_ttl=600.0)
    await cache.set("8944", CacheEntry(1, time.time(), 0.0))
    await b.flight("acct:usage").run("8944", lambda: cache.get("8944"))
    await asyncio.sleep(0.1)
    scripts = [args for args in sent if str(args[0]).upper() in ("EVALSHA", "EVAL")]
    assert len(scripts) >= 3
    for args in scripts:
        keys = args[3 : 3 + int(args[2])]
        assert len({key_slot(str(k).encode()) for k in keys}) == 1, keys
    await limiter.aclose()
    await b.aclose()


async def test_sandbox_and_production_do_not_share_a_token(redis_server: RedisServer) -> None:
    fleet = Fleet.generate(2, seed=43)
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as production,
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as sandbox,
    ):
        live = AiraloClient("acct", "s", base_url=production.url, backend=backend(redis_server))
        test = AiraloClient("acct", "s", base_url=sandbox.url, backend=backend(redis_server))
        async with live, test:
            iccid = fleet.iccids()[0]
            await live.sims.usage(iccid)
            await test.sims.usage(iccid)
        assert production.stats.tokens_issued == 1
        assert sandbox.stats.tokens_issued == 1  # its own token, from its own host
        assert sandbox.stats.usage_by_iccid[iccid] == 1  # and its own cache


# ------------------------------------------------------------------------------- single flight


async def test_a_lock_attempt_during_a_pause_does_not_wait_out_its_own_ghost(
    redis_server: RedisServer,
) -> None:
    """A ``SET NX`` that timed out while Redis was paused runs when Redis resumes; the retry
    must not find it and wait for the lock's TTL (30 s)."""
    one = backend(redis_server, wait=10.0, socket_timeout=0.3)
    two = backend(redis_server)
    await one.redis.ping()  # a connection open before the pause
    flight = one.flight("acct:usage")

    async def resume_later() -> None:
        await asyncio.sleep(1.0)
        os.kill(redis_server.proc.pid, signal.SIGCONT)

    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    resumer = asyncio.create_task(resume_later())
    try:
        async with asyncio.timeout(6):  # hang guard, well below the lock's 30 s TTL
            async with flight.lock("8944"):
                # Held for real: another process cannot take it meanwhile.
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.3), two.flight("acct:usage").lock("8944"):
                        pass
        async with asyncio.timeout(3):  # released: the other process gets it now
            async with two.flight("acct:usage").lock("8944"):
                pass
    finally:
        await resumer
    await one.aclose()
    await two.aclose()


async def test_a_holder_that_loses_its_lock_does_not_fetch_twice(
    redis_server: RedisServer,
) -> None:
    """Two processes want the same eSIM; Redis restarts while the first holds the lock. One
    of them fetches, the other reads its answer."""
    fetches: Counter[str] = Counter()
    gate = asyncio.Event()
    waiting = {"a": asyncio.Event(), "b": asyncio.Event()}

    def process(name: str) -> tuple[RedisBackend, Callable[[], Awaitable[int]], Any]:
        b = backend(redis_server, lock_ttl=1.5, wait=3.0)
        cache = b.shared_cache("acct:usage", int, ttl=60.0, long_ttl=600.0)
        flight = b.flight("acct:usage")

        async def fetch() -> int:
            entry = await cache.get("8944")
            if entry is not None and entry.value is not None:
                return int(entry.value)
            waiting[name].set()
            await gate.wait()  # waiting for budget
            fetches[name] += 1
            value = 100 if name == "a" else 200
            await cache.set("8944", CacheEntry(value, time.time(), 0.0))
            return value

        return b, fetch, flight

    a, fetch_a, flight_a = process("a")
    b, fetch_b, flight_b = process("b")
    task_a = asyncio.create_task(flight_a.run("8944", fetch_a))
    await asyncio.wait_for(waiting["a"].wait(), 3)
    await asyncio.to_thread(redis_server.stop)
    await asyncio.to_thread(redis_server.start)
    task_b = asyncio.create_task(flight_b.run("8944", fetch_b))
    await asyncio.sleep(1.5)  # longer than a lock renewal
    gate.set()
    async with asyncio.timeout(8):  # hang guard
        (value_a, _), (value_b, _) = await asyncio.gather(task_a, task_b)
    assert sum(fetches.values()) == 1, fetches
    assert value_a == value_b
    await a.aclose()
    await b.aclose()


async def test_a_shared_cache_hit_answers_after_one_round_trip(
    redis_server: RedisServer,
) -> None:
    writer, reader = backend(redis_server), backend(redis_server)
    await writer.shared_cache("acct:usage", int, ttl=60.0, long_ttl=600.0).set(
        "8944", CacheEntry(7, time.time(), 0.0)
    )
    cache = reader.shared_cache("acct:usage", int, ttl=60.0, long_ttl=600.0)
    await reader.flight("acct:usage").run("8945", lambda: cache.get("8945"))  # loads the scripts
    await eventually(lambda: _released(writer))
    sent = count_round_trips(reader)
    answered_after: list[int] = []

    async def fetch() -> int | None:
        entry = await cache.get("8944")
        answered_after.append(len(sent))
        return entry.value if entry is not None else None

    value, _ = await reader.flight("acct:usage").run("8944", fetch)
    assert value == 7
    assert answered_after == [1], sent  # the lock and the entry came in one round trip
    await eventually(lambda: _released(writer))
    assert len(sent) == 2  # ... and the lock was let go after the answer
    await writer.aclose()
    await reader.aclose()


async def _released(b: RedisBackend) -> bool:
    return not [k async for k in b.redis.scan_iter("*lock*")]

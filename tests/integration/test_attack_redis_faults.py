"""The Redis backend under faults a busy deployment meets: callers cancelled while a Redis
command is in flight, Redis paused while operations are under way, Redis losing its state
while a new process is the first to use it. Real redis-server on 127.0.0.1 (skipped without
one, unless ESIM_REQUIRE_REDIS=1). Counts, states and errors are asserted; time bounds are
hang guards and fractions of the configured ``wait``."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from esim_async import MonotonicClock, Rate
from esim_async.backends.redis import BackendUnavailableError, RedisBackend
from esim_async.cache import CacheEntry

from ..conftest import RedisServer


def backend(server: RedisServer, **kw: Any) -> RedisBackend:
    return RedisBackend.from_url(server.url, prefix="t", **kw)


def hold_script_replies(b: RedisBackend) -> tuple[asyncio.Event, Callable[[], None]]:
    """Make ``b``'s scripts run on the server but keep their replies from the caller (as a
    slow network would): the event is set once a script has run; call the function to stop."""
    ran = asyncio.Event()
    original: Callable[..., Awaitable[Any]] = b.redis.execute_command

    async def held(*args: Any, **options: Any) -> Any:
        reply = await original(*args, **options)
        if str(args[0]).upper() in ("EVALSHA", "EVAL"):
            ran.set()
            await asyncio.sleep(30)
        return reply

    b.redis.execute_command = held  # type: ignore[method-assign]

    def stop() -> None:
        b.redis.execute_command = original  # type: ignore[method-assign, assignment]

    return ran, stop


@pytest.fixture
def pausable(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The server, resumed at the end whatever the test did with SIGSTOP."""
    try:
        yield redis_server
    finally:
        if redis_server.proc is not None:
            os.kill(redis_server.proc.pid, signal.SIGCONT)


# ------------------------------------------------------------------------------- single flight


async def test_a_lock_attempt_cancelled_after_it_ran_leaves_the_lock_free(
    redis_server: RedisServer,
) -> None:
    """A caller leaves (a sweep closed early, a timeout) while its lock take is in flight:
    the take ran on the server, so the lock is this process's under a token nobody holds.
    Another process must not wait out the lock's TTL (30 s) for it."""
    one, two = backend(redis_server), backend(redis_server)
    ran, stop = hold_script_replies(one)

    async def take() -> None:
        async with one.flight("acct:usage").lock("8944"):
            pass  # pragma: no cover - the reply never comes

    task = asyncio.create_task(take())
    await asyncio.wait_for(ran.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stop()
    async with asyncio.timeout(3):  # hang guard, far below the lock's TTL
        async with two.flight("acct:usage").lock("8944"):
            pass
    async with asyncio.timeout(3):  # and this process can take it again too
        async with one.flight("acct:usage").lock("8944"):
            pass
    await one.aclose()
    await two.aclose()


# ------------------------------------------------------------------------- refused operations


async def test_an_operation_redis_refuses_does_not_take_the_whole_backend_down(
    redis_server: RedisServer,
) -> None:
    """Redis answers, but refuses one operation (a key in another layout, as an older release
    or another application may leave under the prefix; a token about to expire): that
    operation fails or is skipped at once, and Redis is not declared down for every other
    operation, limits included."""
    b = backend(redis_server, wait=0.5)
    cache = b.shared_cache("acct:usage", int, ttl=60.0, long_ttl=600.0)
    tokens = b.token_store("acct")
    limiter = b.limiter(
        "acct:usage", shared=Rate(5, 1.0), per_key=None, margin=0.0, clock=MonotonicClock()
    )
    await b.redis.set(b.key("acct:usage:8944", "cache"), "another layout", px=60_000)
    async with asyncio.timeout(5):  # hang guard
        assert await cache.get("8944") is None  # the cache is an optimisation
        await tokens.set("tok", 0.0004)  # less than a millisecond left: nothing to share
        assert b.available
        await cache.set("8945", CacheEntry(7, time.time(), 0.0))
        entry = await cache.get("8945")
        assert entry is not None and entry.value == 7
        (await limiter.acquire()).mark(MonotonicClock().now())
    await limiter.aclose()
    await b.aclose()


# ---------------------------------------------------------------------------------- fail closed


async def test_an_operation_in_flight_fails_as_soon_as_redis_is_known_down(
    pausable: RedisServer,
) -> None:
    """Redis stops answering (paused, or its packets dropped). The limiter's next reservation
    starts a little later than a cache read that will run out of ``wait`` first; once that
    read has marked Redis down, the queued callers are told at once, not one more ``wait``
    after their own reservation began."""
    wait = 1.0
    b = backend(pausable, wait=wait, socket_timeout=5.0)
    limiter = b.limiter(
        "acct:usage", shared=Rate(1, 0.6), per_key=None, margin=0.0, clock=MonotonicClock()
    )
    cache = b.shared_cache("acct:usage", int, ttl=60.0, long_ttl=600.0)
    await cache.get("warm")  # scripts loaded, connections open
    (await limiter.acquire()).mark(MonotonicClock().now())
    queued = [asyncio.create_task(limiter.acquire()) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in queued)
    os.kill(pausable.proc.pid, signal.SIGSTOP)
    reader = asyncio.create_task(cache.get("8944"))  # runs out of ``wait`` first
    async with asyncio.timeout(4 * wait):  # hang guard
        while b.available:
            await asyncio.sleep(0.01)
    assert await reader is None
    # The reservation under way since the window had room again is given up with it.
    _, still = await asyncio.wait(queued, timeout=wait / 4)
    assert not still, f"{len(still)} queued callers still waiting after Redis was known down"
    assert all(isinstance(t.exception(), BackendUnavailableError) for t in queued)
    os.kill(pausable.proc.pid, signal.SIGCONT)
    await limiter.aclose()
    await b.aclose()


async def test_operations_running_out_of_wait_together_all_fail_typed() -> None:
    """Many operations stuck on a silent Redis reach the end of ``wait`` in the same instant:
    each gets BackendUnavailableError (none a stray error from the one that marks it down)."""
    b = RedisBackend.from_url("redis://127.0.0.1:9/0", wait=0.2, socket_timeout=0.1)

    async def silent() -> None:
        await asyncio.sleep(30)

    async with asyncio.timeout(5):  # hang guard
        outcomes = await asyncio.gather(
            *(b.call(silent) for _ in range(20)), return_exceptions=True
        )
    assert all(isinstance(o, BackendUnavailableError) for o in outcomes), outcomes
    assert not b.available
    await b.aclose()


async def test_callers_queued_behind_a_full_window_fail_once_redis_is_known_down(
    redis_server: RedisServer,
) -> None:
    """Fail closed: every queued caller gets BackendUnavailableError together, within ``wait``
    of the failure, also those the window (or a cool-down) holds for longer than ``wait``."""
    wait = 0.5
    b = backend(redis_server, wait=wait, socket_timeout=0.2)
    limiter = b.limiter(
        "acct:usage", shared=Rate(1, 4.0), per_key=None, margin=0.0, clock=MonotonicClock()
    )
    cache = b.shared_cache("acct:usage", int, ttl=60.0, long_ttl=600.0)
    (await limiter.acquire()).mark(MonotonicClock().now())
    queued = [asyncio.create_task(limiter.acquire()) for _ in range(3)]
    try:
        await asyncio.sleep(0.05)
        await asyncio.to_thread(redis_server.stop)
        assert await cache.get("8944") is None  # runs out of ``wait``: Redis is known down
        assert not b.available
        _, still = await asyncio.wait(queued, timeout=wait)
        assert not still, f"{len(still)} queued callers still waiting after Redis was known down"
        assert all(isinstance(t.exception(), BackendUnavailableError) for t in queued)
    finally:
        await limiter.aclose()
        await asyncio.gather(*queued, return_exceptions=True)
        await b.aclose()

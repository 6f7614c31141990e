"""One budget, one cache, one token across processes and hosts: the Redis backend.

A company's 5 requests per second are shared by every worker that uses its credentials. With
``AiraloClient(..., backend=RedisBackend.from_url("redis://localhost:6379/0"))`` every process
takes its permits from the same sliding-window logs in Redis, reads and writes one usage cache,
merges concurrent fetches of one ICCID across processes, and shares one token.

- **Limits**: one Lua script, one round trip, on the Redis server's clock (``TIME``; tests pass
  ``now``): at most ``count`` admissions in any window of ``period`` across all processes. A
  process asks for the next free slot and reserves it when it is near (within a short
  look-ahead), so slots are handed out in order and the budget stays saturated; interactive
  calls go ahead of a sweep's within each process. 429 cool-downs and the reduced rate live in
  Redis too, so every process slows down together. Keys expire by themselves.
- **Cache**: answers are stored msgpack-encoded with their TTL, behind the in-process cache.
- **Single flight**: a lock per ICCID (renewed while held, so waiting for budget cannot let a
  second process fetch the same ICCID); the others then read the cached answer.
- **Token**: stored with its expiry; one process asks for a token, the others use it.
- **Failures**: Redis unreachable fails closed by default (a bounded wait, then
  :class:`BackendUnavailableError`, never a hang). ``fail_open=N`` falls back to local limits
  at ``budget / N`` (N = the number of processes sharing the budget), never more. After Redis
  lost its state (a restart), the first admission in each limiter waits one period
  (quarantine), so requests sent before the restart cannot be overrun.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from typing import Any

import msgspec

from .. import _constants as C
from ..cache import CacheEntry, FlightOptions, SingleFlight, TTLStore
from ..clock import Clock
from ..errors import TransportError
from ..limits import (
    EndpointLimiter,
    LimiterClosedError,
    LimiterState,
    Priority,
    Rate,
    Slot,
    cooldown_refusal,
)

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the optional extra
    raise ImportError("the Redis backend needs redis-py: pip install 'esim-async[redis]'") from exc

__all__ = ["BackendUnavailableError", "RedisBackend"]

logger = logging.getLogger("esim_async")


class BackendUnavailableError(TransportError):
    """The shared backend (Redis) could not be reached within the configured wait."""


#: Lua preamble: ``now`` from ARGV[1] when given (tests drive the clock), else the Redis
#: server's own clock, shared by every process.
_NOW = """
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

_ACQUIRE = (
    _NOW
    + """
local quarantined = 0
if redis.call('PEXPIRE', KEYS[4], 86400000) == 0 then
  redis.call('SET', KEYS[4], '1', 'PX', 86400000)
  if ARGV[8] == '1' then
    local q = now + tonumber(ARGV[10])
    local old = tonumber(redis.call('HGET', KEYS[3], 'cooldown_until') or '0')
    if q > old then redis.call('HSET', KEYS[3], 'cooldown_until', q) end
    quarantined = 1
  end
end
local t = now
local cd = tonumber(redis.call('HGET', KEYS[3], 'cooldown_until') or '0')
if cd > t then t = cd end
local count = tonumber(ARGV[2])
local span = tonumber(ARGV[3])
local ceiling = tonumber(redis.call('HGET', KEYS[3], 'ceiling') or '0')
if now >= tonumber(redis.call('HGET', KEYS[3], 'ceiling_until') or '0') then ceiling = 0 end
if ceiling > 0 and (count == 0 or ceiling < count) and count > 0 then count = ceiling end
local shared_edge = t
if count > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - span)
  local card = redis.call('ZCARD', KEYS[1])
  if card >= count then
    local e = redis.call('ZRANGE', KEYS[1], card - count, card - count, 'WITHSCORES')
    local edge = tonumber(e[2]) + span
    if edge > shared_edge then shared_edge = edge end
  end
  if card > 0 then
    local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
    local newest = tonumber(last[2])
    if newest > shared_edge then shared_edge = newest end
    local f0 = tonumber(redis.call('HGET', KEYS[3], 'factor0') or '1')
    if f0 < 1 then
      local f = f0
      local since = shared_edge - cd
      if since > 0 then f = f0 + tonumber(ARGV[9]) * since / span end
      if f < 1 then
        local spaced = newest + span / (count * f)
        if spaced > shared_edge then shared_edge = spaced end
      end
    end
  end
end
local key_edge = t
local kcount = tonumber(ARGV[4])
local kspan = tonumber(ARGV[5])
if kcount > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - kspan)
  local kcard = redis.call('ZCARD', KEYS[2])
  if kcard >= kcount then
    local e = redis.call('ZRANGE', KEYS[2], kcard - kcount, kcard - kcount, 'WITHSCORES')
    local edge = tonumber(e[2]) + kspan
    if edge > key_edge then key_edge = edge end
  end
  if kcard > 0 then
    local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
    if tonumber(last[2]) > key_edge then key_edge = tonumber(last[2]) end
  end
end
local slot = shared_edge
local binding = 'shared'
if key_edge > slot then
  slot = key_edge
  binding = 'key'
end
if slot - now > tonumber(ARGV[6]) then
  return {0, tostring(slot - now), binding, quarantined}
end
if count > 0 then
  redis.call('ZADD', KEYS[1], slot, ARGV[7])
  redis.call('PEXPIRE', KEYS[1], math.ceil((slot - now + span) * 1000) + 1000)
end
if kcount > 0 then
  redis.call('ZADD', KEYS[2], slot, ARGV[7])
  redis.call('PEXPIRE', KEYS[2], math.ceil((slot - now + kspan) * 1000) + 1000)
end
return {1, tostring(slot - now), binding, quarantined}
"""
)

_PENALIZE = (
    _NOW
    + """
if ARGV[9] ~= nil and ARGV[9] ~= '' then
  local held = redis.call('ZCOUNT', KEYS[2], now - tonumber(ARGV[10]), now)
  if held < tonumber(ARGV[9]) then return '-1' end
end
local cd = tonumber(redis.call('HGET', KEYS[1], 'cooldown_until') or '0')
local f0 = tonumber(redis.call('HGET', KEYS[1], 'factor0') or '1')
local guard = tonumber(redis.call('HGET', KEYS[1], 'decrease_guard') or '0')
local period = tonumber(ARGV[8])
local f = f0
if f0 < 1 then
  local since = now - cd
  if since > 0 then f = math.min(1, f0 + tonumber(ARGV[7]) * since / period) end
end
local wait = tonumber(ARGV[2])
if wait < 0 then wait = tonumber(ARGV[4]) end
if now + wait > cd then
  cd = now + wait
  redis.call('HSET', KEYS[1], 'cooldown_until', cd)
end
local limit = tonumber(ARGV[3])
if limit > 0 then
  local c = tonumber(redis.call('HGET', KEYS[1], 'ceiling') or '0')
  if now >= tonumber(redis.call('HGET', KEYS[1], 'ceiling_until') or '0') then c = 0 end
  if c == 0 or limit < c then
    redis.call('HSET', KEYS[1], 'ceiling', limit)
    redis.call('HSET', KEYS[1], 'ceiling_until', cd + period / tonumber(ARGV[7]))
  end
end
if now >= guard then
  redis.call('HSET', KEYS[1], 'factor0', math.max(tonumber(ARGV[6]), f * tonumber(ARGV[5])))
  redis.call('HSET', KEYS[1], 'decrease_guard', cd)
end
redis.call('PEXPIRE', KEYS[1], 86400000)
return tostring(cd - now)
"""
)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def _scaled(rate: Rate | None, share: int) -> Rate | None:
    """``rate`` divided among ``share`` processes, rounded so the sum never exceeds it."""
    if rate is None or share <= 1:
        return rate
    if rate.count >= share:
        return Rate(rate.count // share, rate.period)
    return Rate(1, rate.period * math.ceil(share / rate.count))


class RedisBackend:
    """Limiter state, usage cache, single flight and token shared through Redis.

    Args:
        client: a ``redis.asyncio.Redis`` (use :meth:`from_url`).
        prefix: namespace of every key.
        fail_open: ``None`` (default) fails closed when Redis is unreachable; an int N falls
            back to local limits at ``budget / N`` (N processes share the budget).
        wait: longest time spent waiting on an unreachable Redis before giving up (seconds).
        lock_ttl: expiry of a single-flight lock (renewed while held).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "esim_async",
        fail_open: int | None = None,
        wait: float = 5.0,
        lock_ttl: float = 30.0,
        owns_client: bool = False,
    ) -> None:
        if fail_open is not None and fail_open < 1:
            raise ValueError("fail_open is the number of processes sharing the budget (>= 1)")
        self.redis = client
        self.prefix = prefix
        self.fail_open = fail_open
        self.wait = wait
        self.lock_ttl = lock_ttl
        self._owns_client = owns_client
        self._acquire = client.register_script(_ACQUIRE)
        self._penalize = client.register_script(_PENALIZE)
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)
        self._limiters: list[RedisLimiter] = []
        self._background: set[asyncio.Task[Any]] = set()

    @classmethod
    def from_url(
        cls, url: str, *, max_connections: int = 64, socket_timeout: float = 2.0, **options: Any
    ) -> RedisBackend:
        """A backend on ``url`` (``redis://host:6379/0``) with a blocking pool (callers wait
        for a free connection instead of failing) and bounded socket timeouts."""
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
        )
        return cls(aioredis.Redis(connection_pool=pool), owns_client=True, **options)

    def __repr__(self) -> str:
        return f"RedisBackend(prefix={self.prefix!r}, fail_open={self.fail_open!r})"

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run one Redis operation, retrying a broken connection until ``wait`` runs out."""
        deadline = time.monotonic() + self.wait
        delay = 0.05
        while True:
            try:
                async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                    return await fn()
            except (RedisError, OSError, TimeoutError) as exc:
                if time.monotonic() + delay >= deadline:
                    raise BackendUnavailableError(f"Redis unavailable: {exc}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    def spawn(self, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception as exc:  # best effort: logged, never raised into a caller
                logger.warning("redis backend: background operation failed: %s", exc)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ the Backend protocol

    def limiter(
        self, name: str, *, shared: Rate | None, per_key: Rate | None, margin: float, clock: Clock
    ) -> RedisLimiter:
        limiter = RedisLimiter(
            self, name, shared=shared, per_key=per_key, margin=margin, clock=clock
        )
        self._limiters.append(limiter)
        return limiter

    def cache(
        self, name: str, *, ttl: float, long_ttl: float, maxsize: int, clock: Clock
    ) -> TTLStore[Any, Any]:
        """The in-process first level; :meth:`shared_cache` is the second."""
        return TTLStore(ttl=ttl, long_ttl=long_ttl, maxsize=maxsize, clock=clock)

    def shared_cache(
        self, name: str, value_type: Any, *, ttl: float, long_ttl: float
    ) -> RedisCache:
        return RedisCache(self, name, value_type, ttl=ttl, long_ttl=long_ttl)

    def flight(self, name: str) -> RedisFlight:
        return RedisFlight(self, name)

    def token_store(self, name: str) -> RedisTokenStore:
        return RedisTokenStore(self, name)

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._owns_client:
            with contextlib.suppress(Exception):
                await self.redis.aclose(close_connection_pool=True)


class RedisLimiter:
    """An endpoint's limits kept in Redis (see the module docs)."""

    def __init__(
        self,
        backend: RedisBackend,
        name: str,
        *,
        shared: Rate | None,
        per_key: Rate | None,
        margin: float,
        clock: Clock,
    ) -> None:
        self.name = name
        self._backend = backend
        self._clock = clock
        self._shared = shared
        self._per_key = per_key
        self._margin = margin
        self._span = shared.period * (1 + margin) if shared else 0.0
        self._key_span = per_key.period * (1 + margin) if per_key else 0.0
        spacing = (self._span / shared.count) if shared else 0.05
        #: Reserve a slot this long before it comes (keeps the budget saturated).
        self.lookahead = min(0.5, max(0.02, 2 * spacing))
        self._lanes: tuple[deque[tuple[asyncio.Future[tuple[str, float]], str | None]], ...] = (
            deque(),
            deque(),
        )
        self._dispatcher: asyncio.Task[None] | None = None
        self._seen_state = False
        self._closed = False
        self._local: EndpointLimiter | None = None  # fail-open fallback
        self._local_until = 0.0
        self._quarantine_until = 0.0
        #: Until then the shared cool-down lasts longer than callers wait: they are refused.
        self._refuse_until = 0.0
        #: key -> (end of its own cool-down, refused): 429s charged to one key (this process).
        self._key_holds: dict[str, tuple[float, bool]] = {}
        self.last_headers: Mapping[str, str] = {}
        self.waited = 0.0
        #: Admissions that found Redis' state lost and waited one period.
        self.quarantines = 0

    def _keys(self, key: str | None) -> list[str]:
        b = self._backend
        return [
            b.key(self.name, "log"),
            b.key(self.name, "key", key or "-"),
            b.key(self.name, "state"),
            b.key(self.name, "alive"),
        ]

    async def reserve(self, key: str | None, now: float | None = None) -> tuple[bool, float, str]:
        """One script call: (reserved, delay until the slot, binding limit)."""
        shared, per_key = self._shared, self._per_key
        member = f"{time.time():.6f}-{secrets.token_hex(4)}"
        result = await self._backend._acquire(
            keys=self._keys(key),
            args=[
                "" if now is None else repr(now),
                shared.count if shared else 0,
                self._span,
                per_key.count if (per_key and key is not None) else 0,
                self._key_span,
                self.lookahead,
                member,
                1 if self._seen_state else 0,
                C.RATE_RECOVERY_STEP,
                max(self._span, self._key_span, 0.001),
            ],
        )
        self._seen_state = True
        reserved, delay, binding, quarantined = result
        if int(quarantined):
            self.quarantines += 1
            logger.warning("redis backend: state of %s was lost; waiting one period", self.name)
        return (
            bool(int(reserved)),
            float(delay),
            binding.decode() if isinstance(binding, bytes) else str(binding),
        )

    async def acquire(
        self, key: str | None = None, priority: Priority = Priority.INTERACTIVE
    ) -> Slot | None:
        if self._closed:
            raise LimiterClosedError(f"limiter {self.name!r} is closed")
        start = self._clock.now()
        try:
            while True:
                hold = self._held_until(key, self._clock.now())
                if hold > 0.0:
                    await self._clock.sleep(hold)  # this key's own cool-down
                    continue
                local = self._fallback()
                if local is not None:
                    return await local.acquire(key, priority)
                fut: asyncio.Future[tuple[str, float]] = asyncio.get_running_loop().create_future()
                self._lanes[priority].append((fut, key))
                if self._dispatcher is None:
                    self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())
                kind, delay = await fut
                if kind == "ok":
                    if delay > 0:
                        await self._clock.sleep(delay)
                    return None
                if kind == "fallback":
                    continue
                await self._clock.sleep(max(0.0, delay))  # this key's own window
        finally:
            self.waited += self._clock.now() - start

    def _fallback(self) -> EndpointLimiter | None:
        """The local limiter while Redis is unreachable (fail-open only)."""
        if self._local is None:
            return None
        if self._clock.now() < self._local_until:
            return self._local
        # Time to try Redis again; hold one period first so local and shared admissions
        # cannot add up within a window.
        self._local = None
        self._quarantine_until = self._clock.now() + max(self._span, self._key_span)
        return None

    def _head(self) -> tuple[asyncio.Future[tuple[str, float]], str | None] | None:
        for lane in self._lanes:
            while lane and lane[0][0].done():
                lane.popleft()
            if lane:
                return lane[0]
        return None

    def _pop(self, fut: asyncio.Future[tuple[str, float]]) -> None:
        for lane in self._lanes:
            if lane and lane[0][0] is fut:
                lane.popleft()
                return

    async def _dispatch(self) -> None:
        clock = self._clock
        try:
            while (head := self._head()) is not None:
                fut, key = head
                pause = self._quarantine_until - clock.now()
                if pause > 0:
                    await clock.sleep(pause)
                    continue
                try:
                    reserved, delay, binding = await self._backend.call(
                        functools.partial(self.reserve, key)
                    )
                except BackendUnavailableError as exc:
                    if self._backend.fail_open is None:
                        self._pop(fut)
                        if not fut.done():
                            fut.set_exception(exc)
                        continue
                    self._start_fallback(exc)
                    for lane in self._lanes:
                        while lane:
                            waiter, _ = lane.popleft()
                            if not waiter.done():
                                waiter.set_result(("fallback", 0.0))
                    return
                if reserved:
                    self._pop(fut)
                    if not fut.done():
                        fut.set_result(("ok", delay))
                elif binding == "key":
                    self._pop(fut)
                    if not fut.done():
                        fut.set_result(("key", delay - self.lookahead))
                else:
                    await clock.sleep(max(0.001, delay - self.lookahead))
        finally:
            self._dispatcher = None

    def _start_fallback(self, exc: Exception) -> None:
        share = self._backend.fail_open or 1
        logger.warning(
            "redis backend unavailable (%s): %s falls back to local limits at 1/%d of the budget",
            exc,
            self.name,
            share,
        )
        self._local = EndpointLimiter(
            self.name,
            shared=_scaled(self._shared, share),
            per_key=_scaled(self._per_key, share),
            clock=self._clock,
            margin=self._margin,
        )
        self._local_until = self._clock.now() + 5.0

    def _held_until(self, key: str | None, now: float) -> float:
        """Seconds to wait for a cool-down of this process's knowledge before asking Redis;
        raises ``RateLimitedError`` while one lasts longer than callers wait."""
        left = self._refuse_until - now
        if left > 0.0:
            raise cooldown_refusal(self.name, left)
        if key is None or not self._key_holds:
            return 0.0
        hold = self._key_holds.get(key)
        if hold is None:
            return 0.0
        until, refused = hold
        if until <= now:
            del self._key_holds[key]
            return 0.0
        if refused:
            raise cooldown_refusal(self.name, until - now, key_limited=True)
        return until - now

    def _hold_shared(self, until: float, waitable: bool) -> None:
        self._quarantine_until = max(self._quarantine_until, until)
        if waitable:
            return
        self._refuse_until = max(self._refuse_until, until)
        left = self._refuse_until - self._clock.now()
        for lane in self._lanes:
            while lane:
                fut, _ = lane.popleft()
                if not fut.done():
                    fut.set_exception(cooldown_refusal(self.name, left))

    def _hold_key(self, key: str, until: float, waitable: bool) -> None:
        now = self._clock.now()
        holds = self._key_holds
        old = holds.pop(key, None)
        refused = not waitable
        if old is not None and old[0] > now:
            until, refused = max(until, old[0]), refused or old[1]
        holds[key] = (until, refused)
        if len(holds) > 1024:
            for k in [k for k, (u, _) in holds.items() if u <= now]:
                del holds[k]

    def penalize(
        self,
        retry_after: float | None,
        limit: int | None = None,
        *,
        key: str | None = None,
        waitable: bool = True,
    ) -> None:
        """Charge a 429 to the limit that tripped it (see ``EndpointLimiter.penalize``): the
        shared cool-down lives in Redis for every process; a key's own cool-down, and whether
        a cool-down is waited for, are this process's."""
        shared, per_key = self._shared, self._per_key
        period = (shared or per_key or Rate(1, 1.0)).period
        default = period * C.DEFAULT_COOLDOWN_PERIODS
        wait = retry_after if retry_after is not None else default
        now = self._clock.now()
        may_be_shared = key is None or (
            shared is not None
            and (retry_after is None or retry_after <= max(1.0, math.ceil(shared.period)))
            and not (
                limit is not None
                and per_key is not None
                and limit == per_key.count
                and limit != shared.count
            )
        )
        need = ""
        if key is not None:
            key_wait = (
                retry_after
                if retry_after is not None
                else (per_key or shared or Rate(1, period)).period
            )
            self._hold_key(key, now + key_wait, waitable)
            if not may_be_shared:
                return
            # The shared limit only if its window (in Redis) held nearly its count.
            assert shared is not None
            need = str(min(shared.count, math.floor(shared.count * C.SHARED_CHARGE_FILL) + 1))
        else:
            # Hold this process at once; share the cool-down with every other process.
            self._hold_shared(now + wait, waitable)
        backend = self._backend

        async def charge() -> None:
            left = await backend.call(
                lambda: backend._penalize(
                    keys=[backend.key(self.name, "state"), backend.key(self.name, "log")],
                    args=[
                        "",
                        -1 if retry_after is None else retry_after,
                        limit or 0,
                        default,
                        C.RATE_DECREASE_FACTOR,
                        C.RATE_MIN_FACTOR,
                        C.RATE_RECOVERY_STEP,
                        period,
                        need,
                        self._span,
                    ],
                )
            )
            if need and float(left) >= 0:
                self._hold_shared(now + wait, waitable)

        backend.spawn(charge())

    def record_headers(self, headers: Mapping[str, str]) -> None:
        self.last_headers = headers

    def state(self) -> LimiterState:
        now = self._clock.now()
        until = max(self._quarantine_until, 0.0)
        key_cooldowns = sum(1 for u, _ in self._key_holds.values() if u > now)
        return LimiterState(
            name=self.name,
            configured=self._shared,
            per_key=self._per_key,
            effective_per_second=self._shared.per_second if self._shared else None,
            cooldown_until=until,
            cooldown_remaining=max(0.0, until - now),
            waiters=sum(1 for lane in self._lanes for f, _ in lane if not f.done()),
            live_keys=0,
            last_headers={
                k: v
                for k, v in self.last_headers.items()
                if k.lower().startswith("x-ratelimit") or k.lower() == "retry-after"
            },
            key_cooldowns=key_cooldowns,
        )

    async def aclose(self) -> None:
        self._closed = True
        task = self._dispatcher
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for lane in self._lanes:
            while lane:
                fut, _ = lane.popleft()
                if not fut.done():
                    fut.set_exception(LimiterClosedError(f"limiter {self.name!r} is closed"))


class RedisCache:
    """The second-level cache: msgpack-encoded entries that expire with their TTL."""

    def __init__(
        self, backend: RedisBackend, name: str, value_type: Any, *, ttl: float, long_ttl: float
    ) -> None:
        self._backend = backend
        self._name = name
        self._ttl = ttl
        self._long_ttl = long_ttl
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(CacheEntry[value_type])

    def _key(self, key: Hashable) -> str:
        return self._backend.key(self._name, "cache", str(key))

    def _life_left(self, entry: CacheEntry[Any]) -> float:
        """Seconds ``entry`` has left to live, counted from its ``fetched_at`` (POSIX time,
        shared by every process; its ``stored`` time is on the writer's own clock)."""
        ttl = self._long_ttl if entry.long_lived else self._ttl
        return ttl - max(0.0, time.time() - entry.fetched_at)

    async def get(self, key: Hashable) -> CacheEntry[Any] | None:
        """The shared entry as its writer stored it (measure its age from ``fetched_at``);
        ``None`` when missing, older than its TTL, or when Redis cannot be read (the cache is
        an optimisation)."""
        try:
            raw = await self._backend.call(lambda: self._backend.redis.get(self._key(key)))
        except BackendUnavailableError:
            return None
        if raw is None:
            return None
        try:
            entry: CacheEntry[Any] = self._decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if self._life_left(entry) <= 0:
            return None
        return entry

    async def set(self, key: Hashable, entry: CacheEntry[Any]) -> None:
        """Share ``entry`` for the rest of its TTL (counted from its ``fetched_at``)."""
        left = self._life_left(entry)
        if left <= 0:
            return
        blob = self._encoder.encode(entry)
        px = max(1, int(left * 1000))
        with contextlib.suppress(BackendUnavailableError):
            await self._backend.call(lambda: self._backend.redis.set(self._key(key), blob, px=px))

    async def invalidate(self, key: Hashable) -> None:
        with contextlib.suppress(BackendUnavailableError):
            await self._backend.call(lambda: self._backend.redis.delete(self._key(key)))


class RedisFlight:
    """Single flight within the process (no extra request) and across processes (a lock per
    key, renewed while held). A caller that waited for another process's lock runs ``fn``
    afterwards; ``fn`` finds the answer that process stored in the shared cache."""

    def __init__(self, backend: RedisBackend, name: str) -> None:
        self._backend = backend
        self._name = name
        self._local: SingleFlight[Hashable, Any] = SingleFlight()

    def __len__(self) -> int:
        return len(self._local)

    async def run(
        self,
        key: Hashable,
        fn: Callable[[], Awaitable[Any]],
        *,
        fresh: bool = False,
        options: FlightOptions | None = None,
    ) -> tuple[Any, bool]:
        return await self._local.run(
            key, lambda: self._locked(key, fn), fresh=fresh, options=options
        )

    async def _locked(self, key: Hashable, fn: Callable[[], Awaitable[Any]]) -> Any:
        async with self.lock(key):
            return await fn()

    @contextlib.asynccontextmanager
    async def lock(self, key: Hashable) -> AsyncIterator[None]:
        backend = self._backend
        name = backend.key(self._name, "lock", str(key))
        token = secrets.token_hex(8)
        ttl_ms = int(backend.lock_ttl * 1000)
        acquired = False
        delay = 0.01
        try:
            while True:
                try:
                    acquired = bool(
                        await backend.call(
                            lambda: backend.redis.set(name, token, nx=True, px=ttl_ms)
                        )
                    )
                except BackendUnavailableError:
                    if backend.fail_open is None:
                        raise
                    break  # fail-open: no cross-process merging while Redis is away
                if acquired:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
        except BaseException:
            raise
        renew: asyncio.Task[None] | None = None
        if acquired:

            async def keep() -> None:
                while True:
                    await asyncio.sleep(backend.lock_ttl / 3)
                    await backend.call(lambda: backend._renew(keys=[name], args=[token, ttl_ms]))

            renew = asyncio.get_running_loop().create_task(keep())
        try:
            yield
        finally:
            if renew is not None:
                renew.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await renew
            if acquired:
                with contextlib.suppress(BackendUnavailableError):
                    await backend.call(lambda: backend._release(keys=[name], args=[token]))

    async def aclose(self) -> None:
        await self._local.aclose()


class RedisTokenStore:
    """The access token shared by every process using the same credentials."""

    def __init__(self, backend: RedisBackend, name: str) -> None:
        self._backend = backend
        self._key = backend.key(name, "token")
        self._flight = RedisFlight(backend, f"{name}:token")

    async def get(self) -> tuple[str, float] | None:
        """(token, seconds it stays valid) or ``None`` (also when Redis is unreachable and the
        backend fails open: the process then asks for its own token)."""
        backend = self._backend
        try:
            raw, ttl_ms = await backend.call(lambda: self._get_with_ttl())
        except BackendUnavailableError:
            if backend.fail_open is None:
                raise
            return None
        if raw is None or ttl_ms is None or ttl_ms <= 0:
            return None
        return (raw.decode() if isinstance(raw, bytes) else str(raw)), ttl_ms / 1000

    async def _get_with_ttl(self) -> tuple[Any, Any]:
        async with self._backend.redis.pipeline(transaction=False) as pipe:
            pipe.get(self._key)
            pipe.pttl(self._key)
            raw, ttl = await pipe.execute()
        return raw, ttl

    async def set(self, token: str, valid_for: float) -> None:
        if valid_for <= 0:
            return
        try:
            await self._backend.call(
                lambda: self._backend.redis.set(self._key, token, px=int(valid_for * 1000))
            )
        except BackendUnavailableError:
            if self._backend.fail_open is None:
                raise

    def discard_later(self, token: str) -> None:
        backend = self._backend
        backend.spawn(backend.call(lambda: backend._release(keys=[self._key], args=[token])))

    def lock(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._flight.lock("refresh")

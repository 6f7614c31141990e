"""One budget, one cache, one token across processes and hosts: the Redis backend.

A company's 5 requests per second are shared by every worker that uses its credentials. With
``AiraloClient(..., backend=RedisBackend.from_url("redis://localhost:6379/0"))`` every process
takes its permits from the same sliding-window logs in Redis, reads and writes one usage cache,
merges concurrent fetches of one ICCID across processes, and shares one token.

- **Limits**: a limiter's windows and state live in Redis, kept by three Lua scripts on the
  Redis server's clock (:mod:`esim_async.backends.redis_store`); its queue is in the process
  (the same :class:`~esim_async.limits.EndpointLimiter` as in memory, so interactive calls go
  ahead of a sweep's). At most ``count`` requests in any window of ``period`` across all
  processes, counted when they go out: a reservation counts in every window until the process
  confirms it at the send moment (without waiting; Redis stamps it as the confirmation
  arrives) or gives it back, and one whose process died counts as sent a minute after it was
  made. 429 cool-downs, the reduced rate and learned ceilings live in Redis too, so every
  process slows down together.
- **Cache**: answers are stored msgpack-encoded, behind the in-process cache. Their age is
  judged on the Redis server's clock (the fetch time is kept as Redis time when written and
  compared with Redis time when read, in the same script), so a process whose clock is wrong
  cannot make an old answer look new to the others.
- **Single flight**: a lock per ICCID, taken in the same round trip that reads the cached
  answer (a hit answers after one round trip; the lock is let go after the answer). Every
  attempt to take it has its own token, so an attempt that timed out but ran anyway is
  recognised as this caller's own. The lock is renewed while held (waiting for budget cannot
  let a second process fetch the same ICCID); a holder that finds it taken over (after a
  restart, or a pause longer than its TTL) abandons its fetch and reads the other holder's
  answer instead, and one that finds it gone with no newer answer takes it again.
- **Token**: stored with its expiry; one process asks for a token, the others use it.
- **Keys**: ``prefix:{name}:part``. The client's names hold the provider, the account and the
  ``base_url``, so a sandbox and production never share a token, a budget or a cache. The
  ``{...}`` part is a Redis Cluster hash tag: the keys one script touches (a limiter's logs and
  state; one ICCID's lock and cached answer) live in one slot. Every key has a TTL.

**Failures.** Every operation waits at most ``wait`` seconds for an unreachable Redis. The
first one that runs out marks Redis as down: from then on every operation fails (or falls
back) at once, without spending ``wait`` again, while a background probe pings Redis every
``probe_interval`` seconds and lifts the mark when it answers.

- Fail closed (default): a limiter's queued callers all get :class:`BackendUnavailableError`
  together, within ``wait`` of the failure; later callers get it at once. Lock and token calls
  raise it too; the shared cache answers "missing" and skips writes (it is an optimisation).
- ``fail_open=N``: each limiter falls back to local limits at ``budget / N`` (N = the number
  of processes sharing the budget) for as long as Redis is down, checked once per period of
  the shared limit. Single flight merges only within the process, and each process asks for
  its own token. Back on Redis, the limiter first waits until one period of the shared limit
  has passed since its last local admission, so local and shared admissions cannot add up
  within a window. Budget/N is a promise only
  when every process loses Redis together: under a *partial* partition, each process cut off
  from Redis sends up to ``budget / N`` on top of the full budget that the processes still on
  Redis share (one process cut off: at most ``budget * (1 + 1/N)``) for as long as the
  partition lasts; the provider may answer the excess with 429s.
- Lost state: a limiter that finds its state gone from Redis although it saw it within 90 %
  of its lifetime (24 h, renewed by every admission) knows Redis lost it (a restart without
  persistence, a failover, a flush): every process's next admission waits one period of the
  shared limit (quarantine), so requests sent before the loss cannot be overrun. A state that
  expired while the limiter was idle is not a loss. Per-key windows (10 per minute per ICCID)
  are not rebuilt after a loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any

import msgspec

from ..cache import CacheEntry, FlightOptions, SingleFlight, TTLStore
from ..clock import Clock, MonotonicClock
from ..limits import BackendUnavailableError, EndpointLimiter, Rate
from .redis_store import RedisWindowStore

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the optional extra
    raise ImportError("the Redis backend needs redis-py: pip install 'esim-async[redis]'") from exc

__all__ = ["BackendUnavailableError", "RedisBackend"]

logger = logging.getLogger("esim_async")

#: Time for the waits on Redis and the cache's wall time, when no clock is given.
_CLOCK = MonotonicClock()

#: Lock attempts of unknown fate remembered for cleanup once Redis answers again.
_MAX_GHOSTS = 256


#: The single-flight lock of one item, taken with a fresh token per attempt, read together
#: with the item's cached answer. KEYS[1] the lock, KEYS[2] the cached answer (one hash tag);
#: ARGV[1] ms to live, ARGV[2] this attempt's token, ARGV[3..] tokens of this caller's earlier
#: attempts whose fate is unknown (they timed out, and may have run after all: such a lock is
#: this caller's). Returns {token held or '', Redis time, encoded answer or '', its age}.
_LOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local held = redis.call('GET', KEYS[1])
local mine = ''
if not held then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
  mine = ARGV[2]
else
  for i = 3, #ARGV do
    if held == ARGV[i] then
      redis.call('PEXPIRE', KEYS[1], ARGV[1])
      mine = held
      break
    end
  end
end
if mine == '' then return {'', tostring(now), '', ''} end
local e = redis.call('HMGET', KEYS[2], 'v', 'f')
if not e[1] or not e[2] then return {mine, tostring(now), '', ''} end
return {mine, tostring(now), e[1], tostring(math.max(0, now - tonumber(e[2])))}
"""

#: Keep a held lock. KEYS[1] the lock, KEYS[2] the answer it guards; ARGV[1] the token,
#: ARGV[2] ms to live, ARGV[3] Redis time at which it was taken. 1: still held, renewed;
#: 2: it was gone and no answer came meanwhile, taken again; 0: lost (another holder, or an
#: answer written since it was taken).
_RENEW = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if held then return 0 end
local w = redis.call('HGET', KEYS[2], 'w')
if w and tonumber(w) >= tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 2
"""

#: Delete KEYS[1] if it holds any of ARGV (a caller's tokens).
_RELEASE = """
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
for i = 1, #ARGV do
  if held == ARGV[i] then return redis.call('DEL', KEYS[1]) end
end
return 0
"""

#: Store a cached answer. KEYS[1]; ARGV[1] the encoded entry, ARGV[2] its age when written
#: (seconds, measured on the writer's clock from its own fetch time), ARGV[3] ms to live.
#: Keeps the fetch time ('f') and the write time ('w') on Redis' clock.
_CACHE_PUT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local fetched = now - tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'f', tostring(fetched), 'w', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

#: Read a cached answer: {encoded entry, its age on Redis' clock}, or nil.
_CACHE_GET = """
local e = redis.call('HMGET', KEYS[1], 'v', 'f')
if not e[1] or not e[2] then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return {e[1], tostring(math.max(0, now - tonumber(e[2])))}
"""


def _escape(part: str) -> str:
    """``part`` without braces (they would end a Redis Cluster hash tag), reversibly."""
    return part.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _awaited(fn: Callable[[], Awaitable[Any]]) -> Any:
    return await fn()


def _quiet(task: asyncio.Task[Any]) -> None:
    """Mark a finished task's outcome as seen (it was cancelled or its caller left)."""
    if not task.cancelled():
        task.exception()


class RedisBackend:
    """Limiter state, usage cache, single flight and token shared through Redis.

    See the module docs for what is shared and what happens when Redis fails. In short: an
    unreachable Redis costs at most ``wait`` once; after that, operations fail (or fall back)
    at once until a background probe finds Redis again. With ``fail_open=N`` a process cut off
    from Redis while the others still reach it adds up to ``budget / N`` to the shared budget
    for as long as the partition lasts.

    Args:
        client: a ``redis.asyncio.Redis`` (use :meth:`from_url`).
        prefix: namespace of every key.
        fail_open: ``None`` (default) fails closed when Redis is unreachable; an int N falls
            back to local limits at ``budget / N`` (N processes share the budget).
        wait: longest time spent waiting on an unreachable Redis before giving up (seconds).
        lock_ttl: expiry of a single-flight lock (renewed while held).
        probe_interval: how often Redis is pinged while it is known to be down (seconds).
        owns_client: close ``client`` (and its pool) in :meth:`aclose`.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "esim_async",
        fail_open: int | None = None,
        wait: float = 5.0,
        lock_ttl: float = 30.0,
        probe_interval: float = 1.0,
        owns_client: bool = False,
    ) -> None:
        if fail_open is not None and fail_open < 1:
            raise ValueError("fail_open is the number of processes sharing the budget (>= 1)")
        if not wait > 0 or not lock_ttl > 0 or not probe_interval > 0:
            raise ValueError("wait, lock_ttl and probe_interval must be > 0")
        self.redis = client
        self.prefix = prefix
        self.fail_open = fail_open
        self.wait = wait
        self.lock_ttl = lock_ttl
        self.probe_interval = probe_interval
        self._owns_client = owns_client
        self._lock = client.register_script(_LOCK)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._cache_put = client.register_script(_CACHE_PUT)
        self._cache_get = client.register_script(_CACHE_GET)
        self._background: set[asyncio.Task[Any]] = set()
        #: Redis is known to be down: operations fail at once until the probe finds it again.
        self._down = False
        self._prober: asyncio.Task[None] | None = None
        #: Single-flight locks held by this process (their keepers check them on demand).
        self._holds: set[_Hold] = set()
        #: (lock, tokens) of lock attempts that gave up and may have run after all.
        self._ghosts: deque[tuple[str, tuple[str, ...]]] = deque(maxlen=_MAX_GHOSTS)

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

    @property
    def available(self) -> bool:
        """False while Redis is known to be down (until the background probe reaches it)."""
        return not self._down

    def key(self, name: str, *parts: str) -> str:
        """The Redis key ``prefix:{name}:part...`` (``name`` is the Redis Cluster hash tag:
        keys under one name share a slot, as the keys of one script must)."""
        return ":".join((_escape(self.prefix), "{" + _escape(name) + "}", *parts))

    async def call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run one Redis operation, retrying a broken connection until ``wait`` runs out.

        Raises :class:`BackendUnavailableError` then, and at once while Redis is known to be
        down (the first operation that ran out of ``wait`` marks it so).
        """
        now = _CLOCK.now
        deadline = now() + self.wait
        delay = 0.05
        failed = False
        while True:
            if self._down:
                raise BackendUnavailableError("Redis unavailable (waiting for it to answer again)")
            try:
                async with asyncio.timeout(max(0.01, deadline - now())):
                    result = await fn()
            except (RedisError, OSError, TimeoutError) as exc:
                failed = True
                if now() + delay >= deadline:
                    self._trip(exc)
                    raise BackendUnavailableError(f"Redis unavailable: {exc}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            if failed:
                self._recovered()  # a new connection: Redis may have restarted meanwhile
            return result

    def _trip(self, exc: BaseException) -> None:
        """Redis did not answer within ``wait``: fail at once from now on, and probe."""
        if self._down:
            return
        self._down = True
        logger.warning(
            "redis backend: Redis unavailable (%s); operations fail%s until it answers again",
            exc,
            "" if self.fail_open is None else " over to local limits",
        )
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        while self._down:
            await asyncio.sleep(self.probe_interval)
            try:
                async with asyncio.timeout(self.wait):
                    await self.redis.ping()
            except (RedisError, OSError, TimeoutError):
                continue
            self._down = False
            logger.warning("redis backend: Redis answers again")
            self._recovered()

    def _recovered(self) -> None:
        """Redis answers after a failure: its state may be gone. Held locks are checked now,
        and lock attempts that gave up are cleaned up."""
        self._state_lost()
        while self._ghosts:
            name, tokens = self._ghosts.popleft()
            self.spawn(self.call(functools.partial(self._release, keys=[name], args=tokens)))

    def _state_lost(self) -> None:
        """Redis may have lost its state: every held lock checks itself now."""
        for hold in self._holds:
            hold.check.set()

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in the background (best effort: failures are logged, never raised)."""

        async def run() -> None:
            try:
                await coro
            except BackendUnavailableError as exc:
                logger.debug("redis backend: background operation skipped: %s", exc)
            except Exception as exc:
                logger.warning("redis backend: background operation failed: %s", exc)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ the Backend protocol

    def limiter(
        self, name: str, *, shared: Rate | None, per_key: Rate | None, margin: float, clock: Clock
    ) -> EndpointLimiter:
        """The limiter of endpoint ``name``, its windows and state in Redis."""
        store = RedisWindowStore(
            self.redis,
            functools.partial(self.key, name),
            call=self.call,
            clock=clock,
            on_lost=self._state_lost,
        )
        return EndpointLimiter(
            name,
            shared=shared,
            per_key=per_key,
            clock=clock,
            margin=margin,
            stamp_sends=True,
            store=store,
            fail_open=self.fail_open,
        )

    def cache(
        self, name: str, *, ttl: float, long_ttl: float, maxsize: int, clock: Clock
    ) -> TTLStore[Any, Any]:
        """The in-process first level; :meth:`shared_cache` is the second."""
        return TTLStore(ttl=ttl, long_ttl=long_ttl, maxsize=maxsize, clock=clock)

    def shared_cache(
        self,
        name: str,
        value_type: Any,
        *,
        ttl: float,
        long_ttl: float,
        clock: Clock | None = None,
    ) -> RedisCache:
        """The usage cache shared by every process (``clock``: whose wall time the entries'
        ``fetched_at`` are on; the system's by default)."""
        return RedisCache(self, name, value_type, ttl=ttl, long_ttl=long_ttl, clock=clock)

    def flight(self, name: str) -> RedisFlight:
        return RedisFlight(self, name)

    def token_store(self, name: str) -> RedisTokenStore:
        return RedisTokenStore(self, name)

    async def aclose(self) -> None:
        """Stop probing, let background writes (lock releases) finish briefly, and close the
        client if this backend created it."""
        prober = self._prober
        if prober is not None:
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober
            self._prober = None
        if self._background:
            _, pending = await asyncio.wait(set(self._background), timeout=min(self.wait, 1.0))
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if self._owns_client:
            with contextlib.suppress(Exception):
                await self.redis.aclose(close_connection_pool=True)


class _Prefetched:
    """A cached answer read together with a lock, handed to the first read inside it."""

    __slots__ = ("age", "key", "raw", "used")

    def __init__(self, key: str, raw: bytes | None, age: float) -> None:
        self.key = key
        self.raw = raw
        self.age = age
        self.used = False

    def take(self, key: str) -> tuple[bytes | None, float] | None:
        if self.used or key != self.key:
            return None
        self.used = True
        return self.raw, self.age


#: The answer read with the single-flight lock that the current task holds.
_PREFETCHED: contextvars.ContextVar[_Prefetched | None] = contextvars.ContextVar(
    "esim_async_redis_prefetched", default=None
)


class RedisCache:
    """The second-level cache: msgpack-encoded entries that expire with their TTL.

    Ages are judged on the Redis server's clock: the writer gives an entry's age (on its own
    clock, from its own fetch time), Redis keeps the fetch time on its clock, and a reader gets
    the age on Redis' clock. Entries come back with ``fetched_at`` on this process's wall
    clock (``clock.wall()``), so that ``clock.wall() - fetched_at`` is that age.
    """

    def __init__(
        self,
        backend: RedisBackend,
        name: str,
        value_type: Any,
        *,
        ttl: float,
        long_ttl: float,
        clock: Clock | None = None,
    ) -> None:
        self._wall: Callable[[], float] = (clock or _CLOCK).wall
        self._backend = backend
        self._name = name
        self._ttl = ttl
        self._long_ttl = long_ttl
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(CacheEntry[value_type])

    def _key(self, key: Hashable) -> str:
        return self._backend.key(f"{self._name}:{key}", "cache")

    def _lifetime(self, entry: CacheEntry[Any]) -> float:
        return self._long_ttl if entry.long_lived else self._ttl

    async def get(self, key: Hashable) -> CacheEntry[Any] | None:
        """The shared entry, its ``fetched_at`` on this process's wall clock (its age judged
        on Redis' clock); ``None`` when missing, older than its TTL, or when Redis cannot be
        read (the cache is an optimisation)."""
        name = self._key(key)
        prefetched = _PREFETCHED.get()
        found = prefetched.take(name) if prefetched is not None else None
        if found is None:
            backend = self._backend
            try:
                reply = await backend.call(lambda: backend._cache_get(keys=[name]))
            except BackendUnavailableError:
                return None
            found = (reply[0], float(_text(reply[1]))) if reply else (None, 0.0)
        raw, age = found
        if not raw:
            return None
        try:
            entry: CacheEntry[Any] = self._decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if age >= self._lifetime(entry):
            return None
        return CacheEntry(entry.value, self._wall() - age, entry.stored, entry.long_lived)

    async def set(self, key: Hashable, entry: CacheEntry[Any]) -> None:
        """Share ``entry`` for the rest of its TTL, counted from its ``fetched_at`` (this
        process's wall clock, as it produced it)."""
        age = max(0.0, self._wall() - entry.fetched_at)
        left = self._lifetime(entry) - age
        if left <= 0:
            return
        blob = self._encoder.encode(entry)
        px = max(1, int(left * 1000))
        name = self._key(key)
        backend = self._backend
        with contextlib.suppress(BackendUnavailableError):
            await backend.call(lambda: backend._cache_put(keys=[name], args=[blob, repr(age), px]))

    async def invalidate(self, key: Hashable) -> None:
        name = self._key(key)
        with contextlib.suppress(BackendUnavailableError):
            await self._backend.call(lambda: self._backend.redis.delete(name))


class _Hold:
    """A single-flight lock this process holds."""

    __slots__ = ("check", "entry", "lost", "name", "prefetched", "taken_at", "token")

    def __init__(
        self, name: str, entry: str, token: str, taken_at: str, prefetched: _Prefetched
    ) -> None:
        self.name = name
        self.entry = entry
        self.token = token
        self.taken_at = taken_at
        self.prefetched = prefetched
        #: Set when another process holds the lock, or answered while it was gone.
        self.lost = asyncio.Event()
        #: Set to make the keeper check the lock now instead of at its next renewal.
        self.check = asyncio.Event()


class RedisFlight:
    """Single flight within the process (no extra request) and across processes (a lock per
    key, renewed while held). A caller that waited for another process's lock runs ``fn``
    afterwards; ``fn`` finds the answer that process stored in the shared cache. A holder whose
    lock is taken over while ``fn`` runs (Redis restarted, or paused past the lock's TTL)
    cancels ``fn``, waits for the new holder and runs ``fn`` again, so one eSIM is fetched
    once."""

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
        loop = asyncio.get_running_loop()
        while True:
            async with self._hold(key) as hold:
                if hold is None:  # fail-open without Redis: merged within this process only
                    return await fn()
                context = contextvars.copy_context()
                context.run(_PREFETCHED.set, hold.prefetched)
                work: asyncio.Task[Any] = loop.create_task(_awaited(fn), context=context)
                lost = loop.create_task(hold.lost.wait())
                try:
                    await asyncio.wait((work, lost), return_when=asyncio.FIRST_COMPLETED)
                except BaseException:
                    for task in (work, lost):
                        task.cancel()
                        task.add_done_callback(_quiet)
                    raise
                lost.cancel()
                if work.done():
                    return work.result()
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                logger.warning(
                    "redis backend: the lock on %s passed to another process; using its answer",
                    hold.name,
                )

    @contextlib.asynccontextmanager
    async def lock(self, key: Hashable) -> AsyncIterator[None]:
        """Hold the lock of ``key`` across processes (without Redis: fail closed raises
        :class:`BackendUnavailableError`, fail open goes ahead unlocked)."""
        async with self._hold(key):
            yield

    @contextlib.asynccontextmanager
    async def _hold(self, key: Hashable) -> AsyncIterator[_Hold | None]:
        backend = self._backend
        tag = f"{self._name}:{key}"
        name, entry = backend.key(tag, "lock"), backend.key(tag, "cache")
        ttl_ms = max(1, int(backend.lock_ttl * 1000))
        #: Tokens of attempts that timed out: they may have taken the lock after all.
        unsure: list[str] = []
        hold: _Hold | None = None
        delay = 0.01
        while True:
            try:
                reply = await backend.call(
                    functools.partial(self._attempt, name, entry, ttl_ms, unsure)
                )
            except BackendUnavailableError:
                if unsure:
                    backend._ghosts.append((name, tuple(unsure)))
                if backend.fail_open is None:
                    raise
                break
            token, taken_at, raw, age = reply
            if token:
                prefetched = _Prefetched(entry, raw or None, float(_text(age) or 0.0))
                hold = _Hold(name, entry, _text(token), _text(taken_at), prefetched)
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
        if hold is None:
            yield None
            return
        backend._holds.add(hold)
        keeper = asyncio.get_running_loop().create_task(self._keep(hold, ttl_ms))
        try:
            yield hold
        finally:
            hold.prefetched.used = True
            backend._holds.discard(hold)
            keeper.cancel()
            keeper.add_done_callback(_quiet)
            if not hold.lost.is_set():
                tokens = (hold.token, *unsure)
                backend.spawn(
                    backend.call(functools.partial(backend._release, keys=[name], args=tokens))
                )

    async def _attempt(self, name: str, entry: str, ttl_ms: int, unsure: list[str]) -> Any:
        """One try at the lock, with a token of its own."""
        token = secrets.token_hex(8)
        earlier = list(unsure)
        unsure.append(token)
        reply = await self._backend._lock(keys=[name, entry], args=[ttl_ms, token, *earlier])
        unsure.remove(token)  # it ran: its outcome is in the reply
        return reply

    async def _keep(self, hold: _Hold, ttl_ms: int) -> None:
        """Renew ``hold`` while it is held; set ``hold.lost`` when it passed to another."""
        backend = self._backend
        interval = min(backend.lock_ttl / 3, 1.0)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await hold.check.wait()
            hold.check.clear()
            try:
                status = await backend.call(
                    lambda: backend._renew(
                        keys=[hold.name, hold.entry], args=[hold.token, ttl_ms, hold.taken_at]
                    )
                )
            except BackendUnavailableError:
                continue  # kept trying: Redis will say whether the lock is still this one's
            if int(status) == 0:
                hold.lost.set()
                return
            if int(status) == 2:
                logger.warning(
                    "redis backend: the lock on %s was lost with Redis' state; taken again",
                    hold.name,
                )

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
        return _text(raw), ttl_ms / 1000

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
        backend.spawn(
            backend.call(functools.partial(backend._release, keys=[self._key], args=[token]))
        )

    def lock(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._flight.lock("refresh")

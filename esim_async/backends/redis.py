"""One budget, one cache, one token across processes and hosts: the Redis backend.

With ``AiraloClient(..., backend=RedisBackend.from_url("redis://localhost:6379/0"))`` every
process sharing the credentials takes its permits from the same windows, reads and writes one
usage cache, merges concurrent fetches of one ICCID and shares one token. Every piece of shared
state is kept by the Lua scripts in ``backends/lua/`` on the Redis server's clock.

- **Limits**: a limiter's windows and state live in Redis
  (:class:`~esim_async.backends.redis_store.RedisWindowStore`); its queue is the in-process
  :class:`~esim_async.limits.EndpointLimiter`, as with the memory backend.
- **Cache**: msgpack-encoded answers behind the in-process cache, their fetch time kept as
  Redis time, so a process whose clock is wrong cannot make an old answer look new.
- **Single flight**: a lock per ICCID, taken in the round trip that reads the cached answer,
  with a fresh token per attempt (an attempt that timed out but ran anyway is recognised as the
  caller's own) and renewed while held. A holder that finds its lock taken over abandons its
  fetch and uses the other holder's answer; one that finds it gone with no newer answer takes
  it again.
- **Token**: stored with its expiry; one process asks for it, the others use it.
- **Keys**: ``prefix:{name}:part``; ``{name}`` (provider, account and ``base_url``) is the
  Redis Cluster hash tag, so the keys one script touches share a slot. Every key has a TTL.

**Failures.** An operation waits at most ``wait`` seconds for an unreachable Redis; the first
that runs out marks Redis down, and from then on operations fail (or fall back) at once, those
still waiting on Redis included, while a background probe pings Redis every ``probe_interval``
seconds. An operation Redis refuses (a key of another type under the prefix, an argument it
rejects) fails at once and does not mark Redis down. Fail closed (default): a
limiter's queued callers all get :class:`BackendUnavailableError` together; lock and token calls
raise it; the shared cache answers "missing" and skips writes. ``fail_open=N``: each limiter
falls back to local limits at ``budget / N`` and, once back on Redis, waits one period of the
shared limit first. Budget/N holds only when every process loses Redis together: under a partial
partition each process cut off sends up to ``budget / N`` on top of the full budget the others
share. After Redis loses a limiter's state (restart without persistence, failover, flush), every
process waits one period of the shared limit before its next admission (quarantine), also when
a process that had not used the limiter yet recreated the state first (it cannot tell a loss
from idleness, so its own first sends are not held); a state that expired while idle is not a
loss. Per-ICCID windows are not rebuilt after a loss. Locks released while Redis is down are
released once it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import logging
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator, Sequence
from typing import Any

import msgspec

from ..cache import CacheEntry, FlightOptions, SingleFlight, TTLStore
from ..clock import Clock, MonotonicClock
from ..limits import BackendUnavailableError, EndpointLimiter, Rate
from .redis_store import RedisWindowStore, as_text, register_script

try:
    import redis.asyncio as aioredis
    from redis.exceptions import DataError, RedisError, ResponseError
except ImportError as exc:  # pragma: no cover - depends on the optional extra
    raise ImportError("the Redis backend needs redis-py: pip install 'esim-async[redis]'") from exc

__all__ = ["BackendUnavailableError", "RedisBackend"]

logger = logging.getLogger("esim_async")

#: Time for the waits on Redis and the cache's wall time, when no clock is given.
_CLOCK = MonotonicClock()

#: Lock attempts of unknown fate remembered for cleanup once Redis answers again.
_MAX_GHOSTS = 256

_SCRIPTS = ("lock_take", "lock_renew", "lock_release", "cache_put", "cache_get")


def _escape(part: str) -> str:
    """``part`` without braces (they would end a Redis Cluster hash tag), reversibly."""
    return part.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


#: Error codes of an operation Redis refuses whatever the moment (``ERR``: an argument or a
#: script error; ``WRONGTYPE``: a key of another type), unlike BUSY, LOADING, MISCONF, OOM...
_REFUSALS = frozenset({"ERR", "WRONGTYPE"})


def _refused(exc: BaseException) -> bool:
    """Whether Redis answered and refused the operation itself (trying again would get the
    same answer), rather than being unreachable or unable to serve for a while."""
    if isinstance(exc, DataError):
        return True
    if type(exc) is not ResponseError:
        return False
    code = getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]
    return code in _REFUSALS


def _reason(exc: BaseException) -> str:
    """What went wrong, also for errors without a message (a time-out)."""
    return str(exc) or type(exc).__name__


async def _awaited(fn: Callable[[], Awaitable[Any]]) -> Any:
    return await fn()


def _quiet(task: asyncio.Task[Any]) -> None:
    """Mark a finished task's outcome as seen (it was cancelled or its caller left)."""
    if not task.cancelled():
        task.exception()


class RedisBackend:
    """Limiter state, usage cache, single flight and token shared through Redis (see the
    module docs for what is shared and what happens when Redis fails).

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
        self._scripts = {name: register_script(client, name) for name in _SCRIPTS}
        self._background: set[asyncio.Task[Any]] = set()
        #: Redis is known to be down: operations fail at once until the probe finds it again.
        self._down = False
        #: Completes when Redis is next known to be down (see :meth:`down_signal`).
        self._down_future: asyncio.Future[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        #: The time limits of the operations waiting on Redis (cut short when it goes down).
        self._in_flight: set[asyncio.Timeout] = set()
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

    def down_signal(self) -> asyncio.Future[None]:
        """A future that completes once Redis is known to be down (done already while it is):
        a limiter waiting for its windows wakes then, so its queued callers learn at once."""
        future = self._down_future
        if future is None or (future.done() and not self._down):
            future = self._down_future = asyncio.get_running_loop().create_future()
            if self._down:
                future.set_result(None)
        return future

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
                async with asyncio.timeout(max(0.01, deadline - now())) as timeout:
                    self._in_flight.add(timeout)
                    try:
                        result = await fn()
                    finally:
                        self._in_flight.discard(timeout)
            except (RedisError, OSError, TimeoutError) as exc:
                if _refused(exc):  # Redis answered: trying again would get the same answer
                    raise BackendUnavailableError(
                        f"Redis refused the operation: {_reason(exc)}"
                    ) from exc
                failed = True
                # Out of ``wait``, or another operation ran out of it meanwhile.
                if self._down or now() + delay >= deadline:
                    self._trip(exc)
                    raise BackendUnavailableError(f"Redis unavailable: {_reason(exc)}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            if failed:
                self._recovered()  # a new connection: Redis may have restarted meanwhile
            return result

    def _eval(self, script: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Awaitable[Any]:
        """One run of the shipped script ``script`` (no retry: see :meth:`_run`)."""
        return self._scripts[script](keys=list(keys), args=list(args))  # type: ignore[no-any-return]

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        return await self.call(functools.partial(self._eval, script, keys, args))

    @contextlib.contextmanager
    def _tolerated(self) -> Iterator[None]:
        """Swallow :class:`BackendUnavailableError` when failing open (re-raise otherwise)."""
        try:
            yield
        except BackendUnavailableError:
            if self.fail_open is None:
                raise

    def _trip(self, exc: BaseException) -> None:
        """Redis did not answer within ``wait``: fail at once from now on, and probe."""
        if self._down:
            return
        self._down = True
        if self._down_future is not None and not self._down_future.done():
            self._down_future.set_result(None)
        logger.warning(
            "redis backend: Redis unavailable (%s); operations fail%s until it answers again",
            _reason(exc),
            "" if self.fail_open is None else " over to local limits",
        )
        # Operations still waiting on Redis give up now, as the ones after them will.
        when = asyncio.get_running_loop().time()
        for timeout in list(self._in_flight):
            if not timeout.expired():
                timeout.reschedule(when)
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
        """Redis answers after a failure and may have lost its state: held locks check
        themselves now, and lock attempts that gave up are cleaned up."""
        self._state_lost()
        while self._ghosts:
            self._release_later(*self._ghosts.popleft())

    def _state_lost(self) -> None:
        for hold in self._holds:
            hold.check.set()

    def _release_later(self, name: str, tokens: Sequence[str]) -> None:
        """Delete lock (or token) ``name`` in the background if it holds one of ``tokens``;
        while Redis cannot be reached, once it answers again (or it expires first)."""
        kept = tuple(tokens)

        async def release() -> None:
            try:
                await self._run("lock_release", [name], kept)
            except BackendUnavailableError:
                self._ghosts.append((name, kept))
                raise

        self.spawn(release())

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
            down_signal=self.down_signal,
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
            await asyncio.gather(*pending, return_exceptions=True)
        if self._owns_client:
            with contextlib.suppress(Exception):
                await self.redis.aclose(close_connection_pool=True)


@dataclasses.dataclass(eq=False, slots=True)
class _Prefetched:
    """A cached answer read together with a lock, handed to the first read inside it."""

    key: str
    raw: bytes | None
    age: float
    used: bool = False

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

    The writer gives an entry's age (on its own clock), Redis keeps the fetch time on its
    clock, and a reader gets the age on Redis' clock. Entries come back with ``fetched_at`` on
    this process's wall clock (``clock.wall()``), so that ``clock.wall() - fetched_at`` is that
    age.
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
        """The shared entry; ``None`` when missing, older than its TTL, or when Redis cannot
        be read (the cache is an optimisation)."""
        name = self._key(key)
        prefetched = _PREFETCHED.get()
        found = prefetched.take(name) if prefetched is not None else None
        if found is None:
            try:
                reply = await self._backend._run("cache_get", [name])
            except BackendUnavailableError:
                return None
            found = (reply[0], float(as_text(reply[1]))) if reply else (None, 0.0)
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
        """Share ``entry`` for the rest of its TTL, counted from its ``fetched_at``."""
        age = max(0.0, self._wall() - entry.fetched_at)
        left = self._lifetime(entry) - age
        if left <= 0:
            return
        args = [self._encoder.encode(entry), repr(age), max(1, int(left * 1000))]
        with contextlib.suppress(BackendUnavailableError):
            await self._backend._run("cache_put", [self._key(key)], args)

    async def invalidate(self, key: Hashable) -> None:
        name = self._key(key)
        with contextlib.suppress(BackendUnavailableError):
            await self._backend.call(lambda: self._backend.redis.delete(name))


@dataclasses.dataclass(eq=False, slots=True)
class _Hold:
    """A single-flight lock this process holds."""

    name: str
    entry: str
    token: str
    taken_at: str
    prefetched: _Prefetched
    #: Set when another process holds the lock, or answered while it was gone.
    lost: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    #: Set to make the keeper check the lock now instead of at its next renewal.
    check: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class RedisFlight:
    """Single flight within the process (no extra request) and across processes (a lock per
    key, renewed while held). A caller that waited for another process's lock runs ``fn``
    afterwards and finds that process's answer in the shared cache. A holder whose lock is
    taken over while ``fn`` runs cancels ``fn``, waits for the new holder and runs ``fn``
    again, so one eSIM is fetched once."""

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
        while hold is None:
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
            except BaseException:
                # Cancelled while an attempt was on its way: it may have taken the lock.
                if unsure:
                    backend._release_later(name, tuple(unsure))
                raise
            token, taken_at, raw, age = reply
            if token:
                prefetched = _Prefetched(entry, raw or None, float(as_text(age) or 0.0))
                hold = _Hold(name, entry, as_text(token), as_text(taken_at), prefetched)
            else:
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
                backend._release_later(name, (hold.token, *unsure))

    async def _attempt(self, name: str, entry: str, ttl_ms: int, unsure: list[str]) -> Any:
        """One try at the lock, with a token of its own."""
        token = secrets.token_hex(8)
        earlier = list(unsure)
        unsure.append(token)
        reply = await self._backend._eval("lock_take", [name, entry], [ttl_ms, token, *earlier])
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
                status = int(
                    await backend._run(
                        "lock_renew", [hold.name, hold.entry], [hold.token, ttl_ms, hold.taken_at]
                    )
                )
            except BackendUnavailableError:
                continue  # kept trying: Redis will say whether the lock is still this one's
            if status == 0:
                hold.lost.set()
                return
            if status == 2:
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
        raw = ttl_ms = None
        with self._backend._tolerated():
            raw, ttl_ms = await self._backend.call(self._get_with_ttl)
        if raw is None or ttl_ms is None or ttl_ms <= 0:
            return None
        return as_text(raw), ttl_ms / 1000

    async def _get_with_ttl(self) -> list[Any]:
        async with self._backend.redis.pipeline(transaction=False) as pipe:
            pipe.get(self._key)
            pipe.pttl(self._key)
            return await pipe.execute()

    async def set(self, token: str, valid_for: float) -> None:
        if valid_for <= 0:
            return
        redis = self._backend.redis
        with self._backend._tolerated():
            await self._backend.call(
                lambda: redis.set(self._key, token, px=max(1, int(valid_for * 1000)))
            )

    def discard_later(self, token: str) -> None:
        self._backend._release_later(self._key, [token])

    def lock(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._flight.lock("refresh")

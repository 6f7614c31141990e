"""The usage cache (a TTL cache mirroring the server's), single flight, the cached endpoint
built on them, and the scope of calls in progress that closing the client ends.

cachetools is not async-aware, so the cache holds finished values only and a small map of
in-flight tasks merges concurrent calls for the same key.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import msgspec
from cachetools import TTLCache

from . import _constants as C
from .clock import Clock
from .errors import NotFoundError, TransportError
from .instrument import CallScope as InstrumentScope
from .instrument import Instrumentation, bind_scope, unbind_scope

if TYPE_CHECKING:
    from .backends.base import Cache, Flight, SharedCache
    from .stats import ClientStats

__all__ = [
    "CacheEntry",
    "CachedEndpoint",
    "CallScope",
    "FlightOptions",
    "SingleFlight",
    "TTLStore",
]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class CacheEntry(msgspec.Struct, Generic[T], gc=False, array_like=True):
    """One cached answer.

    Attributes:
        value: the answer, or ``None`` for a negative entry (the provider said 404).
        fetched_at: POSIX time at which the provider produced it.
        stored: the clock's time when it was stored (ages are measured on the clock).
        long_lived: kept for the negative TTL (404s, recycled eSIMs) instead of the normal TTL.
    """

    value: T | None
    fetched_at: float
    stored: float
    long_lived: bool = False


class TTLStore(Generic[K, T]):
    """A bounded TTL cache of :class:`CacheEntry` with two lifetimes.

    Normal entries live ``ttl`` seconds, at most ``maxsize`` of them; long-lived ones (404s,
    recycled eSIMs) live ``long_ttl`` seconds in a second cache of at most ``long_maxsize``
    (a tenth of ``maxsize`` by default). Each is a cachetools ``TTLCache``: when full, expired
    entries go first, then the least recently used. Time comes from the injected clock.
    """

    def __init__(
        self,
        *,
        ttl: float = C.DEFAULT_CACHE_TTL,
        long_ttl: float = C.DEFAULT_NEGATIVE_CACHE_TTL,
        maxsize: int = C.DEFAULT_CACHE_MAXSIZE,
        long_maxsize: int | None = None,
        clock: Clock,
    ) -> None:
        if ttl < 0 or long_ttl < 0:
            raise ValueError("cache TTLs must be >= 0")
        if maxsize < 1:
            raise ValueError("cache maxsize must be >= 1")
        self.ttl = ttl
        self.long_ttl = long_ttl
        self._clock = clock
        long_size = long_maxsize if long_maxsize is not None else max(1, maxsize // 10)
        self._data: TTLCache[K, CacheEntry[T]] = TTLCache(maxsize=maxsize, ttl=ttl, timer=clock.now)
        self._long: TTLCache[K, CacheEntry[T]] = TTLCache(
            maxsize=long_size, ttl=long_ttl, timer=clock.now
        )
        self._any_long = False

    @property
    def maxsize(self) -> int:
        return int(self._data.maxsize)

    def __len__(self) -> int:
        return len(self._data) + len(self._long)

    def get(self, key: K, max_age: float | None = None) -> CacheEntry[T] | None:
        """The live entry for ``key``, if any (and, with ``max_age``, if it is young enough)."""
        # Indexing reads a TTLCache in one step (``get`` checks expiry twice): the hot path.
        try:
            entry = self._data[key]
            ttl = self.ttl
        except KeyError:
            if not self._any_long:
                return None
            try:
                entry = self._long[key]
            except KeyError:
                return None
            ttl = self.long_ttl
        # An entry lives ``ttl`` from its own stored time: one copied in from a shared cache
        # arrives already aged and must not live a full TTL more here.
        age = self._clock.now() - entry.stored
        if age >= ttl or (max_age is not None and age > max_age):
            return None
        return entry

    def set(self, key: K, entry: CacheEntry[T]) -> None:
        if entry.long_lived:
            self._data.pop(key, None)
            if self.long_ttl > 0:
                self._long[key] = entry
                self._any_long = True
        else:
            # (a flag, not len(): a timed cache's len() first expires entries, on the hot path)
            if self._any_long:
                self._long.pop(key, None)
            if self.ttl > 0:
                self._data[key] = entry

    def invalidate(self, key: K) -> None:
        self._data.pop(key, None)
        self._long.pop(key, None)

    def clear(self) -> None:
        self._data.clear()
        self._long.clear()
        self._any_long = False


class FlightOptions(Protocol):
    """How a shared call runs (its priority, its retries...): a caller that joins the call
    brings its own options, and the call takes the better of both."""

    def join(self, other: Any) -> None:
        """A caller with the options ``other`` joined: adopt whatever of them is better."""
        ...


class _Call(Generic[T]):
    __slots__ = ("options", "task", "waiters")

    def __init__(self, task: asyncio.Task[T], options: FlightOptions | None) -> None:
        self.task = task
        self.options = options
        self.waiters = 0


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # mark retrieved: callers that left must not cause warnings


def _closing_error() -> TransportError:
    return TransportError("the request was cancelled while in flight (the client is closing)")


class SingleFlight(Generic[K, T]):
    """Concurrent calls for the same key share one in-flight task.

    A cancelled caller does not cancel the others, and the shared request is not cancelled while
    anyone still waits for it; it is cancelled only when every caller waiting for it has gone,
    and a caller that comes after that starts a new one. A caller that joins brings its
    :class:`FlightOptions`, which the shared call merges into its own. After :meth:`aclose`
    every waiting caller gets a :class:`~esim_async.errors.TransportError`, and so does every
    later call.
    """

    def __init__(self) -> None:
        #: The call a new caller joins, per key.
        self._calls: dict[K, _Call[T]] = {}
        #: Every call still running (a ``fresh`` call can run beside an older one).
        self._tasks: set[asyncio.Task[T]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, key: object) -> bool:
        return key in self._calls

    async def run(
        self,
        key: K,
        fn: Callable[[], Awaitable[T]],
        *,
        fresh: bool = False,
        options: FlightOptions | None = None,
    ) -> tuple[T, bool]:
        """Run ``fn`` for ``key`` unless a call is already in flight; return (result, joined).

        Args:
            key: what identifies the call (an ICCID).
            fn: starts the work when no call for ``key`` is in flight.
            fresh: never join a call already in flight (it started before this one); later
                callers join the new call.
            options: this caller's options; a joined call merges them into its own.
        """
        if self._closed:
            raise TransportError("the client is closed")
        call = None if fresh else self._calls.get(key)
        if call is not None and (call.task.cancelled() or call.task.cancelling()):
            call = None  # it is being cancelled: its answer will never come
        joined = call is not None
        if call is None:
            task: asyncio.Task[T] = asyncio.get_running_loop().create_task(
                fn(),  # type: ignore[arg-type]
                name=f"esim_async flight {key}",
            )
            call = _Call(task, options)
            self._calls[key] = call
            self._tasks.add(task)
            task.add_done_callback(_consume)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(functools.partial(self._forget, key, call))
        elif options is not None and call.options is not None:
            call.options.join(options)
        call.waiters += 1
        try:
            return await asyncio.shield(call.task), joined
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if call.task.cancelled() and me is not None and me.cancelling() == 0:
                # The shared request was cancelled under us (the client is closing), not
                # this caller: answer with a typed error instead of a stray cancellation.
                raise _closing_error() from None
            raise
        finally:
            call.waiters -= 1
            if call.waiters == 0 and not call.task.done():
                # The last caller left: nobody wants the answer. Whoever comes next starts a
                # new call rather than joining one that is being cancelled.
                self._forget(key, call)
                call.task.cancel()

    def _forget(self, key: K, call: _Call[T], _task: object = None) -> None:
        if self._calls.get(key) is call:
            del self._calls[key]

    async def aclose(self) -> None:
        """Cancel every shared call still in flight; later calls are refused."""
        self._closed = True
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class CallScope:
    """Runs calls as tasks that :meth:`aclose` cancels.

    Closing the client thus ends every wait of a call in progress (rate limits, a per-key
    window, a retry's back-off) at once: its caller gets a
    :class:`~esim_async.errors.TransportError` instead of waiting, and no task is left behind.
    A cancelled caller cancels its own call, as if it ran inline.
    """

    __slots__ = ("_closed", "_tasks")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, coro: Coroutine[Any, Any, T], *, name: str = "esim_async call") -> T:
        """Await ``coro`` in a task of this scope and return its result."""
        if self._closed:
            coro.close()
            raise TransportError("the client is closed")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(_consume)
        task.add_done_callback(self._tasks.discard)
        try:
            return await task
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if task.cancelled() and self._closed and me is not None and me.cancelling() == 0:
                raise _closing_error() from None
            raise

    async def aclose(self) -> None:
        """Cancel every call in progress; later calls are refused."""
        self._closed = True
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class CachedEndpoint(Generic[T]):
    """One cached endpoint (usage, package history): its cache, its single flight, the shared
    level across processes, negative entries and the cache counters, behind one path.

    :meth:`fetch` answers from, in order: this process's cache; the shared level (with the age
    the shared level judged, so a copy lives only the rest of its TTL here); one call shared by
    every concurrent caller for the key. An answer is stored, in both levels, at the time it
    arrived (a wait for budget does not age it). A :class:`~esim_async.errors.NotFoundError` is
    remembered for the negative TTL, as is an answer ``long_lived`` picks (a recycled eSIM).

    Args:
        cache: this process's cache (:meth:`Backend.cache`).
        flight: single flight (:meth:`Backend.flight`).
        clock: the client's clock: ages, and the wall time answers are stamped with.
        stats: the client's counters: ``cache_hits``, ``negative_cache_hits``, ``coalesced``.
        shared: the level shared across processes (the Redis backend's), if any.
        long_lived: which answers live the negative TTL.
        on_answer: called with each new answer and its wall time (to stamp it).
    """

    __slots__ = (
        "_background",
        "_cache",
        "_clock",
        "_flight",
        "_instrumentation",
        "_long_lived",
        "_on_answer",
        "_route",
        "_shared",
        "_stats",
    )

    def __init__(
        self,
        *,
        cache: Cache,
        flight: Flight,
        clock: Clock,
        stats: ClientStats,
        shared: SharedCache | None = None,
        long_lived: Callable[[T], bool] | None = None,
        on_answer: Callable[[T, float], None] | None = None,
    ) -> None:
        self._cache = cache
        self._flight = flight
        self._clock = clock
        self._stats = stats
        self._shared = shared
        self._long_lived = long_lived
        self._on_answer = on_answer
        self._instrumentation: Instrumentation | None = None
        self._route: tuple[str, str, str] = ("", "", "")
        #: Deletions in the shared level on their way (awaited by :meth:`aclose`).
        self._background: set[asyncio.Task[None]] = set()

    @property
    def cache(self) -> Cache:
        """This process's cache."""
        return self._cache

    @property
    def flight(self) -> Flight:
        """The single-flight group."""
        return self._flight

    def get(self, key: Hashable, max_age: float | None = None) -> CacheEntry[T] | None:
        """The entry this process holds for ``key`` (at most ``max_age`` seconds old), counted
        as a hit (or a negative hit) when there is one."""
        entry: CacheEntry[T] | None = self._cache.get(key, max_age)
        if entry is not None:
            self._count_hit(entry)
            if self._instrumentation is not None:
                self._report_hit(self._instrumentation, key)
        return entry

    def _report_hit(self, instrumentation: Instrumentation, key: Hashable) -> None:
        """A call answered from this process's cache, as the instrumentation sees it."""
        endpoint, route, base = self._route
        name = str(key)
        url = base + route.replace("{iccid}", name)
        with instrumentation.call(endpoint, "GET", route, url, name) as scope:
            scope.cache("hit")

    def _count_hit(self, entry: CacheEntry[T]) -> None:
        if entry.value is None:
            self._stats.negative_cache_hits += 1
        else:
            self._stats.cache_hits += 1

    def invalidate(self, key: Hashable) -> None:
        """Forget ``key`` here at once, and in the shared level in the background."""
        self._cache.invalidate(key)
        shared = self._shared
        if shared is not None:
            task = asyncio.get_running_loop().create_task(shared.invalidate(key))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def set_instrumentation(
        self, instrumentation: Instrumentation | None, endpoint: str, route: str, url: str
    ) -> None:
        """Report each :meth:`fetch` to ``instrumentation`` (``None``: stop) as a GET of
        ``endpoint`` (``route``: its path template; ``url``: its base URL and path prefix,
        the key's path is filled in from the route)."""
        self._instrumentation = instrumentation
        self._route = (endpoint, route, url)

    async def fetch(
        self,
        key: Hashable,
        fn: Callable[[], Awaitable[T]],
        *,
        refresh: bool = False,
        max_age: float | None = None,
        options: FlightOptions | None = None,
    ) -> tuple[CacheEntry[T], bool]:
        """The entry answering ``key`` (see :meth:`_fetch`), reported to the instrumentation
        when there is one."""
        instrumentation = self._instrumentation
        if instrumentation is None:
            return await self._fetch(key, fn, refresh, max_age, options, None)
        if not refresh:
            entry: CacheEntry[T] | None = self._cache.get(key, max_age)
            if entry is not None:
                self._count_hit(entry)
                self._report_hit(instrumentation, key)
                return entry, True
        endpoint, route, base = self._route
        name = str(key)
        url = base + route.replace("{iccid}", name)
        with instrumentation.call(endpoint, "GET", route, url, name) as scope:
            bound = bind_scope(scope)
            try:
                return await self._fetch(key, fn, refresh, max_age, options, scope)
            finally:
                unbind_scope(bound)

    async def _fetch(
        self,
        key: Hashable,
        fn: Callable[[], Awaitable[T]],
        refresh: bool,
        max_age: float | None,
        options: FlightOptions | None,
        scope: InstrumentScope | None,
    ) -> tuple[CacheEntry[T], bool]:
        """The entry answering ``key``, and whether it came without a request of this call.

        Args:
            key: what is asked for (an ICCID).
            fn: asks the provider; run by one caller of the concurrent ones.
            refresh: skip the cached entries (unless the shared one was answered after this
                call started) and never join a call that was already in flight.
            max_age: accept a cached entry only up to this many seconds old.
            options: this caller's :class:`FlightOptions`, merged into a call it joins.

        Raises:
            NotFoundError: the provider said 404 (remembered as a negative entry; a later
                call gets the negative entry, which the caller turns into an error).
        """
        if not refresh:
            entry = self.get(key, max_age)
            if entry is not None:
                return entry, True
        clock = self._clock
        started = clock.wall()
        shared = self._shared

        async def load() -> tuple[CacheEntry[T], bool]:
            if shared is not None:
                found = await shared.get(key)
                # Another process's answer serves unless this call wants a fresher one; one
                # answered while this call waited (for that process's lock) is fresh enough.
                if found is not None and (
                    (not refresh and (max_age is None or started - found.fetched_at <= max_age))
                    or found.fetched_at >= started
                ):
                    # Its age here is its age there: it lives only the rest of its TTL.
                    age = max(0.0, clock.wall() - found.fetched_at)
                    local = CacheEntry(
                        found.value, found.fetched_at, clock.now() - age, found.long_lived
                    )
                    self._cache.set(key, local)
                    return local, False
            try:
                value = await fn()
            except NotFoundError:
                await self._store(key, CacheEntry(None, clock.wall(), clock.now(), True))
                raise
            stamp = clock.wall()
            if self._on_answer is not None:
                self._on_answer(value, stamp)
            long_lived = self._long_lived is not None and self._long_lived(value)
            entry = CacheEntry(value, stamp, clock.now(), long_lived)
            await self._store(key, entry)
            return entry, True

        (entry, requested), joined = await self._flight.run(
            key, load, fresh=refresh, options=options
        )
        if joined:
            self._stats.coalesced += 1
        elif not requested:
            self._count_hit(entry)
        if scope is not None:
            scope.cache("coalesced" if joined else "miss" if requested else "hit")
        return entry, joined or not requested

    async def _store(self, key: Hashable, entry: CacheEntry[T]) -> None:
        self._cache.set(key, entry)
        if self._shared is not None:
            await self._shared.set(key, entry)

    async def aclose(self) -> None:
        """Cancel the calls in flight (their callers get a ``TransportError``, as do later
        calls) and finish the shared deletions on their way."""
        await self._flight.aclose()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

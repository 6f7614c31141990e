"""The TTL cache mirroring the server's, single flight, the cached endpoint built on them, and
the scope of calls in progress that closing the client ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import msgspec
from cachetools import LRUCache

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


class _Entries(LRUCache[K, CacheEntry[T]], Generic[K, T]):
    """A cachetools ``LRUCache`` of entries that carry their own expiry (``stored + ttl``):
    storing costs no timer bookkeeping, :class:`TTLStore` checks an entry's age when it reads
    it."""

    def __init__(self, maxsize: int, ttl: float, now: Callable[[], float]) -> None:
        super().__init__(maxsize)
        self.ttl = ttl
        self._now = now
        #: Each entry's expiry time, by key, in the order they were stored (written by the
        #: store; it holds the same keys as the cache).
        self.expiry: OrderedDict[K, float] = OrderedDict()

    def __delitem__(self, key: K) -> None:
        super().__delitem__(key)
        self.expiry.pop(key, None)

    def popitem(self) -> tuple[K, CacheEntry[T]]:
        """Make room: the first stored entry if it has expired, else the least recently used."""
        expiry = self.expiry
        if expiry:
            key, expires = next(iter(expiry.items()))
            if expires <= self._now():
                return key, self.pop(key)
        return super().popitem()

    def expire(self) -> None:
        """Drop every expired entry (a scan of the whole cache)."""
        now = self._now()
        for key in [key for key, expires in self.expiry.items() if expires <= now]:
            del self[key]

    def clear(self) -> None:
        super().clear()
        self.expiry.clear()


class TTLStore(Generic[K, T]):
    """A bounded TTL cache of :class:`CacheEntry` with two lifetimes.

    Normal entries live ``ttl`` seconds from their own stored time, at most ``maxsize`` of them;
    long-lived ones (404s, recycled eSIMs) live ``long_ttl`` seconds, at most a tenth of
    ``maxsize``. Each is a cachetools ``LRUCache`` on the injected clock: when full, an expired
    entry goes first, then the least recently used. An expired entry is never answered; it is
    dropped when read, when room is needed, or when the store is counted.
    """

    def __init__(
        self,
        *,
        ttl: float = C.DEFAULT_CACHE_TTL,
        long_ttl: float = C.DEFAULT_NEGATIVE_CACHE_TTL,
        maxsize: int = C.DEFAULT_CACHE_MAXSIZE,
        clock: Clock,
    ) -> None:
        if ttl < 0 or long_ttl < 0:
            raise ValueError("cache TTLs must be >= 0")
        if maxsize < 1:
            raise ValueError("cache maxsize must be >= 1")
        self.ttl = ttl
        self.long_ttl = long_ttl
        self._clock = clock
        self._data: _Entries[K, T] = _Entries(maxsize, ttl, clock.now)
        self._long: _Entries[K, T] = _Entries(max(1, maxsize // 10), long_ttl, clock.now)
        #: Some long-lived entry was stored (since the last :meth:`clear`).
        self._any_long = False

    def __len__(self) -> int:
        self._data.expire()
        self._long.expire()
        return len(self._data) + len(self._long)

    def get(self, key: K, max_age: float | None = None) -> CacheEntry[T] | None:
        """The live entry for ``key``, if any (and, with ``max_age``, if it is young enough)."""
        # (``expiry`` holds the keys of the entries: a miss costs a dict lookup)
        store = self._data
        if key not in store.expiry:
            if not self._any_long or key not in self._long.expiry:
                return None
            store = self._long
        entry = store[key]
        # An entry lives its TTL from its own stored time: one copied in from a shared cache
        # arrives already aged and must not live a full TTL more here.
        age = self._clock.now() - entry.stored
        if age >= store.ttl:
            del store[key]
            return None
        if max_age is not None and age > max_age:
            return None
        return entry

    def set(self, key: K, entry: CacheEntry[T]) -> None:
        other: _Entries[K, T] | None
        if entry.long_lived:
            store, other = self._long, self._data
            self._any_long = True
        else:
            store = self._data
            other = self._long if self._any_long else None
        if other is not None and key in other.expiry:
            del other[key]
        if store.ttl > 0:
            store[key] = entry
            expiry = store.expiry
            expiry[key] = entry.stored + store.ttl
            expiry.move_to_end(key)

    def invalidate(self, key: K) -> None:
        for store in (self._data, self._long):
            if key in store.expiry:
                del store[key]

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
    """One shared call: who runs it, its options, and the futures of the callers waiting."""

    __slots__ = ("base", "closing", "ended", "inline", "options", "started", "task", "waiters")

    #: The task running the call: its first caller's own (``inline``), or one of its own (set
    #: right after the call is made).
    task: asyncio.Task[Any]

    def __init__(self, options: FlightOptions | None, base: int, inline: bool) -> None:
        self.options = options
        #: The task's count of cancellation requests when it took the call: more means the
        #: call is being cancelled (its answer may never come).
        self.base = base
        self.inline = inline
        #: The futures of the callers waiting, each with its caller's context (a call handed
        #: over runs in the context of the first caller still waiting).
        self.waiters: dict[asyncio.Future[T], contextvars.Context] = {}
        #: A task of its own has taken its first step (one cancelled before never runs).
        self.started = False
        #: Closing cancelled the first caller's task to end the call.
        self.closing = False
        #: Set when the first caller's call ends (closing waits for it).
        self.ended: asyncio.Future[None] | None = None

    def settle(self, result: Any, error: BaseException | None) -> None:
        """Hand every caller still waiting the result (or the error)."""
        waiters, self.waiters = self.waiters, {}
        for waiter in waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(result)
                else:
                    waiter.set_exception(error)


def _closing_error() -> TransportError:
    return TransportError("the request was cancelled while in flight (the client is closing)")


class SingleFlight(Generic[K, T]):
    """Concurrent calls for the same key share one call.

    The first caller runs the call in its own task, from the event loop's next pass (no task
    is started for it); the callers that join wait for its outcome (one wake-up each). A
    caller that joins brings its :class:`FlightOptions`, which the shared call merges into
    its own.

    When the first caller is cancelled while others still wait, its call is cancelled with
    it and handed over to a task of its own, which runs ``fn`` for them (again, if it had
    started: one request more, in that rare case). A call whose callers have all gone is
    cancelled, and a caller that comes while it winds down starts a new one. After
    :meth:`aclose` every waiting caller gets a :class:`~esim_async.errors.TransportError`
    (the first caller too, unless it was itself cancelled: that cancellation goes on), and
    so does every later call.
    """

    def __init__(self) -> None:
        #: The call a new caller joins, per key.
        self._calls: dict[K, _Call[T]] = {}
        #: Every call still running (a ``fresh`` call can run beside an older one).
        self._running: set[_Call[T]] = set()
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
        ``fresh`` never joins a call already in flight (later callers join the new one)."""
        if self._closed:
            raise TransportError("the client is closed")
        if not fresh:
            call = self._calls.get(key)
            # (one whose task is being cancelled is not joined: its answer may never come)
            if call is not None and call.task.cancelling() <= call.base:
                if options is not None and call.options is not None:
                    call.options.join(options)
                return await self._join(key, call), True
        task = asyncio.current_task()
        if task is None:  # (not run by a task: the call gets one of its own)
            call = _Call(options, 0, False)
            self._spawn(key, call, fn)
            self._calls[key] = call
            self._running.add(call)
            return await self._join(key, call), False
        call = _Call(options, task.cancelling(), True)
        call.task = task
        self._calls[key] = call
        self._running.add(call)
        try:
            # The call starts on the loop's next pass, as a task of its own would: the calls
            # made in one pass go out together rather than each between the others' work.
            await asyncio.sleep(0)
            result = await fn()
        except BaseException as exc:
            self._failed(key, call, fn, exc)
            raise
        else:
            if call.closing:
                task.uncancel()  # (the call kept the cancellation closing sent it)
            waiters, call.waiters = call.waiters, {}  # (settle's common case, inline)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(result)
            return result, False
        finally:
            if call.task is task:  # (not handed over)
                if self._calls.get(key) is call:
                    del self._calls[key]
                self._running.discard(call)
                if call.ended is not None and not call.ended.done():
                    call.ended.set_result(None)

    def _failed(
        self, key: K, call: _Call[T], fn: Callable[[], Awaitable[T]], exc: BaseException
    ) -> None:
        """The first caller's call raised ``exc``: hand it to the callers waiting, end it
        with the closing error, or hand the call over to the callers still waiting for it."""
        if call.closing:
            task = call.task
            task.uncancel()  # the cancellation closing sent
            if isinstance(exc, asyncio.CancelledError):
                call.settle(None, _closing_error())
                if task.cancelling() <= call.base:  # nobody else cancelled the caller
                    raise _closing_error() from None
            else:
                call.settle(None, exc)
        elif isinstance(exc, asyncio.CancelledError) or call.task.cancelling() > call.base:
            # The first caller was cancelled (and its call with it).
            if call.waiters:
                context = next((c for w, c in call.waiters.items() if not w.done()), None)
                if context is not None and not self._closed:
                    self._spawn(key, call, fn, context)
                else:
                    call.settle(None, _closing_error())
        else:
            call.settle(None, exc)

    def _spawn(
        self,
        key: K,
        call: _Call[T],
        fn: Callable[[], Awaitable[T]],
        context: contextvars.Context | None = None,
    ) -> None:
        """Run ``call`` in a task of its own; one handed over runs again in ``context``, the
        first waiting caller's (its request is that caller's)."""
        call.inline = False
        call.base = 0
        call.started = False
        call.task = asyncio.get_running_loop().create_task(
            self._shared(key, call, fn), name=f"esim_async flight {key}", context=context
        )

    async def _join(self, key: K, call: _Call[T]) -> T:
        """Wait for the outcome of ``call``, run by another caller or a task of its own."""
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        call.waiters[waiter] = contextvars.copy_context()
        try:
            return await waiter
        except asyncio.CancelledError:
            if not waiter.cancelled():
                waiter.exception()  # answered as this caller left: mark it retrieved
            raise
        finally:
            if not waiter.done() or waiter.cancelled():
                call.waiters.pop(waiter, None)
                task = call.task
                if not call.inline and not call.waiters and not task.done():
                    # The last caller left: nobody wants the answer. Whoever comes next
                    # starts a new call rather than joining one that is being cancelled.
                    if self._calls.get(key) is call:
                        del self._calls[key]
                    task.cancel()
                    if not call.started:
                        self._running.discard(call)  # it ends at its first step, running nothing

    async def _shared(self, key: K, call: _Call[T], fn: Callable[[], Awaitable[T]]) -> None:
        """A call's own task: run ``fn`` and hand its outcome to every caller waiting."""
        call.started = True
        try:
            result = await fn()
        except asyncio.CancelledError:
            # Cancelled with callers still waiting: the client is closing.
            call.settle(None, _closing_error())
            raise
        except BaseException as exc:
            call.settle(None, exc)
            if not isinstance(exc, Exception):
                raise
        else:
            call.settle(result, None)
        finally:
            if self._calls.get(key) is call:
                del self._calls[key]
            self._running.discard(call)

    async def aclose(self) -> None:
        """Cancel every shared call still in flight and wait for them to end; later calls are
        refused."""
        self._closed = True
        calls = list(self._running)
        me = asyncio.current_task()
        loop = asyncio.get_running_loop()
        ending: list[asyncio.Future[Any]] = []
        for call in calls:
            task = call.task
            if task is me or task.done():
                continue  # (closed from within the call itself: it goes on)
            if call.inline:
                if call.closing and call.ended is not None:
                    # Another close is ending it already: wait for the same end (a second
                    # cancellation would reach its caller as a bare one).
                    ending.append(call.ended)
                    continue
                call.closing = True
                call.ended = loop.create_future()
                ending.append(call.ended)
            else:
                ending.append(task)
            task.cancel()
        if ending:
            await asyncio.gather(*ending, return_exceptions=True)
        for call in calls:  # (one cancelled before its first step never ran to tell them)
            call.settle(None, _closing_error())
        self._running.clear()
        self._calls.clear()


class CallScope:
    """Runs calls as tasks that :meth:`aclose` cancels: closing the client ends every wait of a
    call in progress at once, with a :class:`~esim_async.errors.TransportError`. A cancelled
    caller cancels its own call, as if it ran inline.
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
        # The caller waits for the task to end, even when cancelled (it cancels the task).
        try:
            return await task
        except asyncio.CancelledError:
            if not task.cancelled():
                task.exception()  # it ended as this caller left: mark it retrieved
            elif self._closed:
                me = asyncio.current_task()
                if me is None or not me.cancelling():
                    raise _closing_error() from None
            raise
        finally:
            self._tasks.discard(task)

    async def aclose(self) -> None:
        """Cancel every call in progress; later calls are refused."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class CachedEndpoint(Generic[T]):
    """One cached endpoint (usage, package history): its cache, single flight, the level shared
    across processes (``shared``), negative entries and the cache counters, behind one path.

    :meth:`fetch` answers from, in order: this process's cache; the shared level (a copy lives
    only the rest of its TTL here); one call shared by every concurrent caller for the key. An
    answer is stored, in both levels, at the time it arrived. A
    :class:`~esim_async.errors.NotFoundError` is remembered for the negative TTL, as is an
    answer ``long_lived`` picks (a recycled eSIM). ``on_answer`` is called with each new answer
    and the wall time it arrived.
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
                with self._reported_call(self._instrumentation, key) as scope:
                    scope.cache("hit")
        return entry

    def _reported_call(self, instrumentation: Instrumentation, key: Hashable) -> InstrumentScope:
        """The instrumentation's scope of one call for ``key``."""
        endpoint, route, base = self._route
        name = str(key)
        return instrumentation.call(
            endpoint, "GET", route, base + route.replace("{iccid}", name), name
        )

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

    def fetch(
        self,
        key: Hashable,
        fn: Callable[[], Awaitable[T]],
        *,
        refresh: bool = False,
        max_age: float | None = None,
        options: FlightOptions | None = None,
    ) -> Coroutine[Any, Any, tuple[CacheEntry[T], bool]]:
        """The entry answering ``key``, and whether it came without a request of this call.

        ``fn`` asks the provider (run by one of the concurrent callers); ``refresh`` skips the
        cached entries (unless the shared one was answered after this call started) and never
        joins a call already in flight; ``max_age`` bounds the age of a cached entry;
        ``options`` are merged into a call this one joins. A 404 raises
        :class:`~esim_async.errors.NotFoundError` (and is remembered as a negative entry).
        """
        if self._instrumentation is not None:
            return self._reported(key, fn, refresh, max_age, options, self._instrumentation)
        return self._fetch(key, fn, refresh, max_age, options, None)

    async def _reported(
        self,
        key: Hashable,
        fn: Callable[[], Awaitable[T]],
        refresh: bool,
        max_age: float | None,
        options: FlightOptions | None,
        instrumentation: Instrumentation,
    ) -> tuple[CacheEntry[T], bool]:
        with self._reported_call(instrumentation, key) as scope:
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
        if not refresh:
            entry: CacheEntry[T] | None = self._cache.get(key, max_age)
            if entry is not None:
                self._count_hit(entry)
                if scope is not None:
                    scope.cache("hit")
                return entry, True
        started = self._clock.wall() if self._shared is not None else 0.0
        load = functools.partial(self._load, key, fn, refresh, max_age, started)
        if scope is None:
            (entry, requested), joined = await self._flight.run(
                key, load, fresh=refresh, options=options
            )
        else:
            # A reported call that fails is still reported as the miss that led its request,
            # or as coalesced into another's.
            led = False

            async def lead() -> tuple[CacheEntry[T], bool]:
                nonlocal led
                led = True
                return await load()

            try:
                (entry, requested), joined = await self._flight.run(
                    key, lead, fresh=refresh, options=options
                )
            except BaseException:
                if not led:
                    self._stats.coalesced += 1
                scope.cache("miss" if led else "coalesced")
                raise
        if joined:
            self._stats.coalesced += 1
        elif not requested:
            self._count_hit(entry)
        if scope is not None:
            scope.cache("coalesced" if joined else "miss" if requested else "hit")
        return entry, joined or not requested

    async def _load(
        self,
        key: Hashable,
        fn: Callable[[], Awaitable[T]],
        refresh: bool,
        max_age: float | None,
        started: float,
    ) -> tuple[CacheEntry[T], bool]:
        """The shared call of :meth:`fetch`: the shared level's entry if it serves, else
        ``fn``'s answer, stored; and whether a request was made."""
        clock = self._clock
        shared = self._shared
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
            entry: CacheEntry[T] = CacheEntry(None, clock.wall(), clock.now(), True)
            self._cache.set(key, entry)
            if shared is not None:
                await shared.set(key, entry)
            raise
        stamp = clock.wall()
        if self._on_answer is not None:
            self._on_answer(value, stamp)
        long_lived = self._long_lived is not None and self._long_lived(value)
        entry = CacheEntry(value, stamp, clock.now(), long_lived)
        self._cache.set(key, entry)
        if shared is not None:
            await shared.set(key, entry)
        return entry, True

    async def aclose(self) -> None:
        """Cancel the calls in flight (their callers get a ``TransportError``, as do later
        calls) and finish the shared deletions on their way."""
        await self._flight.aclose()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

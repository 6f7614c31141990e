"""The usage cache (a TTL cache mirroring the server's), single flight, and the scope of calls
in progress that closing the client ends.

cachetools is not async-aware, so the cache holds finished values only and a small map of
in-flight tasks merges concurrent calls for the same key.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, Protocol, TypeVar

import msgspec
from cachetools import TTLCache

from . import _constants as C
from .clock import Clock
from .errors import TransportError

__all__ = ["CacheEntry", "CallScope", "FlightOptions", "SingleFlight", "TTLStore"]

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
        entry = self._data.get(key)
        ttl = self.ttl
        if entry is None:
            entry = self._long.get(key)
            if entry is None:
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

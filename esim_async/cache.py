"""The usage cache (a TTL cache mirroring the server's) and single flight.

cachetools is not async-aware, so the cache holds finished values only and a small map of
in-flight tasks merges concurrent calls for the same key.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

import msgspec
from cachetools import TLRUCache

from . import _constants as C
from .clock import Clock

__all__ = ["CacheEntry", "SingleFlight", "TTLStore"]

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

    Normal entries live ``ttl`` seconds, long-lived ones ``long_ttl``; when full, expired
    entries go first, then the least recently used. Time comes from the injected clock.
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
        self._data: TLRUCache[K, CacheEntry[T]] = TLRUCache(
            maxsize=maxsize, ttu=self._ttu, timer=clock.now
        )

    def _ttu(self, _key: Any, entry: CacheEntry[T], now: float) -> float:
        return now + (self.long_ttl if entry.long_lived else self.ttl)

    @property
    def maxsize(self) -> int:
        return int(self._data.maxsize)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K, max_age: float | None = None) -> CacheEntry[T] | None:
        """The live entry for ``key``, if any (and, with ``max_age``, if it is young enough)."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if max_age is not None and self._clock.now() - entry.stored > max_age:
            return None
        return entry

    def set(self, key: K, entry: CacheEntry[T]) -> None:
        if (self.long_ttl if entry.long_lived else self.ttl) <= 0:
            return
        self._data[key] = entry

    def invalidate(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()


class _Call(Generic[T]):
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[T]) -> None:
        self.task = task
        self.waiters = 0


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # mark retrieved: callers that left must not cause warnings


class SingleFlight(Generic[K, T]):
    """Concurrent calls for the same key share one in-flight task.

    A cancelled caller does not cancel the others; the task is cancelled only when every caller
    waiting for it has gone.
    """

    def __init__(self) -> None:
        self._calls: dict[K, _Call[T]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, key: object) -> bool:
        return key in self._calls

    async def run(self, key: K, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Run ``fn`` for ``key`` unless a call is already in flight; return (result, joined)."""
        call = self._calls.get(key)
        joined = call is not None
        if call is None:
            task: asyncio.Task[T] = asyncio.ensure_future(fn())
            call = _Call(task)
            self._calls[key] = call
            task.add_done_callback(_consume)
            task.add_done_callback(functools.partial(self._forget, key, call))
        call.waiters += 1
        try:
            return await asyncio.shield(call.task), joined
        finally:
            call.waiters -= 1
            if call.waiters == 0 and not call.task.done():
                call.task.cancel()  # the last caller left: nobody wants the answer

    def _forget(self, key: K, call: _Call[T], _task: object = None) -> None:
        if self._calls.get(key) is call:
            del self._calls[key]

    async def aclose(self) -> None:
        tasks = [c.task for c in self._calls.values()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

"""The small protocols behind which limiter state and shared caches live.

The in-memory backend is the default; a second implementation (Redis) plugs in through the
client's ``backend=`` argument without touching the pipeline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

from ..cache import CacheEntry, FlightOptions
from ..clock import Clock
from ..limits import LimiterState, Priority, Rate, Slot

__all__ = ["Backend", "Cache", "Flight", "RateLimiter", "SharedCache"]

T = TypeVar("T")


@runtime_checkable
class RateLimiter(Protocol):
    """The limits of one endpoint: a shared rate and an optional per-key rate."""

    async def acquire(
        self, key: str | None = None, priority: Priority = Priority.INTERACTIVE
    ) -> Slot | None:
        """Wait until one more request may be sent (for ``key``), and count it. A returned
        slot is marked with the real send time when the request goes out, or released when
        nothing of it went out. Raises ``RateLimitedError`` at once while a cool-down lasts
        that callers do not wait for (see ``penalize``)."""
        ...

    def penalize(
        self,
        retry_after: float | None,
        limit: int | None = None,
        *,
        key: str | None = None,
        waitable: bool = True,
    ) -> None:
        """A 429 arrived for a request for ``key``: charge the limit that tripped it (the
        shared one: every caller cools down and the rate drops; or only ``key``'s). With
        ``waitable=False`` the cool-down is longer than callers wait: they are refused with
        ``RateLimitedError`` until it ends instead of sleeping through it."""
        ...

    def record_headers(self, headers: Mapping[str, str]) -> None:
        """Remember the last ``X-RateLimit-*`` headers seen."""
        ...

    def state(self) -> LimiterState:
        """A snapshot for ``client.rate_limit_state()``."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Cache(Protocol):
    """A bounded TTL cache of :class:`~esim_async.cache.CacheEntry` (the usage cache)."""

    def get(self, key: Any, max_age: float | None = None) -> CacheEntry[Any] | None: ...

    def set(self, key: Any, entry: CacheEntry[Any]) -> None: ...

    def invalidate(self, key: Any) -> None: ...

    def __len__(self) -> int: ...


@runtime_checkable
class SharedCache(Protocol):
    """A second-level cache shared across processes (optional: ``Backend.shared_cache``)."""

    async def get(self, key: Any) -> CacheEntry[Any] | None: ...

    async def set(self, key: Any, entry: CacheEntry[Any]) -> None: ...

    async def invalidate(self, key: Any) -> None: ...


@runtime_checkable
class Flight(Protocol):
    """Single flight: concurrent calls for one key share one execution."""

    async def run(
        self,
        key: Hashable,
        fn: Callable[[], Awaitable[Any]],
        *,
        fresh: bool = False,
        options: FlightOptions | None = None,
    ) -> tuple[Any, bool]:
        """Run ``fn`` unless a call for ``key`` is in flight; return (result, joined).

        With ``fresh`` the caller never joins a call already in flight (later callers join its
        new one). A caller that joins passes its ``options`` to the shared call's
        :meth:`~esim_async.cache.FlightOptions.join`. A call whose callers all left is
        cancelled, and the next caller starts a new one.
        """
        ...

    async def aclose(self) -> None:
        """Cancel what is in flight: its callers get a ``TransportError``, as do later calls."""
        ...


@runtime_checkable
class Backend(Protocol):
    """Where a client keeps its rate-limit state."""

    def limiter(
        self,
        name: str,
        *,
        shared: Rate | None,
        per_key: Rate | None,
        margin: float,
        clock: Clock,
    ) -> RateLimiter:
        """The limiter for endpoint ``name`` (namespaced per provider account by the caller)."""
        ...

    def cache(self, name: str, *, ttl: float, long_ttl: float, maxsize: int, clock: Clock) -> Cache:
        """The cache ``name`` (e.g. ``"airalo:<client_id>:usage"``)."""
        ...

    def flight(self, name: str) -> Flight:
        """The single-flight group ``name``."""
        ...

    async def aclose(self) -> None: ...

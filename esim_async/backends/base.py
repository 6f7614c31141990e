"""The small protocols behind which limiter state and shared caches live.

The in-memory backend is the default; a second implementation (Redis) plugs in through the
client's ``backend=`` argument without touching the pipeline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, Protocol, runtime_checkable

from ..cache import CacheEntry, FlightOptions
from ..clock import Clock
from ..limits import LimiterState, LimitState, Priority, Rate, Reply, Slot, Window

__all__ = ["Backend", "Cache", "Flight", "RateLimiter", "SharedCache", "WindowStore"]

#: Window stores keep sends this many spans back (the Redis store passes it to its script): a
#: window the path widens later (by at most half a period, see ``limits.PATH_MAX_MARGIN``) still
#: counts those a narrower one had let go.
KEEP_SPANS = 2


@runtime_checkable
class RateLimiter(Protocol):
    """The limits of one endpoint: a shared rate and an optional per-key rate
    (:class:`~esim_async.limits.EndpointLimiter` over a :class:`WindowStore` is the one)."""

    async def acquire(
        self, key: str | None = None, priority: Priority = Priority.INTERACTIVE
    ) -> Slot:
        """Wait until one more request may be sent (for ``key``), and count it (see
        :meth:`~esim_async.limits.EndpointLimiter.acquire`)."""
        ...

    async def penalize(
        self,
        retry_after: float | None,
        limit: int | None = None,
        *,
        key: str | None = None,
        cap: float = ...,
    ) -> None:
        """A 429 arrived for a request for ``key``: charge the limit that tripped it (see
        :meth:`~esim_async.limits.EndpointLimiter.penalize`)."""
        ...

    def record_headers(self, headers: Mapping[str, str]) -> None:
        """Remember the last ``X-RateLimit-*`` headers seen."""
        ...

    def observe(self, sent: float, answered: float) -> None:
        """A request admitted here went out at ``sent`` and its response headers came at
        ``answered`` (the limiter's clock): how the path's delay varies widens the margin."""
        ...

    def state(self) -> LimiterState:
        """A snapshot for ``client.rate_limit_state()``."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class WindowStore(Protocol):
    """Where one limiter's windows and :class:`~esim_async.limits.LimitState` live, on the
    store's own clock (in memory: the limiter's; in Redis: the server's, shared by every
    process). Only window arithmetic and shared state: the queue and the AIMD rules are the
    limiter's. Failures raise :class:`~esim_async.limits.BackendUnavailableError`.
    """

    async def reserve(
        self,
        shared: Window | None,
        key: str | None,
        per_key: Window | None,
        *,
        not_before: float,
        version: int,
    ) -> Reply:
        """Reserve one send now in the ``shared`` window and ``key``'s ``per_key`` window if
        both have room and ``not_before`` (the store's time) has passed, all at once.

        A reservation counts in every window from now until it is confirmed or released.
        When the store's state is not at ``version`` nothing is reserved and the reply carries
        the current state (a store that lost its state then holds every caller for one period
        of the windows asked about).
        """
        ...

    def confirm(self, token: Any, key: str | None, t: float) -> None:
        """The reservation went out at ``t`` (a shared store stamps its own time on arrival,
        later than the send); returns at once."""
        ...

    def release(self, token: Any, key: str | None) -> None:
        """Nothing of the reservation went out: it is forgotten; returns at once."""
        ...

    async def load(self, shared: Window | None) -> tuple[LimitState, float, int]:
        """(the state, the store's time, the sends and reservations in ``shared`` now)."""
        ...

    async def swap(self, version: int, new: LimitState) -> tuple[bool, LimitState]:
        """Store ``new`` if the state is still at ``version``; (whether it was, the state)."""
        ...

    def live_keys(self) -> int:
        """Keys with a live window held here (0 when the store cannot count them cheaply)."""
        ...

    async def aclose(self) -> None:
        """Finish the confirmations and releases on their way."""
        ...


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

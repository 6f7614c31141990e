"""The small protocols behind which limiter state and shared caches live.

The in-memory backend is the default; a second implementation (Redis) plugs in through the
client's ``backend=`` argument without touching the pipeline.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..clock import Clock
from ..limits import LimiterState, Priority, Rate

__all__ = ["Backend", "RateLimiter"]


@runtime_checkable
class RateLimiter(Protocol):
    """The limits of one endpoint: a shared rate and an optional per-key rate."""

    async def acquire(
        self, key: str | None = None, priority: Priority = Priority.INTERACTIVE
    ) -> None:
        """Wait until one more request may be sent (for ``key``), and count it."""
        ...

    def penalize(self, retry_after: float | None, limit: int | None = None) -> None:
        """A 429 arrived: cool down every caller and lower the rate."""
        ...

    def record_headers(self, headers: dict[str, str]) -> None:
        """Remember the last ``X-RateLimit-*`` headers seen."""
        ...

    def state(self) -> LimiterState:
        """A snapshot for ``client.rate_limit_state()``."""
        ...

    async def aclose(self) -> None: ...


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

    async def aclose(self) -> None: ...

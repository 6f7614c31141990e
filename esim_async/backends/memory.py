"""The default backend: everything in this process's memory."""

from __future__ import annotations

from typing import Any

from ..cache import SingleFlight, TTLStore
from ..clock import Clock
from ..limits import EndpointLimiter, Rate

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Limiter state, cache and single flight in process memory: one budget per client."""

    def limiter(
        self,
        name: str,
        *,
        shared: Rate | None,
        per_key: Rate | None,
        margin: float,
        clock: Clock,
    ) -> EndpointLimiter:
        # The transport stamps each slot with the real send time (see limits.Slot).
        return EndpointLimiter(
            name, shared=shared, per_key=per_key, clock=clock, margin=margin, stamp_sends=True
        )

    def cache(
        self, name: str, *, ttl: float, long_ttl: float, maxsize: int, clock: Clock
    ) -> TTLStore[Any, Any]:
        return TTLStore(ttl=ttl, long_ttl=long_ttl, maxsize=maxsize, clock=clock)

    def flight(self, name: str) -> SingleFlight[Any, Any]:
        return SingleFlight()

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return "MemoryBackend()"

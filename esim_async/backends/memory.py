"""The default backend: everything in this process's memory."""

from __future__ import annotations

from ..clock import Clock
from ..limits import EndpointLimiter, Rate

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Limiter state in process memory: one budget per client object."""

    def limiter(
        self,
        name: str,
        *,
        shared: Rate | None,
        per_key: Rate | None,
        margin: float,
        clock: Clock,
    ) -> EndpointLimiter:
        return EndpointLimiter(name, shared=shared, per_key=per_key, clock=clock, margin=margin)

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return "MemoryBackend()"

"""Backends for limiter state: in memory by default (``esim_async.backends.redis`` to share)."""

from .base import Backend, Cache, Flight, RateLimiter
from .memory import MemoryBackend

__all__ = ["Backend", "Cache", "Flight", "MemoryBackend", "RateLimiter"]

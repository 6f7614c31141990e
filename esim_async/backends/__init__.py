"""Backends for limiter state: in memory by default (``esim_async.backends.redis`` to share)."""

from .base import Backend, RateLimiter
from .memory import MemoryBackend

__all__ = ["Backend", "MemoryBackend", "RateLimiter"]

"""One running monitor per account: a lease that a standby takes over when its holder dies.

A :class:`MonitorLock` hands out leases by name with a time to live; the holder renews its lease
while it runs, and a monitor that cannot get the lease waits as a standby, trying again every
third of the time to live, so it takes over at most one time to live after the holder stopped
renewing (crashed, hung, lost its network).

- :class:`LocalMonitorLock` (the default) coordinates monitors of one process.
- :class:`RedisMonitorLock` coordinates every process and host that shares a Redis server
  (a key with a random token and an expiry; taking, renewal and release check the token in the
  scripts ``lease_take.lua``, ``lease_renew.lua`` and ``lock_release.lua``). A take or renewal
  whose reply was lost may still have run: the next take finds the lease its own and keeps it,
  instead of waiting a lease's life for its own ghost to lapse.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..backends.redis_store import register_script
from ..clock import Clock

if TYPE_CHECKING:
    from ..backends.redis import RedisBackend

__all__ = ["LocalMonitorLock", "MonitorLock", "RedisMonitorLock", "default_lock"]

logger = logging.getLogger("esim_async")


@runtime_checkable
class MonitorLock(Protocol):
    """Leases by name. Every method is called by the one monitor that owns the instance."""

    async def acquire(self, name: str, ttl: float, clock: Clock) -> None:
        """Wait until this instance holds the lease ``name`` (valid ``ttl`` seconds)."""
        ...

    async def renew(self, name: str, ttl: float) -> bool:
        """Extend the lease by ``ttl``; ``False`` if it was lost (another took it over)."""
        ...

    async def release(self, name: str) -> None:
        """Give the lease up if still held (a standby takes over at once)."""
        ...


@dataclass(slots=True)
class _Lease:
    owner: str
    until: float


#: Leases of :class:`LocalMonitorLock` instances, process-wide, by name.
_LOCAL: dict[str, _Lease] = {}


class LocalMonitorLock:
    """Leases shared by the monitors of this process (on their clock)."""

    def __init__(self) -> None:
        self._token = secrets.token_hex(8)
        self._clock: Clock | None = None

    def __repr__(self) -> str:
        return "LocalMonitorLock()"

    async def acquire(self, name: str, ttl: float, clock: Clock) -> None:
        self._clock = clock
        while True:
            lease, now = _LOCAL.get(name), clock.now()
            if lease is None or lease.owner == self._token or lease.until <= now:
                _LOCAL[name] = _Lease(self._token, now + ttl)
                return
            await clock.sleep(ttl / 3)

    async def renew(self, name: str, ttl: float) -> bool:
        lease = _LOCAL.get(name)
        if lease is None or lease.owner != self._token or self._clock is None:
            return False
        lease.until = self._clock.now() + ttl
        return True

    async def release(self, name: str) -> None:
        lease = _LOCAL.get(name)
        if lease is not None and lease.owner == self._token:
            del _LOCAL[name]


class RedisMonitorLock:
    """Leases in Redis, shared by every process and host using the same server.

    Args:
        redis: a ``redis.asyncio.Redis`` client, or a URL (``redis://host:6379/0``) to open
            one (closed by :meth:`aclose`).
        prefix: namespace of the lease keys.

    With the Redis backend of the client, share its connection pool::

        lock = RedisMonitorLock.from_backend(backend)
    """

    def __init__(self, redis: Any, *, prefix: str = "esim_async") -> None:
        if isinstance(redis, str):
            import redis.asyncio as aioredis

            self._redis: Any = aioredis.Redis.from_url(redis)
            self._owns = True
        else:
            self._redis = redis
            self._owns = False
        self._prefix = prefix
        self._token = secrets.token_hex(16)
        self._take = register_script(self._redis, "lease_take")
        self._renew = register_script(self._redis, "lease_renew")
        self._release = register_script(self._redis, "lock_release")

    @classmethod
    def from_backend(cls, backend: RedisBackend) -> RedisMonitorLock:
        """A lock on the Redis server (and key namespace) of a client's Redis backend."""
        return cls(backend.redis, prefix=backend.prefix)

    def __repr__(self) -> str:
        return f"RedisMonitorLock(prefix={self._prefix!r})"

    def _key(self, name: str) -> str:
        return f"{self._prefix}:monitor:{name}"

    async def acquire(self, name: str, ttl: float, clock: Clock) -> None:
        key, ms = self._key(name), max(1, int(ttl * 1000))
        while True:
            try:
                taken = await self._take(keys=[key], args=[self._token, ms])
            except Exception as exc:  # RedisError, OSError: unreachable; try again later
                logger.warning("monitor lock: Redis unreachable: %s", exc)
                taken = False
            raise_if_cancelled()
            if taken:
                return
            await clock.sleep(ttl / 3)

    async def renew(self, name: str, ttl: float) -> bool:
        try:
            ms = max(1, int(ttl * 1000))
            done = await self._renew(keys=[self._key(name)], args=[self._token, ms])
        except Exception as exc:
            # Unreachable: the lease may lapse and another take over; stop to be safe.
            logger.warning("monitor lock: Redis unreachable: %s", exc)
            done = False
        raise_if_cancelled()
        return bool(done)

    async def release(self, name: str) -> None:
        try:
            await self._release(keys=[self._key(name)], args=[self._token])
        except Exception as exc:
            logger.warning("monitor lock: Redis unreachable: %s", exc)

    async def aclose(self) -> None:
        """Close the connection opened from a URL (a client passed in is left open)."""
        if self._owns:
            await self._redis.aclose()


def default_lock(backend: object) -> MonitorLock:
    """The lease a monitor takes by default: through Redis when the client's backend is a
    :class:`~esim_async.backends.redis.RedisBackend` (so one monitor runs per account across
    every process sharing it), in process otherwise."""
    try:
        from ..backends.redis import RedisBackend
    except ImportError:  # the redis extra is not installed
        return LocalMonitorLock()
    if isinstance(backend, RedisBackend):
        return RedisMonitorLock.from_backend(backend)
    return LocalMonitorLock()


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was cancelled while a client library
    swallowed the cancellation (some Redis client versions do, inside a command)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

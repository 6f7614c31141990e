"""The windows of one limiter in Redis: three Lua scripts on the server's clock.

Each window is two sorted sets, the sends (scored by the server's time when their confirmation
arrived) and the reservations not sent yet (scored by when they were made); the limiter's
:class:`~esim_async.limits.LimitState` is a hash. ``window_reserve.lua`` reserves a send in the
shared window and one key's at once, ``window_settle.lua`` confirms or releases it (fired
without waiting, at the send moment), ``window_state.lua`` reads the state or replaces it by
compare-and-set. Every key of one limiter shares one cluster slot (``key`` puts the hash tag in)
and expires by itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from ..clock import Clock
from ..limits import BackendUnavailableError, LimitState, Reply, Window
from .base import KEEP_SPANS

__all__ = ["PENDING_TTL", "RedisWindowStore", "register_script"]

logger = logging.getLogger("esim_async")

#: A reservation neither confirmed nor released within this many seconds (its process died)
#: counts as sent at that bound.
PENDING_TTL = 60.0
#: Seconds the state of an idle limiter is kept.
STATE_TTL = 86400.0

_LUA = resources.files(__package__) / "lua"


@functools.cache
def _lua(name: str) -> str:
    return _LUA.joinpath(f"{name}.lua").read_text()


def register_script(redis: Any, name: str) -> Any:
    """The shipped script ``lua/<name>.lua`` registered on ``redis`` (call it with
    ``keys=`` and ``args=``; it is loaded by hash, and sent again if the server lost it)."""
    return redis.register_script(_lua(name))


_INTS = frozenset({"version", "ceiling"})
_FIELDS = tuple(f.name for f in dataclasses.fields(LimitState))


def as_text(value: Any) -> str:
    """A value from a Redis reply as text (bytes decoded)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(flat: list[Any]) -> LimitState:
    """A state from a hash read as ``[field, value, ...]`` (missing fields: defaults)."""
    raw = {as_text(k): as_text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
    fields: dict[str, Any] = {
        name: int(float(raw[name])) if name in _INTS else float(raw[name])
        for name in _FIELDS
        if name in raw
    }
    return LimitState(**fields)


class RedisWindowStore:
    """The windows and state of the limiter whose keys ``key(part, ...)`` names.

    Args:
        redis: a ``redis.asyncio.Redis``.
        key: the name of one of the limiter's Redis keys (all in one hash slot).
        call: runs one Redis operation, raising ``BackendUnavailableError`` when Redis cannot
            be reached within the backend's wait.
        clock: the limiter's clock (to tell a state lost from one that expired idle).
        on_lost: called when Redis is found to have lost the limiter's state.
    """

    def __init__(
        self,
        redis: Any,
        key: Callable[..., str],
        *,
        call: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]],
        clock: Clock,
        on_lost: Callable[[], None] | None = None,
        pending_ttl: float = PENDING_TTL,
        state_ttl: float = STATE_TTL,
    ) -> None:
        self._reserve = register_script(redis, "window_reserve")
        self._settle = register_script(redis, "window_settle")
        self._state = register_script(redis, "window_state")
        self._key = key
        self._call = call
        #: Confirmations and releases on their way (a reservation waits for them).
        self._settling: set[asyncio.Task[None]] = set()
        self._clock = clock
        self._on_lost = on_lost
        self._pending_ttl = pending_ttl
        self._state_ttl = state_ttl
        self._shared_keys = [key("state"), key("sent"), key("pending")]
        self._member = f"{secrets.token_hex(6)}:"
        self._ids = itertools.count()
        #: When this store last heard from Redis (the limiter's clock), if ever.
        self._contact: float | None = None
        #: When (Redis time) the state this store last saw was created: a state created
        #: since then replaced a lost one.
        self._epoch = ""

    async def reserve(
        self,
        shared: Window | None,
        key: str | None,
        per_key: Window | None,
        *,
        not_before: float,
        version: int,
    ) -> Reply:
        if self._settling:  # this process's own releases count before it reserves again
            await asyncio.wait(set(self._settling))
        member = f"{self._member}{next(self._ids)}"
        keys = list(self._shared_keys)
        if per_key is not None and key is not None:
            keys += [self._key("key", key, "sent"), self._key("key", key, "pending")]
        else:
            keys += keys[1:3]  # unused, in the same slot
        contact = self._contact
        # A missing state was lost only if this store saw it within its lifetime (with room
        # for this clock and Redis' to disagree); otherwise it expired while idle.
        armed = contact is not None and self._clock.now() - contact < 0.9 * self._state_ttl
        args = [
            version,
            1 if armed else 0,
            f"{max(not_before, 0.0):.6f}",
            member,
            self._pending_ttl,
            int(self._state_ttl * 1000),
            *(shared or (0, 0, 0)),
            *(per_key[:2] if per_key is not None else (0, 0)),
            self._epoch,
            KEEP_SPANS,
        ]
        reply = await self._call(lambda: self._reserve(keys=keys, args=args))
        self._contact = self._clock.now()
        self._epoch = as_text(reply[-1])
        now, status = float(reply[0]), int(reply[1])
        if status >= 3:
            if status == 4 and self._on_lost is not None:
                self._on_lost()
            return Reply(now, state=_decode(reply[3]), lost=status == 4)
        if status:
            return Reply(now, float(reply[2]), status == 2)
        settle = keys[1:3] if shared is not None else []
        if per_key is not None:
            settle += keys[3:5]
        spans = [w.span for w in (shared, per_key) if w is not None]
        return Reply(now, token=(member, settle, int(KEEP_SPANS * max(spans) * 1000) + 1000))

    def confirm(self, token: Any, key: str | None, t: float) -> None:
        self._settle_later(token, 1)

    def release(self, token: Any, key: str | None) -> None:
        self._settle_later(token, 0)

    def _settle_later(self, token: tuple[str, list[str], int], confirm: int) -> None:
        member, keys, ttl = token

        async def settle() -> None:
            try:
                await self._call(lambda: self._settle(keys=keys, args=[member, confirm, ttl]))
            except BackendUnavailableError as exc:  # unsettled: it expires as sent
                logger.warning("redis window store: a reservation stays unsettled: %s", exc)

        task = asyncio.get_running_loop().create_task(settle())
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def aclose(self) -> None:
        if self._settling:
            await asyncio.wait(set(self._settling))

    async def load(self, shared: Window | None) -> tuple[LimitState, float, int]:
        span = shared.span if shared is not None else 0
        keys = self._shared_keys
        now, held, flat = await self._call(lambda: self._state(keys=keys, args=["load", span]))
        if flat:  # seen: should it go missing now, it was lost
            self._contact = self._clock.now()
        return _decode(flat), float(now), int(held)

    async def swap(self, version: int, new: LimitState) -> tuple[bool, LimitState]:
        args: list[Any] = [version, int(self._state_ttl * 1000)]
        for name in _FIELDS:
            args += [name, repr(getattr(new, name))]
        keys = self._shared_keys
        reply = await self._call(lambda: self._state(keys=keys, args=args))
        if int(reply[0]):
            return True, new
        return False, _decode(reply[1])

    def live_keys(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"RedisWindowStore({self._shared_keys[0]!r})"

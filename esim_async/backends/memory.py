"""The default backend: everything in this process's memory."""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from typing import Any

from ..cache import SingleFlight, TTLStore
from ..clock import Clock
from ..limits import EndpointLimiter, LimitState, Rate, Reply, Window
from .base import KEEP_SPANS

__all__ = ["MemoryBackend", "MemoryStore"]


def _edge(times: list[float], start: int, pending: int, w: Window, now: float) -> float:
    """The first time at or after ``now`` one more send fits ``w``, given the sorted send
    times ``times[start:]`` (those ``KEEP_SPANS`` spans old are dropped) and ``pending``
    reservations not sent yet (each of which may go out at any moment from now on, so each
    counts in every window from now on)."""
    del times[start : bisect_right(times, now - KEEP_SPANS * w.span, start)]
    lo = bisect_right(times, now - w.span, start)  # sends at or before this have left
    sent = len(times) - lo
    need = sent + pending + 1 - w.limit  # sends that must leave the window first
    if need <= 0:
        return now
    if need > sent:  # full of reservations: ask again soon (one may be given back)
        return now + min(w.span, max(0.01, w.span / 100))
    return times[lo + need - 1] + w.span


class MemoryStore:
    """The windows of one limiter in this process's memory, on the limiter's clock.

    The shared window is the sorted send times within its span and a count of reservations
    not sent yet. Each key's window is a list ``[pending, *send times]``, kept in the order it
    was last used and dropped once nothing of it is left in the window. A reservation lives as
    long as its process, so it never expires here.
    """

    __slots__ = ("_clock", "_grants", "_key_span", "_keys", "_last", "_pending", "_sent", "_state")

    def __init__(self, clock: Clock, state: LimitState | None = None) -> None:
        self._clock = clock
        self._state = state if state is not None else LimitState()
        self._sent: list[float] = []
        self._pending = 0
        self._last = -math.inf
        self._keys: dict[str, list[float]] = {}
        self._key_span = 0.0
        self._grants = 0

    async def reserve(
        self,
        shared: Window | None,
        key: str | None,
        per_key: Window | None,
        *,
        not_before: float,
        version: int,
    ) -> Reply:
        now = self._clock.now()
        if version != self._state.version:
            return Reply(now, state=self._state)
        t = not_before if not_before > now else now
        key_bound = False
        if shared is not None:
            e = _edge(self._sent, 0, self._pending, shared, now)
            if shared.spacing and self._last + shared.spacing > e:
                e = self._last + shared.spacing
            if e > t:
                t = e
        entry = None
        if per_key is not None and key is not None:
            self._key_span = per_key.span
            entry = self._keys.get(key)
            if entry is not None:
                e = _edge(entry, 1, int(entry[0]), per_key, now)
                if e > t:
                    t, key_bound = e, True
        if t > now:
            return Reply(now, t - now, key_bound)
        if shared is not None:
            self._pending += 1
            self._last = now
        if per_key is not None and key is not None:
            if entry is None:
                self._keys[key] = [1]
            else:
                entry[0] += 1
            self._grants += 1
            if self._grants & 63 == 0:  # amortised: idle keys go within 64 admissions
                self._evict(now)
        return Reply(now, token=shared is not None)

    def confirm(self, token: Any, key: str | None, t: float) -> None:
        if token:
            self._pending -= 1
            insort(self._sent, t)
        if key is not None:
            entry = self._keys.pop(key, None)
            if entry is not None:
                entry[0] -= 1
                insort(entry, t, 1)
                self._keys[key] = entry  # last used: to the end

    def release(self, token: Any, key: str | None) -> None:
        if token:
            self._pending -= 1
        if key is not None:
            entry = self._keys.get(key)
            if entry is not None:
                entry[0] -= 1

    async def load(self, shared: Window | None) -> tuple[LimitState, float, int]:
        now = self._clock.now()
        held = 0
        if shared is not None:
            held = len(self._sent) - bisect_right(self._sent, now - shared.span) + self._pending
        return self._state, now, held

    async def swap(self, version: int, new: LimitState) -> tuple[bool, LimitState]:
        if self._state.version != version:
            return False, self._state
        self._state = new
        return True, new

    async def aclose(self) -> None:
        return None

    def live_keys(self) -> int:
        self._evict(self._clock.now())
        return len(self._keys)

    def _evict(self, now: float) -> None:
        """Drop the keys, oldest use first, of which nothing is left in the window."""
        keys = self._keys
        edge = now - self._key_span
        while keys:
            key = next(iter(keys))
            entry = keys[key]
            if entry[0] or (len(entry) > 1 and entry[-1] > edge):
                break
            del keys[key]

    def __repr__(self) -> str:
        return f"MemoryStore(pending={self._pending}, keys={len(self._keys)})"


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
            name,
            shared=shared,
            per_key=per_key,
            clock=clock,
            margin=margin,
            stamp_sends=True,
            store=MemoryStore(clock),
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

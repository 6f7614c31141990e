"""Time sources. Everything time-dependent (limits, TTLs, backoff, token expiry) takes a ``Clock``.

The default :class:`MonotonicClock` reads ``time.monotonic``; :class:`LoopClock` reads the running
event loop's clock (for loops with virtual time); :class:`ManualClock` is a fully manual clock for
exact unit tests.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "LoopClock", "ManualClock", "MonotonicClock"]


@runtime_checkable
class Clock(Protocol):
    """A monotonic time source in seconds, and a way to wait on it."""

    def now(self) -> float:
        """Current monotonic time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class MonotonicClock:
    """``time.monotonic`` (what asyncio's default loop clock reads too) and ``asyncio.sleep``.

    The default clock: reading it costs a C call, nothing more.
    """

    __slots__ = ()

    now = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "MonotonicClock()"


class LoopClock:
    """The running event loop's monotonic clock (``time.monotonic`` outside a loop)."""

    __slots__ = ()

    def now(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "LoopClock()"


class ManualClock:
    """A clock that only moves when told to.

    ``sleep`` advances the clock by the requested time and yields once, which makes single-sleeper
    logic (a limiter's dispatcher, a backoff) exact and instant in tests::

        clock = ManualClock()
        clock.advance(1.5)
        assert clock.now() == 1.5
    """

    __slots__ = ("_now", "sleeps")

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        #: Every delay passed to :meth:`sleep`, in order.
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.sleeps.append(seconds)
        self._now += seconds
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"

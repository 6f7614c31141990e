"""Time sources: everything time-dependent takes a :class:`Clock`; this is the only module that
reads the system's clocks."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "LoopClock", "ManualClock", "MonotonicClock", "as_clock"]


@runtime_checkable
class Clock(Protocol):
    """A monotonic time source in seconds, the wall time beside it, and a way to wait on it."""

    def now(self) -> float:
        """Current monotonic time in seconds (for intervals, TTLs and limits)."""
        ...

    def wall(self) -> float:
        """Current wall time: POSIX seconds since the epoch, UTC (for timestamps and dates)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class _SteadyTime(Protocol):
    """A clock written before :meth:`Clock.wall` existed."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class _AnchoredClock:
    """A clock without wall time, given one: anchored to the system's wall time when wrapped,
    then moving with the clock."""

    __slots__ = ("_base", "_offset")

    def __init__(self, base: _SteadyTime) -> None:
        self._base = base
        self._offset = time.time() - base.now()

    def now(self) -> float:
        return self._base.now()

    def wall(self) -> float:
        return self._offset + self._base.now()

    async def sleep(self, seconds: float) -> None:
        await self._base.sleep(seconds)

    def __repr__(self) -> str:
        return f"{self._base!r} (wall time anchored)"


def as_clock(clock: Clock | _SteadyTime) -> Clock:
    """``clock`` as a full :class:`Clock`: one with only ``now`` and ``sleep`` gets wall time
    anchored to the system's wall time at this moment, moving with the clock from there."""
    return clock if isinstance(clock, Clock) else _AnchoredClock(clock)


class MonotonicClock:
    """The default clock: ``time.monotonic``, ``time.time`` and ``asyncio.sleep``."""

    __slots__ = ()

    now = staticmethod(time.monotonic)
    wall = staticmethod(time.time)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LoopClock(MonotonicClock):
    """The running event loop's monotonic clock (``time.monotonic`` outside a loop)."""

    __slots__ = ()

    def now(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()


class ManualClock:
    """A clock that only moves when told to; its wall time moves with it.

    ``sleep`` advances the clock by the requested time and yields once, which makes single-sleeper
    logic (a limiter's dispatcher, a backoff) exact and instant in tests::

        clock = ManualClock(wall=1_900_000_000.0)
        clock.advance(1.5)
        assert clock.now() == 1.5
        assert clock.wall() == 1_900_000_001.5

    Args:
        start: the monotonic time it starts at.
        wall: the wall time (POSIX seconds) it starts at; the system's wall time by default.
    """

    __slots__ = ("_now", "_wall_offset", "sleeps")

    def __init__(self, start: float = 0.0, *, wall: float | None = None) -> None:
        self._now = start
        self._wall_offset = (time.time() if wall is None else wall) - start
        #: Every delay passed to :meth:`sleep`, in order.
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._wall_offset + self._now

    def advance(self, seconds: float) -> None:
        """Move the clock (and its wall time) forward."""
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

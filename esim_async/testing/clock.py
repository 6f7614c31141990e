"""The emulator's own time: the one place it reads the system clocks.

The emulator is an independent program, so it does not share the client's clock module; every
other emulator module reads time through a :class:`Clock` (:class:`SystemClock` unless one is
injected) and :func:`utc_now`.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "SystemClock", "utc_now"]


class Clock(Protocol):
    """The emulator's time source: monotonic seconds, and a way to wait on them."""

    def now(self) -> float:
        """Current monotonic time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


def utc_now() -> datetime:
    """The current wall-clock time in UTC."""
    return datetime.now(UTC)


class SystemClock:
    """``time.monotonic`` and ``asyncio.sleep`` (the emulator's default clock)."""

    __slots__ = ()

    def now(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep`` (negative delays do not wait)."""
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"

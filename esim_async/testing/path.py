"""The network path in front of the emulator: a one-way delay per request, with jitter.

The provider judges arrivals, while a client can only pace its sends; between the two lies a path
whose delay varies from one request to the next (internet jitter, load balancers, TLS
termination, worker queues). :class:`PathDelay` describes such a path and :class:`PathMiddleware`
applies it: every request waits a delay drawn uniformly from ``[min, max]`` on the emulator's
clock before the emulator (or any other middleware) sees it, so the limits count it late.

Order is kept within a connection, as on a TCP stream: a request is never handed over before
the one sent earlier on the same connection, so its wait is the larger of its own delay and
the release of its predecessor. Requests on different connections overtake each other freely.

Example::

    async with Emulator(path=PathDelay(min=0.05, max=0.2, seed=7)) as emu:
        ...
    emu.path_stats.delayed  # requests that crossed the path
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from .clock import Clock

__all__ = ["PathDelay", "PathMiddleware", "PathStats"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class PathDelay:
    """One-way delay from client to server: uniform in ``[min, max]`` seconds per request.

    ``max`` defaults to ``min`` (a constant delay). ``seed`` makes the draws repeatable.
    """

    min: float = 0.0
    max: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        high = self.min if self.max is None else self.max
        if not (math.isfinite(self.min) and math.isfinite(high)):
            raise ValueError("PathDelay needs finite delays")
        if self.min < 0 or high < self.min:
            raise ValueError("PathDelay needs 0 <= min <= max")

    @property
    def high(self) -> float:
        """The largest delay drawn."""
        return self.min if self.max is None else self.max

    @property
    def spread(self) -> float:
        """``max - min``: how much the delay varies."""
        return self.high - self.min


@dataclass
class PathStats:
    """What crossed the path: requests delayed, and the delays drawn and applied."""

    delayed: int = 0
    #: Each request's drawn delay, in arrival order at the path.
    drawn: list[float] = field(default_factory=list)
    #: Requests held beyond their own delay to stay behind an earlier one on their connection.
    held_for_order: int = 0


class PathMiddleware:
    """An aiohttp middleware that delays each request as :class:`PathDelay` says.

    Install it outermost (the :class:`~esim_async.testing.Emulator` does so when given
    ``path=``), so that every later middleware and handler sees the request when it arrives.
    """

    def __init__(self, path: PathDelay | None, clock: Callable[[], Clock]) -> None:
        """``clock`` returns the clock in force (read on every request)."""
        self.stats = PathStats()
        self._clock = clock
        self._path: PathDelay | None = None
        self._random = random.Random()
        #: Per connection: when its last request was (or will be) handed over.
        self._released: dict[object, float] = {}
        self.path = path

    @property
    def path(self) -> PathDelay | None:
        """The path in force (``None``: no delay). Set it to change the path mid-run."""
        return self._path

    @path.setter
    def path(self, path: PathDelay | None) -> None:
        self._path = path
        self._random = random.Random(path.seed if path is not None else None)

    def draw(self) -> float:
        """One delay from the path in force (0 without one)."""
        path = self._path
        return 0.0 if path is None else self._random.uniform(path.min, path.high)

    @staticmethod
    def _connection(request: web.Request) -> object:
        transport = request.transport
        if transport is None:
            return None
        peer = transport.get_extra_info("peername")
        return peer if peer is not None else id(transport)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Hold ``request`` for its delay (and behind its connection's previous request)."""
        if self._path is None:
            return await handler(request)
        delay = self.draw()
        clock = self._clock()
        now = clock.now()
        key = self._connection(request)
        release = now + delay
        previous = self._released.get(key)
        if previous is not None and previous > release:
            release = previous
            self.stats.held_for_order += 1
        self._released[key] = release
        if len(self._released) > 4096:
            self._released = {k: t for k, t in self._released.items() if t > now}
        self.stats.delayed += 1
        self.stats.drawn.append(delay)
        if release > now:
            await clock.sleep(release - now)
        return await handler(request)

"""The limits the emulator enforces, and its windows: one per limit and key.

The windows judge each arrival when it reaches the server, the way the providers' Laravel
throttle does: a strict sliding log by default, Laravel's fixed window as an option.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from .. import Rate

__all__ = ["Algorithm", "ServerLimits", "Window", "Windows", "wait_until"]

Algorithm = Literal["sliding", "fixed"]


@dataclass
class ServerLimits:
    """Limits the emulator enforces (``None``: not limited).

    Each limit keeps one window per key: ``usage_iccid`` and ``package_history`` per ICCID,
    ``product_information`` per package, the others one window for the whole emulator. Where
    the provider counts per access token (``packages``) or per IP (``refund``,
    ``simulator``), the emulator still keeps one window: with one client, or on loopback,
    that is the same; several clients sharing one emulator share that window.
    """

    usage_iccid: Rate | None = field(default_factory=lambda: Rate(10, 60.0))
    usage_company: Rate | None = field(default_factory=lambda: Rate(5, 1.0))
    token: Rate | None = field(default_factory=lambda: Rate(3, 60.0))
    packages: Rate | None = field(default_factory=lambda: Rate(80, 60.0))
    #: Per package.
    product_information: Rate | None = field(default_factory=lambda: Rate(60, 60.0))
    #: Per ICCID.
    package_history: Rate | None = field(default_factory=lambda: Rate(10, 60.0))
    refund: Rate | None = field(default_factory=lambda: Rate(1, 300.0))
    simulator: Rate | None = field(default_factory=lambda: Rate(1, 900.0))
    algorithm: Algorithm = "sliding"

    @classmethod
    def airalo(cls) -> ServerLimits:
        """Airalo's published limits (the default)."""
        return cls()

    @classmethod
    def pressone(cls) -> ServerLimits:
        """PressOne's published limits."""
        return cls(
            usage_iccid=Rate(100, 60.0),
            usage_company=None,
            packages=None,
            product_information=None,
            package_history=Rate(1, 900.0),
        )

    @classmethod
    def unlimited(cls) -> ServerLimits:
        """No limit on token, usage, catalogue or history (refund and simulator keep theirs)."""
        return cls(
            usage_iccid=None,
            usage_company=None,
            token=None,
            packages=None,
            product_information=None,
            package_history=None,
        )

    def rate(self, name: str) -> Rate | None:
        """The limit called ``name`` (``None``: not limited, or no such limit)."""
        rate: Rate | None = getattr(self, name, None)
        return rate


def wait_until(deadline: float, now: float) -> float:
    """Seconds from ``now`` to ``deadline``, rounded up so that ``now + wait >= deadline``."""
    wait = deadline - now
    while now + wait < deadline:
        wait = math.nextafter(wait, math.inf)
    return wait


class Window:
    """Server-side limit for one key: sliding log or Laravel fixed window.

    ``sliding``: an arrival is admitted iff fewer than ``count`` admissions lie in
    ``(now - period, now]``, so no half-open window ``[t, t + period)`` ever holds more than
    ``count``. ``fixed`` (Laravel's limiter): the first admitted hit opens a window
    ``[start, start + period)`` that admits ``count`` hits; the first hit at or after its end
    opens the next one (so up to ``2 * count - 1`` can fall inside one period across a
    boundary). Refused arrivals count in neither. The wait returned with a refusal is exact:
    an arrival at ``now + wait`` is admitted.
    """

    __slots__ = ("algorithm", "hits", "rate", "start")

    def __init__(self, rate: Rate, algorithm: Algorithm) -> None:
        self.rate = rate
        self.algorithm = algorithm
        self.hits: deque[float] = deque()
        self.start = -math.inf

    def hit(self, now: float) -> float | None:
        """Count an arrival; return ``None`` if allowed, else seconds until allowed."""
        rate = self.rate
        if self.algorithm == "fixed":
            if now >= self.start + rate.period:
                self.start = now
                self.hits.clear()
            if len(self.hits) >= rate.count:
                return wait_until(self.start + rate.period, now)
            self.hits.append(now)
            return None
        hits = self.hits
        # (compared as ``hit + period <= now``, the same sum the announced wait is built from)
        while hits and hits[0] + rate.period <= now:
            hits.popleft()
        if len(hits) >= rate.count:
            return wait_until(hits[0] + rate.period, now)
        hits.append(now)
        return None

    def remaining(self) -> int:
        """Admissions left in the current window (as of the last arrival)."""
        return max(0, self.rate.count - len(self.hits))


class Windows:
    """Every window the emulator keeps, by limit name and key (an ICCID, a package, ``"all"``).

    A window is created on its first arrival with the rate and algorithm of that moment; it
    keeps them until :meth:`reset` drops the windows of its limit.
    """

    __slots__ = ("_windows",)

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], Window] = {}

    def hit(
        self, name: str, key: str, rate: Rate, algorithm: Algorithm, now: float
    ) -> float | None:
        """Count an arrival on ``name``/``key``: ``None`` if admitted, else the exact wait."""
        window = self._windows.get((name, key))
        if window is None:
            window = self._windows[(name, key)] = Window(rate, algorithm)
        return window.hit(now)

    def get(self, name: str, key: str) -> Window | None:
        """The window of ``name``/``key``, if an arrival opened one."""
        return self._windows.get((name, key))

    def reset(self, name: str) -> None:
        """Forget every window of the limit ``name`` (its next arrivals start afresh)."""
        for key in [k for k in self._windows if k[0] == name]:
            del self._windows[key]

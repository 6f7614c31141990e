"""An independent record of what reached a server, to check rate limits without trusting it.

The emulator's own limiter decides its 429s, so "the emulator answered no 429" only proves as
much as that limiter does. :class:`ArrivalLog` is a separate witness: an aiohttp middleware
(installed with ``Emulator(middlewares=[log.middleware])``) that stamps each request with its own
clock when aiohttp hands it over, before any emulator code runs, and checks the stamps against the
provider's limits::

    log = ArrivalLog()
    async with Emulator(fleet=fleet, limits=limits, middlewares=[log.middleware]) as emu:
        ...  # drive a client
    log.assert_usage_within(company=limits.usage_company, iccid=limits.usage_iccid)

"No window of ``period`` holds more than ``count``" is checked on half-open windows
``[t, t + period)`` placed anywhere, the strictest reading of a limit (and the one the client
keeps); a server with Laravel's fixed windows admits no more than that.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from esim_async import Rate

__all__ = ["USAGE_PATH", "Arrival", "ArrivalLog", "max_in_any_window", "most_crowded_window"]

#: ``/sims/{iccid}/usage`` under any prefix (``/v2``, ``/customer/v2``, ``/cusomter/v2``).
USAGE_PATH = re.compile(r"/sims/(?P<key>[^/]+)/usage$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def most_crowded_window(times: Sequence[float], period: float) -> tuple[int, float]:
    """The most arrivals inside any half-open window ``[t, t + period)``, and where it starts.

    ``times`` must be sorted. Two arrivals exactly one ``period`` apart are in different
    windows (up to float rounding, 1e-9 relative).
    """
    best, start = 0, times[0] if times else 0.0
    j = 0
    edge = period * (1 - 1e-9)
    for i in range(len(times)):
        while times[i] - times[j] >= edge:
            j += 1
        if i - j + 1 > best:
            best, start = i - j + 1, times[j]
    return best, start


def max_in_any_window(times: Sequence[float], period: float) -> int:
    """The most arrivals inside any half-open window ``[t, t + period)`` (``times`` sorted)."""
    return most_crowded_window(times, period)[0]


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request as it reached the server."""

    time: float
    method: str
    path: str


class ArrivalLog:
    """Arrival times of every request a server received, kept outside the server's own code.

    Args:
        clock: the time source stamping arrivals (``time.monotonic``, what the emulator's
            default clock and asyncio's loop read).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        #: Every request, in arrival order.
        self.arrivals: list[Arrival] = []

    def record(self, method: str, path: str) -> None:
        """Stamp one arrival now."""
        self.arrivals.append(Arrival(self._clock(), method, path))

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """aiohttp middleware: record the request, then hand it to the server untouched."""
        self.record(request.method, request.path)
        return await handler(request)

    # ------------------------------------------------------------------ queries

    def times(self, pattern: re.Pattern[str] = USAGE_PATH) -> list[float]:
        """Arrival times of the requests whose path matches ``pattern``."""
        return [a.time for a in self.arrivals if pattern.search(a.path)]

    def times_by_key(self, pattern: re.Pattern[str] = USAGE_PATH) -> dict[str, list[float]]:
        """Arrival times per value of the pattern's ``key`` group (per ICCID by default)."""
        out: defaultdict[str, list[float]] = defaultdict(list)
        for a in self.arrivals:
            match = pattern.search(a.path)
            if match is not None:
                out[match.group("key")].append(a.time)
        return dict(out)

    def count(self, pattern: re.Pattern[str] = USAGE_PATH) -> int:
        """How many requests matching ``pattern`` arrived."""
        return len(self.times(pattern))

    # ------------------------------------------------------------------ checks

    def violations(
        self,
        *,
        company: Rate | None = None,
        per_key: Rate | None = None,
        pattern: re.Pattern[str] = USAGE_PATH,
    ) -> list[str]:
        """Every limit broken by the arrivals matching ``pattern``, described (empty: none).

        ``company`` bounds all of them together, ``per_key`` each value of the pattern's
        ``key`` group (a pattern without one can only be checked with ``company``).
        """
        problems: list[str] = []
        groups: list[tuple[str, list[float], Rate]] = []
        if company is not None:
            groups.append(("company-wide", self.times(pattern), company))
        if per_key is not None:
            by_key = sorted(self.times_by_key(pattern).items())
            groups.extend((f"key {key}", times, per_key) for key, times in by_key)
        for label, times, rate in groups:
            if not times:
                continue
            most, start = most_crowded_window(sorted(times), rate.period)
            if most > rate.count:
                problems.append(
                    f"{label}: {most} arrivals in [{start:.6f}, {start + rate.period:.6f}),"
                    f" limit {rate.count} per {rate.period} s"
                )
        return problems

    def assert_usage_within(
        self, *, company: Rate | None = None, iccid: Rate | None = None
    ) -> None:
        """Fail unless the usage arrivals kept ``company`` overall and ``iccid`` per ICCID."""
        problems = self.violations(company=company, per_key=iccid, pattern=USAGE_PATH)
        assert not problems, "rate limits broken at arrival:\n" + "\n".join(problems)

"""Where and when mocked requests landed, on a virtual clock, to prove limits by their effect.

:class:`Landed` gives aioresponses callbacks that stamp each request with a
:class:`~esim_async.ManualClock`'s time as it reaches the mock (after the client's limiter let it
go), so a limit is checked by what the server would have seen, never by the client's settings::

    clock = ManualClock()
    landed = Landed(clock)
    mocked.get(url, payload=..., repeat=True, callback=landed.record("usage"))
    ...  # drive a client built with clock=clock
    assert_held_back(landed.times["usage"], Rate(10, 60.0))
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from yarl import URL

from esim_async import ManualClock, Rate

from .arrivals import max_in_any_window

__all__ = ["Landed", "assert_held_back", "assert_not_held"]


class Landed:
    """Virtual arrival times of mocked requests, by name, and the URLs they reached."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.times: defaultdict[str, list[float]] = defaultdict(list)
        self.urls: defaultdict[str, list[URL]] = defaultdict(list)

    def record(self, name: str) -> Callable[..., None]:
        """An aioresponses callback counting each arrival under ``name``."""

        def callback(url: URL, **_: Any) -> None:
            self.times[name].append(self.clock.now())
            self.urls[name].append(url)

        return callback


def assert_held_back(times: Sequence[float], rate: Rate) -> None:
    """``rate.count + 1`` sequential requests: the first ``count`` went out at once, the next
    only once the window of the first had passed (so the limit is exactly ``rate``)."""
    assert len(times) == rate.count + 1, times
    start = times[0]
    assert list(times[: rate.count]) == [start] * rate.count, times
    assert times[rate.count] - start >= rate.period, times
    assert max_in_any_window(sorted(times), rate.period) == rate.count


def assert_not_held(times: Sequence[float]) -> None:
    """Every request went out at the same virtual instant: nothing held any of them back."""
    assert times, "no request arrived"
    assert list(times) == [times[0]] * len(times), times

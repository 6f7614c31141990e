"""What the monitor reads from the client it is given: cache TTL, usage limits, clock.

Everything comes from the client's public surface: ``client.config`` (its frozen
configuration) when the client has one, else ``client.rate_limit_state()["usage"]`` for the
limits and the ``cache_ttl`` / ``clock`` given to the monitor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._constants import DEFAULT_RATE_MARGIN, ICCID_MAX_LENGTH, ICCID_MIN_LENGTH
from ..clock import Clock, MonotonicClock
from ..errors import InvalidRequestError
from ..limits import Rate

if TYPE_CHECKING:
    from ..client import BaseClient

__all__ = ["ClientView", "read_client", "wall_clock"]


@dataclass(frozen=True, slots=True)
class ClientView:
    """The client settings a monitor derives its intervals and budget from."""

    cache_ttl: float
    #: The usage endpoint's company limit, its per-eSIM limit, and the sandbox's account-wide
    #: limit (``None``: none).
    company: Rate | None
    per_key: Rate | None
    account: Rate | None
    margin: float
    clock: Clock
    iccid_length: tuple[int, int]
    #: ``provider:client_id@base_url``: what one monitor lease covers (a sandbox and
    #: production are two accounts).
    account_name: str

    @property
    def unit(self) -> float:
        """The shortest useful gap between two reads of one eSIM: the cache TTL (a read
        sooner gets the same answer), or the per-eSIM limit's spacing when that is longer."""

        def spacing(*rates: Rate | None) -> list[float]:
            return [r.period * (1 + self.margin) / r.count for r in rates if r is not None]

        unit = max([self.cache_ttl, *spacing(self.per_key)])
        if unit <= 0:
            if not spacing(self.company, self.account):
                raise InvalidRequestError(
                    "the monitor derives its intervals from the client's cache TTL or usage "
                    "limits: this client has neither",
                    field="cache_ttl",
                )
            unit = max(spacing(self.company, self.account))
        return unit

    def budget(self, share: float, effective: float | None = None) -> tuple[float, int]:
        """The reads per second the monitor may start, and how many at once: ``share`` of the
        tightest of the company and account limits (less the client's safety margin), or of
        ``effective`` (the limiter's current rate after a 429) when lower. ``(inf, 1)`` when
        there is no such limit."""
        best: tuple[float, int] = (math.inf, 1)
        for rate in (self.company, self.account):
            if rate is None:
                continue
            per_second = share * rate.count / (rate.period * (1 + self.margin))
            if per_second < best[0]:
                best = (per_second, max(1, math.floor(share * rate.count)))
        if effective is not None and math.isfinite(best[0]):
            best = (min(best[0], share * effective), best[1])
        return best


def read_client(
    client: BaseClient, *, cache_ttl: float | None = None, clock: Clock | None = None
) -> ClientView:
    """The :class:`ClientView` of ``client``; ``cache_ttl`` and ``clock`` override (and stand
    in for a client without ``config``)."""
    config: Any = getattr(client, "config", None)  # every ``getattr`` of None: its default
    state = client.rate_limit_state().get("usage")
    company = state.configured if state is not None else None
    per_key = state.per_key if state is not None else None
    limit = config.limit("usage") if hasattr(config, "limit") else None
    if limit is not None:
        company, per_key = limit.shared, limit.per_key
    if cache_ttl is None:
        cache_ttl = getattr(config, "cache_ttl", None)
    if cache_ttl is None:
        cache_ttl = client.profile.cache_ttl
    if cache_ttl < 0 or not math.isfinite(cache_ttl):
        raise InvalidRequestError("cache_ttl must be a finite number >= 0", field="cache_ttl")
    if clock is None:
        clock = getattr(config, "clock", None)
    host = getattr(config, "base_url", None) or getattr(client, "base_url", "")
    return ClientView(
        cache_ttl=float(cache_ttl),
        company=company,
        per_key=per_key,
        account=getattr(config, "account_rate", None),
        margin=getattr(config, "rate_margin", DEFAULT_RATE_MARGIN),
        clock=clock if clock is not None else MonotonicClock(),
        iccid_length=getattr(config, "iccid_length", (ICCID_MIN_LENGTH, ICCID_MAX_LENGTH)),
        account_name=f"{client.profile.name}:{client.client_id}@{host}",
    )


def wall_clock(clock: Clock) -> Callable[[], float]:
    """The wall time (POSIX seconds) beside ``clock``: its own ``wall()`` when it has one,
    else the wall time when asked first, moving with the clock from there."""
    wall = getattr(clock, "wall", None)
    if callable(wall):
        return wall  # type: ignore[no-any-return]
    offset = MonotonicClock().wall() - clock.now()
    return lambda: offset + clock.now()

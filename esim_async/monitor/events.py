"""What the fleet monitor reports: :class:`UsageEvent`, and the rules that turn two consecutive
readings of one eSIM into events (:func:`detect`).

The rules are pure functions of the previous reading, the new one and a small bit set of what
already fired, so the monitor, a restart from its store and a benchmark's baseline all apply
exactly the same semantics:

- **threshold**: the fraction of data used (``1 - remaining / total``) reached ``t``. Every
  threshold at or below the fraction a reading shows fires, in ascending order, even when that
  same reading already says FINISHED. Each fires once per eSIM and package; unlimited packages
  have none.
- **topup**: ``total`` or ``remaining`` rose, the package changed between limited and
  unlimited, or the expiry moved later on an eSIM in use (a top-up brings its own validity):
  a new package, which re-arms the thresholds and ``exhausted``.
- **status**: the status changed (NOT_ACTIVE to ACTIVE is an installation; ACTIVE to FINISHED,
  EXPIRED or RECYCLED...).
- **exhausted**: a limited package has no data left (``remaining`` 0, or FINISHED). Once per
  package.
- **expiring**: ``expired_at`` is within the configured window of now. Once per expiry date (a
  top-up that moves the date re-arms it).
- **not_found**: the provider answered 404 for a tracked eSIM.
- **low_data**: a low-data webhook was fed to the monitor (see ``FleetMonitor.feed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ..models.usage import Usage, UsageStatus

__all__ = [
    "EXHAUSTED_BIT",
    "EXPIRING_BIT",
    "THRESHOLD_BITS",
    "EventKind",
    "UsageEvent",
    "detect",
    "is_limited",
    "new_package",
    "next_target",
    "used_fraction",
]

EventKind = Literal[
    "threshold", "status", "exhausted", "expiring", "topup", "not_found", "low_data"
]

#: Bits of the "fired" set above the thresholds' own (threshold ``i`` is bit ``i``; at most 16).
EXHAUSTED_BIT = 1 << 16
EXPIRING_BIT = 1 << 17
#: The bits of the thresholds themselves.
THRESHOLD_BITS = (1 << 16) - 1

#: Statuses after which nothing but a new package or a recycling happens.
_SETTLED = frozenset({UsageStatus.FINISHED, UsageStatus.EXPIRED, UsageStatus.RECYCLED})


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One thing the monitor learned about one eSIM.

    Attributes:
        iccid: the eSIM.
        kind: ``"threshold"``, ``"status"``, ``"exhausted"``, ``"expiring"``, ``"topup"``,
            ``"not_found"`` or ``"low_data"`` (see :mod:`esim_async.monitor.events`).
        usage: the reading that showed it (``None`` for ``not_found``, and for ``low_data``
            when the webhook came before any reading).
        previous: the reading before it, or ``None`` for the first reading of the eSIM.
        detected_at: when the monitor learned it (UTC, the client clock's wall time).
        threshold: for ``threshold``, the fraction of data used that was crossed (e.g. 0.9);
            for ``low_data``, the webhook's level as a fraction when it is a percentage.
        level: for ``low_data``, the webhook's level as sent (``"90%"``, ``"3days"``...).
        at: the client clock's monotonic time of detection (to compare with other readings
            of the same clock).
    """

    iccid: str
    kind: EventKind
    usage: Usage | None
    previous: Usage | None
    detected_at: datetime
    threshold: float | None = None
    level: str | None = None
    at: float = 0.0

    @property
    def status(self) -> UsageStatus | None:
        """The status the reading showed (``None`` without a reading)."""
        return self.usage.status if self.usage is not None else None


def is_limited(usage: Usage) -> bool:
    """True for a package with a data allowance (not unlimited, a total above 0)."""
    return not usage.is_unlimited and bool(usage.raw_total) and usage.raw_remaining is not None


def used_fraction(usage: Usage) -> float | None:
    """The fraction of data used, ``1 - remaining / total``; ``None`` without an allowance."""
    if not is_limited(usage):
        return None
    total = usage.raw_total or 0
    used = total - max(0, usage.raw_remaining or 0)
    return max(0.0, used / total)


_IN_USE = frozenset({UsageStatus.ACTIVE, UsageStatus.FINISHED, UsageStatus.EXPIRED})


def new_package(prev: Usage, new: Usage) -> bool:
    """A top-up (or another package) between two readings: the total or the data left rose,
    the package changed between limited and unlimited, or the expiry moved later on an eSIM in
    use (a top-up brings its own validity: so a top-up used up entirely between two readings
    still shows)."""
    before, after = is_limited(prev), is_limited(new)
    if before != after:
        return bool(prev.is_unlimited) != bool(new.is_unlimited)
    if not after:
        return False
    return (
        (new.raw_total or 0) > (prev.raw_total or 0)
        or (new.raw_remaining or 0) > (prev.raw_remaining or 0)
    ) or (
        prev.status in _IN_USE
        and new.status in _IN_USE
        and prev.expired_at is not None
        and new.expired_at is not None
        and new.expired_at > prev.expired_at
    )


def next_target(usage: Usage, fired: int, thresholds: tuple[float, ...]) -> float | None:
    """The next threshold (fraction of data used) not yet reported, ``None`` when none is left
    (or the package is unlimited). Exhaustion is reported whenever it is seen; to have it
    watched as closely as a threshold, include 1.0 in the thresholds."""
    if not is_limited(usage):
        return None
    return next((t for i, t in enumerate(thresholds) if not fired & (1 << i)), None)


def detect(
    iccid: str,
    previous: Usage | None,
    usage: Usage,
    fired: int,
    thresholds: tuple[float, ...],
    *,
    now_wall: float,
    detected_at: datetime,
    expiring_within: float,
    at: float = 0.0,
) -> tuple[list[UsageEvent], int]:
    """The events ``usage`` shows after ``previous``, and the new fired set.

    Args:
        iccid: the eSIM.
        previous: the reading before (``None`` for the first).
        usage: the new reading.
        fired: bit set of what already fired for the current package (threshold ``i`` is bit
            ``i``, plus :data:`EXHAUSTED_BIT` and :data:`EXPIRING_BIT`).
        thresholds: ascending fractions of data used.
        now_wall: the current wall time (POSIX seconds), for the expiring window.
        detected_at: stamped on every event.
        expiring_within: seconds before ``expired_at`` at which ``expiring`` fires.
        at: the clock's monotonic time, stamped on every event.
    """
    events: list[UsageEvent] = []

    def emit(kind: EventKind, threshold: float | None = None) -> None:
        events.append(
            UsageEvent(iccid, kind, usage, previous, detected_at, threshold=threshold, at=at)
        )

    if previous is not None:
        if new_package(previous, usage):
            fired &= ~(THRESHOLD_BITS | EXHAUSTED_BIT)
            emit("topup")
        if previous.expired_at != usage.expired_at:
            fired &= ~EXPIRING_BIT
        if previous.status != usage.status:
            emit("status")
    fraction = used_fraction(usage)
    if fraction is not None:
        for i, t in enumerate(thresholds):
            if fraction >= t and not fired & (1 << i):
                fired |= 1 << i
                emit("threshold", t)
        exhausted = (usage.raw_remaining or 0) <= 0 or usage.status is UsageStatus.FINISHED
        if exhausted and not fired & EXHAUSTED_BIT:
            fired |= EXHAUSTED_BIT
            emit("exhausted")
    expiry = usage.expired_at
    if (
        expiry is not None
        and usage.status not in _SETTLED
        and not fired & EXPIRING_BIT
        and 0 <= expiry.timestamp() - now_wall <= expiring_within
    ):
        fired |= EXPIRING_BIT
        emit("expiring")
    return events, fired

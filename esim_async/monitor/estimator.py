"""Per-eSIM burn-rate estimates, and when each eSIM is next worth reading.

Every interval here is a multiple of :attr:`Timing.unit`, the shortest useful gap between two
reads of one eSIM (the client's cache TTL, which mirrors the server's, or the per-eSIM limit's
spacing when that is longer), or comes from the budget and the readings: nothing is a fixed
duration, so a monitor on a client with a 1-second cache behaves like one on a production
client with 20 minutes, 1,200 times faster.

Per eSIM (:class:`SimState`, updated by :func:`observe`):

- ``peak``: the speed of its bursts, MB/s: its fastest interval between two readings in which
  data was used. An interval that spans a pause understates the burst inside it, so the peak
  only grows while reads get denser near a threshold, which is where it matters;
- ``rate``: an EWMA of the moving intervals' speeds (shown in :class:`TrackedSim`);
- ``moves`` and ``still``: its evidence (moving intervals seen, time seen idle since it last
  moved), which sets how much the fleet's fast speed still weighs.

Two kinds of eSIM, two rules (:func:`plan`):

- *Draining* (ACTIVE, a threshold ahead): the crossing can be predicted. The upper-confidence
  speed (:func:`upper_rate`) is ``OPTIMISM`` times the larger of its own peak and the fleet's
  fast speed (the 90th percentile of every moving interval) weighted by
  ``exp(-still / horizon) / (1 + moves)``. Its data left to the threshold over that speed is the
  earliest the crossing can come, and the eSIM is read then: never sooner than a unit, never
  later than the active cap. Near a threshold that is every unit, the most that can be learnt.
- *Waiting* for an event that comes at random (an installation of a NOT_ACTIVE eSIM, a top-up
  of a FINISHED or EXPIRED one or of one past its last threshold): rates learnt from the fleet
  (events over exposure, conjugate prior), read by the square-root law with what the draining
  eSIMs leave of the budget: interval ``S / (R' sqrt(rate))``, ``S`` the sum of the square
  roots of the waiting eSIMs' rates, ``R'`` the reads per second left (at least a fifth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..models.usage import Usage, UsageStatus
from .events import is_limited, new_package, next_target

__all__ = [
    "OPTIMISM",
    "Budget",
    "FleetPrior",
    "SimState",
    "Timing",
    "observe",
    "plan",
    "upper_rate",
]

#: Factor on an eSIM's speed estimate for the fastest it is assumed to go (intervals that span
#: pauses understate bursts; a read too early costs budget, a read too late costs delay).
OPTIMISM = 2.0
#: Horizon of the evidence that an eSIM is idle, in units (at the providers' cache: 4 hours).
HORIZON_UNITS = 12.0
#: Weight of a new moving interval in the EWMA of the rate.
_RATE_WEIGHT = 0.3
#: Caps on the gap between two reads, as ``max(units * unit, periods * N / R)`` (``N / R``:
#: the time the budget takes to read every tracked eSIM once): a draining eSIM, and any other
#: that can still change. At the providers' cache: 4 hours and 3 days at the least.
CAP_ACTIVE = (12.0, 2.0)
CAP_OTHER = (216.0, 16.0)
#: Prior mean time between events, in units, until the fleet shows its own rates: an
#: installation of a NOT_ACTIVE eSIM, a top-up (12 hours and 3 days at the providers' cache).
WAITING_UNITS = 36.0
SETTLED_UNITS = 216.0
#: The least share of the budget left to eSIMs waiting for a random event.
WAITING_SHARE = 0.2
#: Without a company limit, the monitor budgets itself one read per eSIM per this many units.
UNLIMITED_UNITS = HORIZON_UNITS

_NEVER = math.inf
_SETTLED = (UsageStatus.FINISHED, UsageStatus.EXPIRED)


@dataclass(frozen=True, slots=True)
class Timing:
    """The intervals of one monitor, derived from the client.

    Attributes:
        unit: the shortest gap between two reads of one eSIM (seconds of the client's clock).
        expiring_within: seconds before ``expired_at`` at which ``expiring`` fires.
    """

    unit: float
    expiring_within: float

    def cap(self, kind: tuple[float, float], period: float) -> float:
        """A cap (``CAP_*``) for a round-robin period of ``period`` seconds."""
        units, periods = kind
        return max(units * self.unit, periods * period)


class Budget:
    """How the reads per second are shared (kept up to date by the monitor).

    Attributes:
        per_second: the budget's reads per second (``inf``: no company limit).
        tracked: eSIMs tracked.
        draining: the reads per second the draining eSIMs' schedules take (sum of ``share``).
        roots: the sum of the waiting eSIMs' ``root`` (square roots of their event rates).
    """

    __slots__ = ("draining", "per_second", "roots", "tracked")

    def __init__(self) -> None:
        self.per_second = math.inf
        self.tracked = 0
        self.draining = 0.0
        self.roots = 0.0

    def notional(self, unit: float) -> float:
        """The reads per second to plan with (without a company limit: one read per eSIM per
        :data:`UNLIMITED_UNITS` units)."""
        if math.isfinite(self.per_second) and self.per_second > 0:
            return self.per_second
        return max(1, self.tracked) / (UNLIMITED_UNITS * unit)

    def period(self, unit: float) -> float:
        """The time the budget takes to read every tracked eSIM once."""
        return self.tracked / self.notional(unit)

    def waiting_scale(self, unit: float) -> float:
        """``S / R'`` of the square-root law for the waiting eSIMs."""
        total = self.notional(unit)
        left = max(total - max(0.0, self.draining), WAITING_SHARE * total)
        return max(0.0, self.roots) / left


class _Histogram:
    """Counts in log2 buckets (constant memory); a quantile is a bucket's upper edge."""

    __slots__ = ("counts", "total")

    LOW = -40
    SIZE = 100

    def __init__(self, counts: list[float] | None = None) -> None:
        self.counts = list(counts) if counts is not None else [0.0] * self.SIZE
        self.total = sum(self.counts)

    def add(self, value: float) -> None:
        if value <= 0 or not math.isfinite(value):
            return
        i = min(self.SIZE - 1, max(0, math.floor(math.log2(value)) - self.LOW))
        self.counts[i] += 1.0
        self.total += 1.0

    def quantile(self, q: float) -> float | None:
        if self.total <= 0:
            return None
        target = q * self.total
        acc = 0.0
        for i, n in enumerate(self.counts):
            acc += n
            if acc >= target:
                return float(2.0 ** (i + 1 + self.LOW))
        return float(2.0 ** (self.SIZE + self.LOW))


class _Hazard:
    """An event rate that depends on how long an eSIM has been in its state (its age):
    events over exposure in log2 age buckets (in units), each from a prior of one event per
    ``prior_units`` units (a conjugate Gamma prior), so the fleet's own timing takes over as
    soon as it shows. A FINISHED eSIM is likelier to be topped up in its first hours than a
    month later; the rate follows."""

    __slots__ = ("events", "exposure", "prior_units")

    SIZE = 14

    def __init__(self, prior_units: float) -> None:
        self.prior_units = prior_units
        self.events = [0.0] * self.SIZE
        self.exposure = [0.0] * self.SIZE

    def _bucket(self, age: float, unit: float) -> int:
        units = age / unit
        return 0 if units < 1 else min(self.SIZE - 1, 1 + math.floor(math.log2(units)))

    def add(self, age: float, dt: float, event: bool, unit: float) -> None:
        """Count ``dt`` seconds observed from ``age`` on, in which the event came or not
        (spread over the buckets the interval spans, the event in proportion)."""
        start, end = max(0.0, age), max(0.0, age) + dt
        if end <= start:
            return
        while start < end:
            i = self._bucket(start, unit)
            edge = end if i == self.SIZE - 1 else min(end, unit * 2.0**i)
            part = edge - start
            self.exposure[i] += part
            if event:
                self.events[i] += part / dt
            start = edge

    def rate(self, age: float, unit: float) -> float:
        """Events per second for an eSIM of this age."""
        i = self._bucket(max(0.0, age), unit)
        return (self.events[i] + 0.5) / (self.exposure[i] + 0.5 * self.prior_units * unit)

    def to_list(self) -> list[list[float]]:
        return [self.events, self.exposure]

    def load(self, data: object) -> None:
        if (
            isinstance(data, list)
            and len(data) == 2
            and all(isinstance(x, list) and len(x) == self.SIZE for x in data)
        ):
            self.events = [max(0.0, float(v)) for v in data[0]]
            self.exposure = [max(0.0, float(v)) for v in data[1]]


class FleetPrior:
    """What the fleet teaches about an eSIM with little history of its own.

    - ``speed``: the 90th percentile of the speeds of every moving interval seen (log2
      buckets), the fast speed a little-known eSIM is assumed to reach;
    - the rates of installations (of NOT_ACTIVE eSIMs) and of top-ups (of FINISHED or EXPIRED
      eSIMs), by how long they have been so (:class:`_Hazard`), from priors of one per
      :data:`WAITING_UNITS` and :data:`SETTLED_UNITS` units.
    """

    __slots__ = ("_speeds", "installs", "speed", "topups")

    QUANTILE = 0.9

    def __init__(self) -> None:
        self._speeds = _Histogram()
        #: The current fast speed (``None`` before any moving interval).
        self.speed: float | None = None
        self.installs = _Hazard(WAITING_UNITS)
        self.topups = _Hazard(SETTLED_UNITS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "speeds": self._speeds.counts,
            "installs": self.installs.to_list(),
            "topups": self.topups.to_list(),
        }

    @classmethod
    def from_dict(cls, data: object) -> FleetPrior:
        prior = cls()
        if isinstance(data, dict):
            counts = data.get("speeds")
            if isinstance(counts, list) and len(counts) == _Histogram.SIZE:
                prior._speeds = _Histogram([float(c) for c in counts])
            prior.installs.load(data.get("installs"))
            prior.topups.load(data.get("topups"))
        prior.refresh()
        return prior

    def add(self, speed: float) -> None:
        """Count one moving interval's speed (MB/s)."""
        self._speeds.add(speed)

    def refresh(self) -> None:
        """Recompute the fast speed (after a batch of :meth:`add`)."""
        self.speed = self._speeds.quantile(self.QUANTILE)


class SimState:
    """What the monitor keeps about one tracked eSIM (a few hundred bytes).

    Times are on the client clock's monotonic scale. ``token`` identifies the live entry of the
    eSIM in the schedule's heaps (0: in none, e.g. while it is being read). ``share`` (reads
    per second its schedule takes, while draining) and ``root`` (square root of its event rate,
    while waiting) are its parts of the :class:`Budget`.
    """

    __slots__ = (
        "due",
        "eligible_at",
        "fails",
        "fired",
        "iccid",
        "missing",
        "moves",
        "peak",
        "rate",
        "read_at",
        "root",
        "share",
        "since",
        "still",
        "token",
        "tracked",
        "urgent",
        "usage",
    )

    def __init__(self, iccid: str, now: float) -> None:
        self.iccid = iccid
        self.usage: Usage | None = None
        self.read_at = -_NEVER
        self.eligible_at = now
        self.due = now
        self.rate = 0.0
        self.peak = 0.0
        self.moves = 0
        #: Time seen without any data used since it last moved (evidence that it is idle).
        self.still = 0.0
        self.fails = 0
        self.fired = 0
        self.missing = False
        self.urgent = False
        self.tracked = True
        self.token = 0
        self.share = 0.0
        self.root = 0.0
        #: When its current status was first seen.
        self.since = now

    def __repr__(self) -> str:
        return f"SimState({self.iccid!r}, due={self.due!r}, peak={self.peak!r})"


def _used(usage: Usage) -> int:
    return (usage.raw_total or 0) - (usage.raw_remaining or 0)


def observe(state: SimState, usage: Usage, now: float, prior: FleetPrior, unit: float) -> None:
    """Update ``state``'s estimates (and the fleet's) with a new reading taken at ``now``."""
    prev = state.usage
    if prev is None:
        state.since = now
        return
    if usage.status != prev.status:
        state.since = now
    dt = now - state.read_at
    if dt <= 0 or not math.isfinite(dt):
        return
    fresh = new_package(prev, usage)
    age = state.read_at - state.since
    if prev.status is UsageStatus.NOT_ACTIVE:
        prior.installs.add(age, dt, usage.status is UsageStatus.ACTIVE, unit)
    elif prev.status in _SETTLED:
        prior.topups.add(age, dt, fresh, unit)
    if fresh or not is_limited(prev) or not is_limited(usage):
        return  # a new package: its user's habits carry over, this interval says nothing
    delta = _used(usage) - _used(prev)
    if delta <= 0:
        state.still += dt
        return
    speed = delta / dt
    state.still = 0.0
    prior.add(speed)
    state.moves += 1
    state.rate = speed if state.moves == 1 else state.rate + _RATE_WEIGHT * (speed - state.rate)
    state.peak = max(state.peak, speed)


def upper_rate(state: SimState, prior: FleetPrior, unit: float) -> float | None:
    """The fastest ``state`` is assumed to use data, MB/s (``None``: nothing known yet):
    :data:`OPTIMISM` times the larger of its own peak and the fleet's fast speed, the fleet's
    weighing ``exp(-still / horizon) / (1 + moves)``."""
    fleet = prior.speed
    if fleet is None:
        return OPTIMISM * state.peak if state.moves else None
    idle = math.exp(-state.still / (HORIZON_UNITS * unit))
    return OPTIMISM * max(state.peak, fleet * idle / (1 + state.moves))


def plan(
    state: SimState,
    now: float,
    wall_now: float,
    timing: Timing,
    prior: FleetPrior,
    thresholds: tuple[float, ...],
    budget: Budget,
) -> float:
    """The time ``state`` is next worth reading (``inf``: never), at or after its
    ``eligible_at``; updates its ``share`` and ``root`` (the caller updates the budget's sums).
    """
    usage = state.usage
    unit = timing.unit
    state.share = state.root = 0.0
    if state.missing:
        return _NEVER
    if usage is None:
        return max(state.eligible_at, state.due)
    status = usage.status
    if status is UsageStatus.RECYCLED:
        return _NEVER
    period = budget.period(unit)
    target = next_target(usage, state.fired, thresholds)
    if status is UsageStatus.ACTIVE and target is not None:
        gap = target * (usage.raw_total or 0) - _used(usage)
        speed = upper_rate(state, prior, unit)
        interval = gap / speed if speed and gap > 0 else 0.0
        interval = min(max(interval, unit), timing.cap(CAP_ACTIVE, period))
        state.share = 1.0 / interval
    else:
        age = now - state.since
        if status is UsageStatus.ACTIVE:
            rate = prior.topups.rate(0.0, unit)  # past its last threshold: finishing soon
        elif status in _SETTLED:
            rate = prior.topups.rate(age, unit)
        else:
            rate = prior.installs.rate(age, unit)  # NOT_ACTIVE, or a status not documented
        scale = budget.waiting_scale(unit)
        interval = scale / math.sqrt(rate)
        # A fast user reaches the first threshold of a new package soon after a top-up or an
        # installation: read late, and those crossings are late too. Count them in.
        speed = upper_rate(state, prior, unit)
        total = usage.raw_total or 0
        if speed and total and thresholds:
            first = thresholds[0] * total / speed
            if first < interval:
                rate *= 1 + len(thresholds)
                interval = max(scale / math.sqrt(rate), first)
        state.root = math.sqrt(rate)
        interval = min(max(interval, unit), timing.cap(CAP_OTHER, period))
    base = state.read_at if math.isfinite(state.read_at) else now
    due = base + interval
    expiry = usage.expired_at
    if expiry is not None and status is not UsageStatus.EXPIRED:
        until = expiry.timestamp() - wall_now
        # The moment it enters the expiring window, and the moment it expires.
        for moment in (until - timing.expiring_within, until):
            if moment > 0:
                due = min(due, now + moment)
    return max(due, state.eligible_at)

"""Per-eSIM burn-rate estimates, and when each eSIM is next worth reading.

The policy and its reasons are in :mod:`esim_async.monitor`; this module holds its arithmetic.
Every interval is a multiple of :attr:`Timing.unit` (the client's cache TTL, which mirrors the
server's, or the per-eSIM limit's spacing when longer) or comes from the budget and the
readings, never a fixed duration: a monitor on a 1-second cache behaves like one on a
production client's 20 minutes, 1,200 times faster.

Per eSIM (:class:`SimState`, updated by :func:`observe`):

- ``peak``: its fastest moving interval, each divided by the share of an interval that long
  the fleet spends online (all of a short one, the duty cycle of a long one), since an
  interval that spans a pause understates the burst inside it. Kept across packages: a fast
  user stays fast after a top-up;
- ``top``: its fastest moving interval, a lower bound on its bursts. After
  :data:`MEASURED_MOVES` moving intervals, ``top`` times :data:`MEASURED_MARGIN` is its burst
  speed (:func:`own_rate`): some interval was most likely spent wholly online, while the
  peak, the largest of many generous guesses, runs high (simulating the benchmark's fleet: a
  median 2.5 times the true speed after eight moving intervals, where ``top`` is within 12 %
  of it for nine eSIMs in ten);
- ``flow`` and ``known``: bounds on its speed from its current run of short moving intervals
  agreeing to within the whole MB of their readings, and from the last run of
  :data:`FLOW_RUNS` or more (kept across sessions and packages): an interval spent wholly
  online shows the speed to within that rounding;
- ``rate`` (an EWMA of moving intervals' speeds, shown in :class:`TrackedSim`), ``moves`` and
  ``still`` (moving intervals seen, time seen idle since it last moved or changed package or
  status).

The first reading of a new package counts as a moving interval (what it shows used was used
since the last reading before the top-up): a user never seen moving whose new package is
already a fifth used is read again before it could reach the first threshold at that pace,
not at the pace of a finished eSIM. The fleet (:class:`FleetPrior`) teaches its fast speed,
how long sessions and pauses last, and the rates of installations and top-ups by age.

:func:`plan` reads an eSIM once ``U(t)``, the expected delay a read would remove, reaches the
budget's common threshold (:meth:`Budget.threshold`, tuned by :meth:`Budget.tune` until the
plans' reads match the budget), one unit after its last read at the earliest, a cap at the
latest. *Draining*: :func:`delay_until` gives how long after ``ahead`` a read is worth its
cost; an eSIM never seen moving takes the fleet's speed with the chance
:data:`UNKNOWN_WEIGHT`, and a cap of at least :data:`IDLE_SHARE` of its idle time. *Aimed*:
the latest crossing at the lower bound of a known speed (:func:`_latest_crossing`), when the
readings place it within :data:`TIMED_UNITS` units; ``timed`` keeps it out of early reads and
puts it first once due (:mod:`.scheduler`). *Waiting*: the square-root law of the event's
rate, for the new package's first threshold and the event itself (at :data:`STATUS_WEIGHT`).
"""

from __future__ import annotations

import math
from dataclasses import InitVar, dataclass, field
from typing import Any

from ..models.usage import Usage, UsageStatus
from .events import is_limited, new_package, next_target

__all__ = [
    "OPTIMISM",
    "Budget",
    "FleetPrior",
    "SimState",
    "Timing",
    "delay_until",
    "observe",
    "own_rate",
    "plan",
    "upper_rate",
]

#: Factor on an eSIM's speed estimate for the fastest it is assumed to go. The peak already
#: counts the pauses an interval may span; more optimism spends reads before a crossing can
#: come (in the simulation of the benchmark's fleet, 2 gave a mean delay a third longer).
OPTIMISM = 1.0
#: Horizon of the evidence that an eSIM is idle, in units (at the providers' cache: 4 hours).
HORIZON_UNITS = 12.0
#: Weight of a new moving interval in the EWMA of the rate.
_RATE_WEIGHT = 0.3
#: Caps on the gap between two reads, as ``max(units * unit, periods * N / R)`` (``N / R``:
#: the time the budget takes to read every tracked eSIM once): a draining eSIM, and any other
#: that can still change. At the providers' cache: 4 hours and 3 days at the least.
CAP_ACTIVE = (12.0, 1.0)
CAP_OTHER = (216.0, 16.0)
#: Prior mean time between events, in units, until the fleet shows its own rates: an
#: installation of a NOT_ACTIVE eSIM, a top-up (12 hours and 3 days at the providers' cache).
WAITING_UNITS = 36.0
SETTLED_UNITS = 216.0
#: Prior mean length of an online session and of a pause between sessions, in units, until
#: the fleet shows its own (a moving interval followed by a still one ends a session).
SESSION_UNITS = 6.0
PAUSE_UNITS = 12.0
#: The common threshold on the expected delay a read removes, in units, before the monitor
#: has tuned it to its budget; and the bounds it is kept in.
COST_UNITS = 0.5
COST_BOUNDS = (0.03, 1e3)
#: The chance an eSIM not seen moving yet reaches the fleet's fast speed.
UNKNOWN_WEIGHT = 0.3
#: Weight of a status change (an installation, a top-up) against a threshold crossing.
STATUS_WEIGHT = 0.05
#: Moving intervals after which an eSIM's fastest one is taken as its burst speed, and the
#: margin on it (:func:`own_rate`).
MEASURED_MOVES = 6
MEASURED_MARGIN = 1.3
#: Moving intervals agreeing on a speed (to within the whole MB of their readings) that make
#: it an eSIM's known burst speed (:attr:`SimState.known`).
FLOW_RUNS = 2
#: A single short moving interval after a moving one is taken as spent wholly online when the
#: crossing it predicts is at most this many units away (further, the session more likely
#: ends first, and a read planned at the predicted crossing comes late).
FLOW_UNITS = 2.0
#: Widest window (in units) in which a known speed places a crossing for a read to be aimed
#: at its end; wider, reads at intervals look for it.
TIMED_UNITS = 1.0
#: An eSIM never seen moving is read at most once per the cap or this share of the time it
#: has been seen idle, whichever is longer (at the providers' cache, one idle for a week is
#: read about twice a week).
IDLE_SHARE = 0.5
#: Largest change of the common threshold per unit of time.
COST_STEP = 1.4
#: Without a company limit, the monitor budgets itself one read per eSIM per this many units.
UNLIMITED_UNITS = HORIZON_UNITS

_NEVER = math.inf
_NO_FLOW = (0.0, 0.0, 0)
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


@dataclass(slots=True, eq=False)
class Budget:
    """How the reads per second are shared (kept up to date by the monitor).

    Every eSIM is read when the expected detection delay a read would remove reaches one
    common threshold, :attr:`cost`; the monitor tunes it so that the reads the plans ask for
    (:attr:`demand`) match the reads per second it has (:meth:`tune`).

    Attributes:
        per_second: the budget's reads per second (``inf``: no company limit).
        tracked: eSIMs tracked.
        demand: the reads per second the eSIMs' plans ask for (sum of their ``share``).
        roots: the sum of the waiting eSIMs' ``root`` (square roots of their event rates).
        cost: the common threshold, seconds of expected delay (``None``: not set yet,
            :data:`COST_UNITS` units).
    """

    per_second: float = math.inf
    tracked: int = 0
    demand: float = 0.0
    roots: float = 0.0
    cost: float | None = None

    def notional(self, unit: float) -> float:
        """The reads per second to plan with (without a company limit: one read per eSIM per
        :data:`UNLIMITED_UNITS` units)."""
        if math.isfinite(self.per_second) and self.per_second > 0:
            return self.per_second
        return max(1, self.tracked) / (UNLIMITED_UNITS * unit)

    def period(self, unit: float) -> float:
        """The time the budget takes to read every tracked eSIM once."""
        return self.tracked / self.notional(unit)

    def threshold(self, unit: float) -> float:
        """The common threshold on the expected delay a read removes (seconds)."""
        return self.cost if self.cost is not None else COST_UNITS * unit

    def tune(self, unit: float) -> float:
        """Move the threshold towards the one whose plans use the budget exactly, and return
        it: the square-root law's reads per second go as ``cost ** -0.5``, so a demand ``k``
        times the budget calls for a threshold ``k ** 2`` times higher (by at most a factor
        of :data:`COST_STEP` per call, so that the plans it is measured on can follow)."""
        cost = self.threshold(unit)
        supply = self.notional(unit)
        if self.demand > 0 and supply > 0:
            factor = min(COST_STEP, max(1 / COST_STEP, (self.demand / supply) ** 2))
            low, high = COST_BOUNDS
            cost = min(high * unit, max(low * unit, cost * factor))
        self.cost = cost
        return cost


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
        start = max(0.0, age)
        end = start + dt
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

    - ``speed``: the 90th percentile of the speeds of every moving interval seen, as shares of
      the package per second (counted in log2 buckets of shares per ``unit``, so the buckets
      scale with the client's intervals as everything else does): the fast speed a
      little-known eSIM is assumed to reach, times its package;
    - the rates of installations (of NOT_ACTIVE eSIMs) and of top-ups (of FINISHED or EXPIRED
      eSIMs), by how long they have been so (:class:`_Hazard`), from priors of one per
      :data:`WAITING_UNITS` and :data:`SETTLED_UNITS` units.
    """

    __slots__ = ("_speeds", "installs", "sessions", "speed", "topups", "unit")

    QUANTILE = 0.9

    def __init__(self, unit: float = 1.0) -> None:
        #: The monitor's unit (:attr:`Timing.unit`): speeds are counted as shares per unit.
        self.unit = unit
        self._speeds = _Histogram()
        #: The current fast speed, a share of the package per second (``None`` before any
        #: moving interval).
        self.speed: float | None = None
        self.installs = _Hazard(WAITING_UNITS)
        self.topups = _Hazard(SETTLED_UNITS)
        #: Sessions of the eSIMs seen moving: sessions ended, time online, sessions
        #: started, time offline (seconds of the clock).
        self.sessions = [0.0, 0.0, 0.0, 0.0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "shares_per_unit": self._speeds.counts,
            "installs": self.installs.to_list(),
            "topups": self.topups.to_list(),
            "sessions": self.sessions,
        }

    def stop_rate(self, unit: float) -> float:
        """Sessions ended per second online (from a prior of one per
        :data:`SESSION_UNITS` units)."""
        return (self.sessions[0] + 1.0) / (self.sessions[1] + SESSION_UNITS * unit)

    def resume_rate(self, unit: float) -> float:
        """Sessions started per second offline (from a prior of one per
        :data:`PAUSE_UNITS` units)."""
        return (self.sessions[2] + 1.0) / (self.sessions[3] + PAUSE_UNITS * unit)

    @classmethod
    def from_dict(cls, data: object, unit: float = 1.0) -> FleetPrior:
        prior = cls(unit)
        if isinstance(data, dict):
            # "shares_per_unit": speeds as shares of the package per unit (older stores'
            # "speeds", in MB/s, and "shares", per second, are not read: the fleet learns its
            # speeds again).
            counts = data.get("shares_per_unit")
            if isinstance(counts, list) and len(counts) == _Histogram.SIZE:
                prior._speeds = _Histogram([float(c) for c in counts])
            prior.installs.load(data.get("installs"))
            prior.topups.load(data.get("topups"))
            sessions = data.get("sessions")
            if isinstance(sessions, list) and len(sessions) == 4:
                prior.sessions = [max(0.0, float(v)) for v in sessions]
        prior.refresh()
        return prior

    def add(self, speed: float) -> None:
        """Count one moving interval's speed, as a share of its package per second."""
        self._speeds.add(speed * self.unit)

    def refresh(self) -> None:
        """Recompute the fast speed (after a batch of :meth:`add`)."""
        per_unit = self._speeds.quantile(self.QUANTILE)
        self.speed = per_unit / self.unit if per_unit is not None else None


@dataclass(slots=True, eq=False, repr=False)
class SimState:
    """What the monitor keeps about one tracked eSIM (a few hundred bytes).

    Times are on the client clock's monotonic scale; ``eligible_at``, ``due`` and ``since``
    start at ``now``. ``token`` identifies the live entry of the eSIM in the schedule's heaps
    (0: in none, e.g. while it is being read). ``share`` (reads per second its plan asks for)
    and ``root`` (square root of its event rate, while waiting for an installation or a
    top-up) are its parts of the :class:`Budget`.
    """

    iccid: str
    now: InitVar[float]
    usage: Usage | None = None
    read_at: float = -_NEVER
    eligible_at: float = field(init=False)
    due: float = field(init=False)
    rate: float = 0.0
    peak: float = 0.0
    moves: int = 0
    #: Time seen without any data used since it last moved (evidence that it is idle).
    still: float = 0.0
    fails: int = 0
    fired: int = 0
    missing: bool = False
    urgent: bool = False
    tracked: bool = True
    token: int = 0
    share: float = 0.0
    root: float = 0.0
    #: When its current status was first seen.
    since: float = field(init=False)
    #: The fastest speed of any of its moving intervals, MB/s (a lower bound on its
    #: bursts, which a few intervals spent wholly online make exact).
    top: float = 0.0
    #: Its current run of short moving intervals whose speeds agree: bounds on the
    #: speed (MB/s) and the number of intervals (``(0, 0, 0)``: none).
    flow: tuple[float, float, int] = _NO_FLOW
    #: Its last two intervals both moved: the last one most likely spent wholly online.
    flowing: bool = False
    #: Bounds on its burst speed (MB/s) from the last run of :data:`FLOW_RUNS` agreeing
    #: intervals, kept across sessions and packages (``(0, 0)``: none yet).
    known: tuple[float, float] = (0.0, 0.0)
    #: Its read is planned at a predicted crossing (see :func:`plan`): not worth an early
    #: read, and time-critical once due.
    timed: bool = False

    def __post_init__(self, now: float) -> None:
        self.eligible_at = self.due = self.since = now

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
    if fresh or usage.status != prev.status:
        state.still = 0.0  # idle in its last package or state says nothing of this one
    flow, state.flow = state.flow, _NO_FLOW
    if not is_limited(usage):
        return
    if fresh:
        # A new package (a top-up) came after the last reading: what it shows used was used
        # since then, at least that fast (its user's habits carry over otherwise).
        delta = _used(usage)
        if delta <= 0:
            return
    elif not is_limited(prev):
        return
    else:
        delta = _used(usage) - _used(prev)
    if not fresh and state.moves and dt <= 2 * unit and state.peak * dt >= 2:
        # A short interval of an eSIM seen moving, long enough to show its speed in whole
        # MB: online at both ends or not, as far as it shows.
        sessions = prior.sessions
        if state.still <= 0:  # online at the last reading
            sessions[1] += dt
            sessions[0] += delta <= 0
        else:
            sessions[3] += dt
            sessions[2] += delta > 0
    if delta <= 0:
        state.still += dt
        return
    speed = delta / dt
    if not fresh and dt <= 2 * unit:
        _follow_flow(state, flow, delta, dt)
    state.still = 0.0
    prior.add(speed / (usage.raw_total or 1))
    state.moves += 1
    state.rate = speed if state.moves == 1 else state.rate + _RATE_WEIGHT * (speed - state.rate)
    # The interval may span pauses: count the online share expected of an interval that
    # long (all of a short one, the fleet's duty cycle of a long one).
    stop, resume = prior.stop_rate(unit), prior.resume_rate(unit)
    duty = resume / (stop + resume)
    state.peak = max(state.peak, speed / (duty + (1.0 - duty) * math.exp(-stop * dt)))
    state.top = max(state.top, speed)


def _follow_flow(state: SimState, flow: tuple[float, float, int], delta: int, dt: float) -> None:
    """Count a short moving interval (``delta`` MB in ``dt`` seconds) in ``state``'s run of
    agreeing intervals (``flow``: the run before it)."""
    # Whole MB at both ends: the data used is within one MB of ``delta``.
    low, high = max(0.0, (delta - 1) / dt), (delta + 1) / dt
    state.flowing = after_move = state.moves > 0 and state.still <= 0
    known_low, known_high = state.known
    if flow[2] and after_move and low <= flow[1] and high >= flow[0]:
        state.flow = (max(low, flow[0]), min(high, flow[1]), flow[2] + 1)
    elif after_move and known_high > 0 and low <= known_high and high >= known_low:
        # It agrees with the speed the eSIM showed before: in full flow again.
        state.flow = (max(low, known_low), min(high, known_high), FLOW_RUNS)
    else:
        state.flow = (low, high, 1)
    if state.flow[2] >= FLOW_RUNS:
        state.known = (state.flow[0], state.flow[1])


def _mark(target: float, total: int) -> int:
    """The least whole MB used whose fraction of ``total`` reaches ``target``."""
    mark = math.ceil(target * total)
    while mark > 0 and (mark - 1) / total >= target:
        mark -= 1
    return mark


def own_rate(state: SimState) -> float:
    """``state``'s own burst speed estimate, MB/s (0: never seen moving): its ``peak``, or
    ``top`` times :data:`MEASURED_MARGIN` once it has shown :data:`MEASURED_MOVES` moving
    intervals (see the module's notes on ``top``)."""
    if state.moves >= MEASURED_MOVES and state.top > 0:
        return MEASURED_MARGIN * state.top
    return state.peak


def upper_rate(state: SimState, prior: FleetPrior, unit: float) -> float | None:
    """The fastest ``state`` is assumed to use data, MB/s (``None``: nothing known yet):
    :data:`OPTIMISM` times the larger of its own peak and the fleet's fast speed on its
    package, the fleet's weighing ``exp(-still / horizon) / (1 + moves)``."""
    fleet = prior.speed
    total = state.usage.raw_total if state.usage is not None else None
    own = own_rate(state)
    if fleet is None or not total:
        return OPTIMISM * own if state.moves else None
    fleet *= total
    idle = math.exp(-state.still / (HORIZON_UNITS * unit))
    return OPTIMISM * max(own, fleet * idle / (1 + state.moves))


def delay_until(cost: float, sure: float, hazard: float) -> float:
    """How long after the earliest moment a crossing can come a read is worth its cost.

    The crossing comes at that moment with probability ``sure``, else after an exponential
    time of rate ``hazard`` (per second). A read ``y`` seconds after that moment removes an
    expected delay of ``sure * y + (1 - sure) * (y - (1 - exp(-hazard * y)) / hazard)``
    (``U(y)`` of Olston and Pandey; ``hazard * y**2 / 2`` while small: the square-root law);
    this returns the ``y`` where that reaches ``cost`` (``inf``: never).
    """
    if cost <= 0:
        return 0.0
    if hazard <= 0 or not math.isfinite(hazard):
        if not math.isfinite(hazard):
            return cost
        return cost / sure if sure > 0 else _NEVER
    late = 1.0 - sure

    def removed(y: float) -> float:
        return y - late * (1.0 - math.exp(-hazard * y)) / hazard

    # U is convex and increasing, so Newton's method converges from any point right of the
    # root: the closest of a few upper bounds (the mass at the earliest moment alone, twice
    # the square-root law's answer, the exponential's mean past the cost).
    y = cost + late / hazard
    for bound in (cost / sure if sure > 0 else _NEVER, 2.0 * math.sqrt(2.0 * cost / hazard)):
        if bound < y and removed(bound) >= cost:
            y = bound
    for _ in range(16):
        slope = sure + late * (1.0 - math.exp(-hazard * y))
        if slope <= 0:
            break
        step = (removed(y) - cost) / slope
        y -= step
        if step <= 1e-4 * y:
            break
    return max(0.0, y)


def _latest_crossing(state: SimState, usage: Usage, target: float, unit: float) -> float | None:
    """How long after its last reading an eSIM online then crosses ``target`` at the latest
    (at the lower bound of its speed), if its session lasts and its speed is known (``None``:
    not known well enough): from its current run of agreeing short moving intervals (two or
    more, or one after a moving interval for a crossing at most :data:`FLOW_UNITS` away),
    else ``known``, else ``top`` after :data:`MEASURED_MOVES` moving intervals."""
    low, high, runs = state.flow
    if runs < FLOW_RUNS:
        if state.known[0] > 0:
            (low, high), runs = state.known, FLOW_RUNS
        elif state.moves >= MEASURED_MOVES and state.top > 0:
            low, high, runs = state.top, MEASURED_MARGIN * state.top, FLOW_RUNS
    if low <= 0:
        return None
    gap = _mark(target, usage.raw_total or 0) - _used(usage)
    latest = gap / low
    # The reading is whole MB: the crossing is between ``(gap - 1) / high`` and ``latest``.
    if latest - (gap - 1) / high > TIMED_UNITS * unit:
        return None  # too wide a window to aim one read at its end
    if runs >= FLOW_RUNS or (state.flowing and latest <= FLOW_UNITS * unit):
        return max(0.0, latest)
    return None


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
    ``eligible_at`` (the rule is in the module's notes); updates its ``share`` and ``root``
    (the caller updates the budget's sums)."""
    usage = state.usage
    unit = timing.unit
    state.share = state.root = 0.0
    state.timed = False
    if state.missing:
        return _NEVER
    if usage is None:
        return max(state.eligible_at, state.due)
    status = usage.status
    if status is UsageStatus.RECYCLED:
        return _NEVER
    period = budget.period(unit)
    cost = budget.threshold(unit)
    target = next_target(usage, state.fired, thresholds)
    total = usage.raw_total or 0
    speed = upper_rate(state, prior, unit)
    if not state.moves:
        # Not seen moving: the fleet's fast speed (in ``speed``, less and less the longer it
        # is seen idle), which only some eSIMs reach.
        cost /= UNKNOWN_WEIGHT
    if status is UsageStatus.ACTIVE and target is not None:
        # Draining: the crossing comes once ``ahead`` seconds online have used the data left;
        # online now (it moved in its last interval), it comes then unless the session ends
        # first; each pause on the way adds an exponential wait for the next session.
        gap = max(0.0, target * total - _used(usage))
        ahead = gap / speed if speed else 0.0  # no speed known yet: it could be any
        stop = prior.stop_rate(unit)
        online = state.moves > 0 and state.still <= 0
        sure = math.exp(-stop * ahead) if online else 0.0
        hazard = prior.resume_rate(unit) / (1.0 + stop * ahead)
        interval = ahead + delay_until(cost, sure, hazard)
        if online:
            latest = _latest_crossing(state, usage, target, unit)
            if latest is not None:
                # Its speed is known: the crossing comes by ``latest`` if the session lasts.
                # A read before it would push the next one a whole unit on: read then.
                interval = latest
                state.timed = True
        cap = timing.cap(CAP_ACTIVE, period)
        if not state.moves:
            cap = max(cap, IDLE_SHARE * state.still)
        interval = min(max(interval, unit), cap)
    elif not is_limited(usage):
        # Unlimited: no threshold to cross, only status changes (and its expiry, below).
        interval = timing.cap(CAP_OTHER, period)
    else:
        # Waiting for an installation or a top-up, a random event; a crossing the user cares
        # about follows once the user has used the first threshold of the new package.
        age = now - state.since
        if status is UsageStatus.ACTIVE:
            rate = prior.topups.rate(0.0, unit)  # past its last threshold: finishing soon
        elif status in _SETTLED:
            rate = prior.topups.rate(age, unit)
        else:
            rate = prior.installs.rate(age, unit)  # NOT_ACTIVE, or a status not documented
        # Its own speed carries over to the new package, and the fleet's fast speed, with the
        # chance it reaches it (less, the more the eSIM has shown of its own), however long
        # it has waited: read for whichever calls first.
        state.root = math.sqrt(rate)
        cost = budget.threshold(unit)
        first = thresholds[0] * total if thresholds else 0.0
        interval = _NEVER
        fleet = OPTIMISM * prior.speed * total if prior.speed is not None else math.inf
        for fast, chance in (
            (OPTIMISM * own_rate(state), 1.0),
            (fleet, UNKNOWN_WEIGHT / (1 + state.moves)),
            (0.0, STATUS_WEIGHT),  # the event itself, reported as a status change
        ):
            ahead = first / fast if fast > 0 else 0.0 if chance == STATUS_WEIGHT else _NEVER
            interval = min(interval, ahead + delay_until(cost / chance, 0.0, rate))
        interval = min(max(interval, unit), timing.cap(CAP_OTHER, period))
    state.share = 1.0 / interval
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

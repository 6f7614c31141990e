"""Client-side rate limits: "at most ``count`` requests in ANY window of ``period`` seconds".

The providers throttle with Laravel's fixed windows, but no algorithm is published, so the
guarantee kept here is the strictest reading: no window of length ``period`` (placed anywhere,
start-up included) ever holds more than ``count`` requests as they go out. A safety margin
(default 2 % of the period) absorbs network jitter between our clock and the server's.

One limiter, :class:`EndpointLimiter`, keeps the queue: two priority lanes, one dispatcher,
cancellation, close, per-key cool-downs and the rules charging a 429. The windows live in a
:class:`~esim_async.backends.base.WindowStore` (in this process's memory, or in Redis to share
them across processes), which answers one question atomically: may one more request go now (it
is then reserved), and if not, how long until it may. A reservation counts in every window
until it is confirmed with its real send time (:meth:`Slot.mark`) or given back
(:meth:`Slot.release`), so a request held up by a token or a slow connection can never make a
later window look emptier than the server will see it.

The margin follows the path. The provider counts arrivals while the limiter paces sends, and
the delay between the two varies from request to request. Each limiter measures the time from
send to response headers of its own requests (:meth:`EndpointLimiter.observe`, called by the
transport) and keeps a decaying estimate of its spread (:class:`PathSpread`: the slowest minus
the fastest of the recent samples). Every window it checks spans ``period * (1 + margin)
+ PATH_SPREAD_FACTOR * spread``; on a clean path the spread is next to nothing and the margin
stays at its floor.

A 429 is charged to the limit that tripped it. When that is the shared limit (our window held
nearly its count), every caller cools down until ``Retry-After`` has passed, then the rate runs
at a reduced factor with minimum spacing and recovers additively (AIMD, one decrease per
cool-down); a count learned from ``X-RateLimit-Limit`` recovers the same way. A 429 that
arrives while our own shared window was full and the path's delay varies is the path's doing
(arrivals bunched beyond the margin): it cools down as usual but widens the margin instead of
lowering the rate (:meth:`PathSpread.widen`), at most once per :data:`PATH_WIDEN_GUARD`
seconds; any other 429 in that time lowers the rate as before. These rules are
pure functions of a :class:`LimitState` record the store keeps (:func:`penalized`,
:func:`factor`, :func:`effective_count`). Otherwise only the key (one eSIM) cools down. A
cool-down longer than callers are willing to wait is never slept through: a call that would
wait for it raises :class:`~esim_async.errors.RateLimitedError` at once.

Nothing here knows about HTTP; the transport calls :meth:`EndpointLimiter.acquire` once per
attempt and :meth:`EndpointLimiter.penalize` on a 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _constants as C
from .clock import Clock
from .errors import RateLimitedError, TransportError

if TYPE_CHECKING:
    from .backends.base import WindowStore

__all__ = [
    "PATH_SPREAD_FACTOR",
    "BackendUnavailableError",
    "EndpointLimiter",
    "LimitState",
    "LimiterClosedError",
    "LimiterState",
    "PathSpread",
    "Priority",
    "QueueTicket",
    "Rate",
    "Reply",
    "Slot",
    "Window",
    "cooldown_refusal",
    "effective_count",
    "factor",
    "penalized",
]

logger = logging.getLogger("esim_async")


class LimiterClosedError(TransportError):
    """The client (and so its limiters) was closed while a request waited for budget."""


class BackendUnavailableError(TransportError):
    """The shared backend (Redis) could not be reached within the configured wait."""


@dataclass(frozen=True, slots=True)
class Rate:
    """A limit of ``count`` requests in any window of ``period`` seconds.

    >>> Rate(5, 1.0).per_second
    5.0
    """

    count: int
    period: float

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"Rate.count must be a positive int, got {self.count!r}")
        period = self.period
        if not (isinstance(period, int | float) and math.isfinite(period) and period > 0):
            raise ValueError(f"Rate.period must be a finite number > 0, got {self.period!r}")

    @property
    def per_second(self) -> float:
        """Average requests per second this rate allows."""
        return self.count / self.period


class Priority(enum.IntEnum):
    """Which lane a request waits in: interactive calls go ahead of a sweep's queued requests."""

    INTERACTIVE = 0
    BULK = 1


class QueueTicket:
    """The priority of one logical request while it waits for budget; it can be raised.

    Bound to the running task with :meth:`bind`, it applies to every limiter wait of that task:
    a wait takes the better of its own priority and the ticket's, and :meth:`raise_to` moves a
    wait already queued to the better lane (behind the waiters already there). Single flight
    uses it when an interactive caller joins a sweep's queued request.
    """

    __slots__ = ("_waits", "priority")

    def __init__(self, priority: Priority = Priority.INTERACTIVE) -> None:
        self.priority = priority
        self._waits: dict[asyncio.Future[Any], EndpointLimiter] = {}

    def raise_to(self, priority: Priority) -> None:
        """Give the request ``priority`` if it is better than its own (a ticket never drops)."""
        if priority >= self.priority:
            return
        self.priority = priority
        for wait, limiter in list(self._waits.items()):
            limiter.promote(wait, priority)

    def follow(self, wait: asyncio.Future[Any], limiter: EndpointLimiter) -> None:
        """Promote ``wait``, queued in ``limiter``, whenever raised (until :meth:`forget`)."""
        self._waits[wait] = limiter

    def forget(self, wait: asyncio.Future[Any]) -> None:
        """``wait`` is over."""
        self._waits.pop(wait, None)

    def bind(self) -> _Bound:
        """A context manager applying this ticket to the current task's limiter waits."""
        return _Bound(self)


_TICKET: contextvars.ContextVar[QueueTicket | None] = contextvars.ContextVar(
    "esim_async_queue_ticket", default=None
)


class _Bound:
    """:meth:`QueueTicket.bind` (a class, not a generator: it runs on every usage request)."""

    __slots__ = ("_ticket", "_token")

    def __init__(self, ticket: QueueTicket) -> None:
        self._ticket = ticket

    def __enter__(self) -> None:
        self._token = _TICKET.set(self._ticket)

    def __exit__(self, *exc: object) -> None:
        _TICKET.reset(self._token)


@dataclass(frozen=True, slots=True)
class LimiterState:
    """A snapshot of one endpoint limiter (see ``client.rate_limit_state()``)."""

    name: str
    configured: Rate | None
    per_key: Rate | None
    effective_per_second: float | None
    cooldown_until: float
    cooldown_remaining: float
    waiters: int
    live_keys: int
    last_headers: dict[str, str] = field(default_factory=dict)
    #: Keys (eSIMs) cooling down after a 429 charged to them alone.
    key_cooldowns: int = 0
    #: The count in force while one learned from ``X-RateLimit-Limit`` recovers (else None) ...
    ceiling: int | None = None
    #: ... and the seconds until the configured count is back.
    ceiling_recovers_in: float = 0.0
    #: Times the limiter found its store's state lost and held one period (quarantine).
    quarantines: int = 0
    #: The margin in force, as a fraction of the period (of the shared limit, else the key's):
    #: the configured ``rate_margin`` plus the share the path's delay spread adds.
    margin: float = 0.0
    #: The spread of this process's send -> response-headers times in force, in seconds
    #: (:class:`PathSpread`; 0.0 until two requests were answered).
    path_spread: float = 0.0


# ---------------------------------------------------------------------------- the AIMD rules


@dataclass(frozen=True, slots=True)
class LimitState:
    """What 429s left behind on one shared limit, in its store's time; ``version`` grows with
    every change (stores update it by compare-and-set).

    Until ``cooldown_until`` nothing is admitted; until ``refuse_until`` callers are refused
    instead of waiting. The rate runs at ``factor0`` of the configured one from the end of the
    cool-down and recovers from there (:func:`factor`); no further decrease happens before
    ``decrease_guard``. ``ceiling`` (0: none) is a count learned from ``X-RateLimit-Limit``,
    recovering from ``ceiling_from`` on (:func:`effective_count`).
    """

    version: int = 0
    cooldown_until: float = -math.inf
    refuse_until: float = -math.inf
    factor0: float = 1.0
    decrease_guard: float = -math.inf
    ceiling: int = 0
    ceiling_from: float = -math.inf

    def shifted(self, dt: float) -> LimitState:
        """The same state with every time moved by ``dt`` (into another clock's frame)."""
        return replace(
            self,
            cooldown_until=self.cooldown_until + dt,
            refuse_until=self.refuse_until + dt,
            decrease_guard=self.decrease_guard + dt,
            ceiling_from=self.ceiling_from + dt,
        )


def factor(state: LimitState, now: float, period: float) -> float:
    """Fraction of the configured rate in force at ``now`` (1.0: full rate): ``factor0`` through
    the cool-down, then ``RATE_RECOVERY_STEP`` more per ``period``."""
    f0 = state.factor0
    if f0 >= 1.0:
        return 1.0
    return min(1.0, f0 + C.RATE_RECOVERY_STEP * max(0.0, now - state.cooldown_until) / period)


def effective_count(state: LimitState, now: float, rate: Rate) -> int:
    """The count in force at ``now``: the configured one, or a lower one learned from a 429's
    ``X-RateLimit-Limit``, which wins back ``RATE_RECOVERY_STEP`` of the configured count per
    period once its cool-down is over (it never stays lowered for good)."""
    base, count = state.ceiling, rate.count
    if not base or base >= count:
        return count
    since = max(0.0, now - state.ceiling_from)
    return min(count, base + int(count * C.RATE_RECOVERY_STEP * since / rate.period))


def ceiling_recovers_in(state: LimitState, now: float, rate: Rate) -> float:
    """Seconds from ``now`` until the configured count is in force again."""
    base, count = state.ceiling, rate.count
    if not base or base >= count:
        return 0.0
    end = state.ceiling_from + (count - base) * rate.period / (count * C.RATE_RECOVERY_STEP)
    return max(0.0, end - now)


def penalized(
    state: LimitState,
    now: float,
    rate: Rate | None,
    retry_after: float | None,
    limit: int | None = None,
    *,
    cap: float = math.inf,
    decrease: bool = True,
) -> LimitState:
    """The state after a 429 seen at ``now`` and charged to the shared limit ``rate``.

    Cools down for ``retry_after`` seconds (one period when unknown), lowers the rate once per
    cool-down (unless not ``decrease``: the 429 was the path's doing), and takes ``limit``
    (``X-RateLimit-Limit``) as a ceiling on the count that recovers after the cool-down. A
    cool-down longer than ``cap`` (what callers wait at most) refuses callers until it ends.
    """
    period = rate.period if rate is not None else 1.0
    wait = retry_after if retry_after is not None else period * C.DEFAULT_COOLDOWN_PERIODS
    until = max(state.cooldown_until, now + wait)
    new = replace(state, version=state.version + 1, cooldown_until=until)
    if wait > cap:
        new = replace(new, refuse_until=max(state.refuse_until, until))
    if rate is None:
        return new
    if limit is not None and 1 <= limit < effective_count(state, now, rate):
        new = replace(new, ceiling=limit, ceiling_from=until)
    if decrease and now >= state.decrease_guard:
        f = max(C.RATE_MIN_FACTOR, factor(state, now, period) * C.RATE_DECREASE_FACTOR)
        new = replace(new, factor0=f, decrease_guard=until)
    return new


# ---------------------------------------------------------------------------- the path

#: Share of the measured spread of send -> response-headers times added to every window's span.
#: That spread holds both legs of the trip (and the server's work after its limiter), so it can
#: only overstate how far arrivals bunch; one whole spread is what a path whose variation lies
#: on the way in needs (see ``benchmarks/bench_path.py --spread-factor`` for the trade-off).
PATH_SPREAD_FACTOR = 1.0
#: The spread is this quantile of the recent samples minus their minimum (1.0: the slowest;
#: a lower one never sees a tail rarer than ``1 - PATH_QUANTILE``, such as a few answers
#: held up by a TCP retransmission, and each of those bunches arrivals beyond the margin) ...
PATH_QUANTILE = 1.0
#: ... over at most this many samples ...
PATH_SAMPLES = 64
#: ... none older than this many seconds.
PATH_HORIZON = 60.0
#: With fewer samples than this, the spread is scaled up by ``(n + 1) / (n - 1)`` (n samples
#: of a uniform delay span that share of its width, on average).
PATH_FEW_SAMPLES = 16
#: The path widens a window by at most this fraction of its period.
PATH_MAX_MARGIN = 0.5
#: A spread below this many seconds is timer noise: a 429 then is not the path's doing.
PATH_NOISE = 0.001
#: After a 429 put down to the path widened the margin, no other 429 is, for this many seconds.
PATH_WIDEN_GUARD = 60.0
#: A 429 put down to the path raises the spread in force by this factor ...
PATH_WIDEN_FACTOR = 1.25
#: ... and the extra halves every this many seconds.
PATH_WIDEN_HALF_LIFE = 30.0


class PathSpread:
    """A decaying estimate of how much one endpoint's send -> response-headers time varies.

    The spread is the :data:`PATH_QUANTILE` quantile minus the minimum of the recent samples
    (see the ``PATH_*`` constants), so a rare slow answer widens the margin for as long as it is
    among them, and the estimate falls back as old samples leave; :meth:`widen` adds a decaying
    extra. Fixed memory; the spread is recomputed only when the samples changed.

    >>> from esim_async.clock import ManualClock
    >>> spread = PathSpread(ManualClock())
    >>> for rtt in (0.05, 0.05, 0.05):
    ...     spread.observe(0.0, rtt)
    >>> spread.spread()
    0.0
    """

    __slots__ = ("_clock", "_extra", "_extra_at", "_samples", "_value")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        #: (when answered, seconds from send to headers), oldest first.
        self._samples: deque[tuple[float, float]] = deque(maxlen=PATH_SAMPLES)
        self._value: float | None = 0.0
        self._extra = 0.0
        self._extra_at = -math.inf

    def observe(self, sent: float, answered: float) -> None:
        """A request sent at ``sent`` had its response headers at ``answered`` (clock times)."""
        rtt = answered - sent
        if rtt >= 0.0 and math.isfinite(rtt):
            self._samples.append((answered, rtt))
            self._value = None

    def __len__(self) -> int:
        """Samples held."""
        return len(self._samples)

    def spread(self) -> float:
        """The spread in force, in seconds (0.0 with fewer than two samples)."""
        samples, edge = self._samples, self._clock.now() - PATH_HORIZON
        if samples and samples[0][0] < edge:
            while samples and samples[0][0] < edge:
                samples.popleft()
            self._value = None
        value = self._value
        if value is None:
            value = self._value = self._measure()
        extra = self._extra
        if extra:
            age = self._clock.now() - self._extra_at
            return value + extra * math.exp(-math.log(2.0) * age / PATH_WIDEN_HALF_LIFE)
        return value

    def _measure(self) -> float:
        n = len(self._samples)
        if n < 2:
            return 0.0
        times = [rtt for _, rtt in self._samples]
        if PATH_QUANTILE >= 1.0:  # the slowest: no sort needed
            spread = max(times) - min(times)
        else:
            times.sort()
            spread = times[min(n - 1, math.ceil(PATH_QUANTILE * n) - 1)] - times[0]
        if n < PATH_FEW_SAMPLES:
            spread *= (n + 1) / (n - 1)
        return spread

    def widen(self) -> float:
        """Raise the spread in force by :data:`PATH_WIDEN_FACTOR` (a 429 showed arrivals
        bunched beyond it); the extra decays with a half-life of :data:`PATH_WIDEN_HALF_LIFE`.
        Returns the new spread."""
        spread = self.spread()
        measured = self._value or 0.0  # (measured by spread() just now)
        self._extra = PATH_WIDEN_FACTOR * spread - measured
        self._extra_at = self._clock.now()
        return PATH_WIDEN_FACTOR * spread

    def __repr__(self) -> str:
        return f"PathSpread(samples={len(self._samples)}, spread={self.spread():.4f})"


# ---------------------------------------------------------------------------- store messages


class Window(NamedTuple):
    """One window a reservation must fit: ``limit`` sends in any ``span`` seconds, and at least
    ``spacing`` seconds after the previous reservation (0: no spacing)."""

    limit: int
    span: float
    spacing: float = 0.0


class Reply(NamedTuple):
    """A store's answer to a reservation."""

    #: The store's clock when it answered.
    now: float
    #: 0.0: reserved; else seconds until one more send may fit.
    wait: float = 0.0
    #: The key's own window is what holds it back (not the shared one).
    key_bound: bool = False
    #: The current state, when the version asked with is not it (nothing was reserved).
    state: LimitState | None = None
    #: The reservation, for :meth:`WindowStore.confirm` and :meth:`WindowStore.release`.
    token: Any = None
    #: The store had lost its state (a restart): it now holds every caller for one period.
    lost: bool = False


class Slot:
    """One admission. Its time is the admission time until :meth:`mark` stamps the real send
    time (the transport does so when the request goes out on its connection). A request of
    which nothing went out gives its admission back with :meth:`release`. ``sent`` is True once
    nothing is left to settle."""

    __slots__ = ("_key", "_store", "_token", "sent", "time")

    def __init__(
        self,
        time: float,
        store: WindowStore | None = None,
        token: Any = None,
        key: str | None = None,
    ) -> None:
        self.time = time
        self.sent = store is None
        self._store = store
        self._token = token
        self._key = key

    def mark(self, t: float) -> None:
        """The request went out at ``t`` (or may have: then ``t`` is now, never too early)."""
        if self.sent:
            return
        self.sent = True
        if t > self.time:
            self.time = t
        assert self._store is not None
        self._store.confirm(self._token, self._key, self.time)

    def release(self) -> None:
        """Nothing of the request went out and nothing will: its budget is given back."""
        if self.sent:
            return
        self.sent = True
        assert self._store is not None
        self._store.release(self._token, self._key)


#: The slot of a request no window counts (only cool-downs apply).
SENT = Slot(0.0)


def _divided(count: int, span: float, share: int) -> tuple[int, float]:
    """``count`` per ``span`` divided among ``share`` processes, rounded so the sum never
    exceeds it."""
    if share <= 1:
        return count, span
    if count >= share:
        return count // share, span
    return 1, span * math.ceil(share / count)


_Entry = tuple["asyncio.Future[Slot | float]", str | None]


class EndpointLimiter:
    """The limits of one endpoint: a shared limit (e.g. per company) and a per-key limit, kept
    in ``store`` (in memory by default).

    ``acquire(key)`` returns a :class:`Slot` once both windows have room: the fast path asks the
    store at once; otherwise the caller queues in its priority lane (interactive first, FIFO
    within a lane) and the dispatcher asks for the head of the queue, sleeping until the store
    says room comes. A caller held back by its own key's window steps out of the queue for that
    wait. A cancelled caller gives its place (or its slot) back; closing fails every waiter.

    With ``stamp_sends`` each slot counts from the moment it is marked (the transport marks it
    when the request goes out) and must be marked or released; otherwise from its admission.

    ``spread_factor`` (default :data:`PATH_SPREAD_FACTOR`) scales the path's spread a window
    adds (see the module docs; at most :data:`PATH_MAX_MARGIN` of the period). The spread is
    this process's own, also over a shared store: each process widens the windows it asks for
    by the path it sees.

    ``fail_open=N`` (a shared store only): when the store cannot be reached the limiter keeps
    going on a local in-memory store at ``budget / N``, tries the shared store again once per
    shared period, and once it is back waits one shared period before using it. Without it
    (fail closed) every queued caller gets the store's :class:`BackendUnavailableError`
    together.
    """

    def __init__(
        self,
        name: str,
        *,
        shared: Rate | None,
        per_key: Rate | None,
        clock: Clock,
        margin: float = C.DEFAULT_RATE_MARGIN,
        stamp_sends: bool = False,
        store: WindowStore | None = None,
        fail_open: int | None = None,
        spread_factor: float | None = None,
        down_signal: Callable[[], asyncio.Future[None]] | None = None,
    ) -> None:
        if not (0.0 <= margin < 1.0):
            raise ValueError("margin must be in [0, 1)")
        if spread_factor is None:
            spread_factor = PATH_SPREAD_FACTOR
        if not (math.isfinite(spread_factor) and spread_factor >= 0.0):
            raise ValueError("spread_factor must be a finite number >= 0")
        if store is None:
            from .backends.memory import MemoryStore

            store = MemoryStore(clock)
        self.name = name
        self.rate = shared
        self.per_key = per_key
        self._clock = clock
        self._span = shared.period * (1.0 + margin) if shared is not None else 0.0
        self._key_span = per_key.period * (1.0 + margin) if per_key is not None else 0.0
        self._margin = margin
        self._spread_factor = spread_factor
        self._path = PathSpread(clock)
        #: Until then (this clock), 429s belong to the bunching the path was blamed for.
        self._absorb_until = -math.inf
        #: Until then (this clock), no 429 is put down to the path again.
        self._widen_guard = -math.inf
        self._stamp = stamp_sends
        self._primary: WindowStore = store
        self._store: WindowStore = store
        self._fail_open = fail_open
        #: A future that completes once the shared store is known to be unreachable (waits
        #: for the windows end then, not when the windows would have had room).
        self._down_signal = down_signal
        #: The share of the budget in use (``fail_open`` on the local fallback, else 1).
        self._share = 1
        self._state = LimitState()
        #: The store's clock minus ours (both tick alike; a reply resets it).
        self._offset = 0.0
        self._probe_at = math.inf
        self._hold_until = -math.inf
        self._lanes: tuple[deque[_Entry], deque[_Entry]] = (deque(), deque())
        self._dispatcher: asyncio.Task[None] | None = None
        self._closed = False
        #: key -> (end of its own cool-down, whether callers are refused rather than wait).
        self._key_holds: dict[str, tuple[float, bool]] = {}
        #: Queued callers that wait only until a deadline (this clock) -> that deadline.
        self._deadlines: dict[asyncio.Future[Any], float] = {}
        self._last_headers: Mapping[str, str] = {}
        #: Total seconds callers spent waiting here (for ``client.stats``).
        self.waited = 0.0
        #: Times the store's state was found lost (each held every caller one period).
        self.quarantines = 0

    # ------------------------------------------------------------------------------ acquire

    async def acquire(
        self,
        key: str | None = None,
        priority: Priority = Priority.INTERACTIVE,
        *,
        max_wait: float = math.inf,
    ) -> Slot:
        """Wait until one request (for ``key``) may be sent, and count it. Mark the returned
        slot when the request goes out, or release it if nothing goes out (it is released for
        you if you are cancelled first).

        ``max_wait`` bounds the waits this caller would sleep itself (its key's window or
        cool-down, or the shared window when nobody queues before it): a longer one raises
        :class:`RateLimitedError` at once instead.

        Raises:
            RateLimitedError: the endpoint or this key cools down for longer than callers
                wait (see :meth:`penalize`), or a wait is longer than ``max_wait``;
                ``retry_after`` says for how long still.
            LimiterClosedError: the limiter was closed.
            BackendUnavailableError: the store could not be reached (fail closed).
        """
        if self.rate is None and (key is None or self.per_key is None):
            admitted = self.admit_now(key)
            if admitted is not None:
                return admitted
        clock = self._clock
        start = clock.now()
        while True:
            if self._closed:
                raise LimiterClosedError(f"limiter {self.name!r} is closed")
            wait = self._held(key, clock.now())
            if wait <= 0.0:
                got: Slot | tuple[float, bool] | None = None
                if not self._lanes[0] and not self._lanes[1]:
                    got = await self._try(key)
                    if not isinstance(got, Slot) and not got[1]:
                        if got[0] > max_wait - (clock.now() - start):
                            raise cooldown_refusal(self.name, got[0])
                        got = None  # the shared window is full: queue for it
                if got is None:
                    got = await self._queue(key, priority, start + max_wait)
                if isinstance(got, Slot):
                    break
                wait = got[0]  # the key's own window: wait outside the queue
            if wait > max_wait - (clock.now() - start):
                raise cooldown_refusal(self.name, wait, key_limited=key is not None)
            await self._pause(wait)
        waited = clock.now() - start
        if waited > 0.0:
            self.waited += waited
        return got

    def admit_now(self, key: str | None = None) -> Slot | None:
        """The slot of a request for ``key`` that goes at once, without waiting: no window
        counts it (its limits are lifted) and no cool-down, hold or queue is in its way.
        ``None`` otherwise: :meth:`acquire` it (which handles all of them)."""
        if self.rate is not None or (key is not None and self.per_key is not None):
            return None
        start = self._clock.now()
        state = self._state
        t = start + self._offset
        if (
            state.refuse_until <= t
            and state.cooldown_until <= t
            and self._hold_until <= start
            and not self._key_holds
            and not self._closed
            and self._store is self._primary
            and not self._lanes[0]
            and not self._lanes[1]
        ):
            return SENT
        return None

    def _held(self, key: str | None, now: float) -> float:
        """Seconds this process holds a request for ``key`` back for the key's own cool-down.
        Raises RateLimitedError while a cool-down lasts that callers do not wait for."""
        left = self._state.refuse_until - (now + self._offset)
        if left > 0.0:
            raise cooldown_refusal(self.name, left)
        holds = self._key_holds
        if key is not None and holds:
            hold = holds.get(key)
            if hold is not None:
                until, refused = hold
                if until > now:
                    if refused:
                        raise cooldown_refusal(self.name, until - now, key_limited=True)
                    return until - now
                del holds[key]
        return 0.0

    def observe(self, sent: float, answered: float) -> None:
        """A request this limiter admitted went out at ``sent`` and its response headers came
        at ``answered`` (this limiter's clock): one sample of the path's delay."""
        self._path.observe(sent, answered)

    def _widening(self, period: float, spread: float) -> float:
        """Seconds a path of ``spread`` adds to a window of ``period``."""
        extra = self._spread_factor * spread
        cap = PATH_MAX_MARGIN * period
        return extra if extra < cap else cap

    def _windows(self, key: str | None, now: float) -> tuple[Window | None, Window | None]:
        """The windows a request for ``key`` must fit at ``now`` (the store's time)."""
        shared = None
        rate = self.rate
        spread = self._path.spread()
        if rate is not None:
            state = self._state
            count, span = _divided(
                effective_count(state, now, rate),
                self._span + self._widening(rate.period, spread),
                self._share,
            )
            f = factor(state, now, rate.period)
            shared = Window(count, span, span / (count * f) if f < 1.0 else 0.0)
        per_key = None
        if key is not None and self.per_key is not None:
            span = self._key_span + self._widening(self.per_key.period, spread)
            per_key = Window(*_divided(self.per_key.count, span, self._share))
        return shared, per_key

    async def _try(self, key: str | None) -> Slot | tuple[float, bool]:
        """Ask the store for one send for ``key`` now: the slot, or (seconds to wait, whether
        the key's own window is what holds it back)."""
        clock = self._clock
        while True:
            store = self._store
            if store is not self._primary and clock.now() >= self._probe_at:
                await self._probe()
                continue
            hold = self._hold_until - clock.now()
            if hold > 0.0:
                return hold, False
            state = self._state
            shared, per_key = self._windows(key, clock.now() + self._offset)
            if shared is None and per_key is None:
                wait = state.cooldown_until - (clock.now() + self._offset)
                return (wait, False) if wait > 0.0 else SENT
            try:
                reply = await store.reserve(
                    shared, key, per_key, not_before=state.cooldown_until, version=state.version
                )
            except BackendUnavailableError as exc:
                if self._fail_open is None or store is not self._primary:
                    raise
                self._fall_back(exc)
                continue
            now = clock.now()
            self._offset = reply.now - now
            if reply.state is not None:
                if reply.lost:
                    self.quarantines += 1
                    logger.warning("limiter %s: its store lost its state; holding", self.name)
                self._state = reply.state
                continue
            if reply.wait > 0.0:
                return reply.wait, reply.key_bound
            slot = Slot(now, store, reply.token, key if per_key is not None else None)
            if not self._stamp:
                slot.mark(now)
            return slot

    async def _queue(
        self, key: str | None, priority: Priority, deadline: float = math.inf
    ) -> Slot | tuple[float, bool]:
        """Wait in the lane of ``priority`` (or of the task's ticket, if better) for the
        dispatcher: a slot, or (seconds, True) to wait for the key's own window. A caller the
        queue cannot serve by ``deadline`` (this clock) is refused with RateLimitedError."""
        ticket = _TICKET.get()
        if ticket is not None and ticket.priority < priority:
            priority = ticket.priority
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Slot | float] = loop.create_future()
        self._lanes[priority].append((fut, key))
        if deadline < math.inf:
            self._deadlines[fut] = deadline
        if ticket is not None and priority > Priority.INTERACTIVE:
            ticket.follow(fut, self)  # it may be promoted while it waits
        if self._dispatcher is None:
            self._dispatcher = loop.create_task(
                self._dispatch(), name=f"esim_async limiter {self.name}"
            )
        try:
            got = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                admitted = fut.result()
                if isinstance(admitted, Slot):
                    admitted.release()  # admitted, but nothing will be sent
            raise
        finally:
            self._deadlines.pop(fut, None)
            if ticket is not None:
                ticket.forget(fut)
        return got if isinstance(got, Slot) else (got, True)

    async def _dispatch(self) -> None:
        try:
            while (head := self._head()) is not None:
                fut, key = head
                try:
                    got = await self._try(key)
                except Exception as exc:  # the store failed: fail closed, every caller at once
                    self._fail_waiters(lambda exc=exc: exc)  # type: ignore[misc]
                    return
                if not isinstance(got, Slot) and not got[1]:
                    self._refuse_late(got[0])
                    if not fut.done():
                        await self._pause(got[0])
                    continue
                self._remove(head)
                if fut.done():  # cancelled while the store answered
                    if isinstance(got, Slot):
                        got.release()
                else:
                    fut.set_result(got if isinstance(got, Slot) else got[0])
        finally:
            self._dispatcher = None

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or until the shared store is known to be unreachable: the next
        ask then fails (fail closed) or falls back at once, within ``wait`` of the failure."""
        signal = self._down_signal
        if signal is None or self._store is not self._primary:
            await self._clock.sleep(seconds)
            return
        down = signal()
        if down.done():
            return
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait((sleeper, down), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()

    def _refuse_late(self, wait: float) -> None:
        """Refuse every queued caller whose deadline comes before the queue moves again, in
        ``wait`` seconds: none of them could be served in time."""
        if not self._deadlines:
            return
        until = self._clock.now() + wait
        for fut, deadline in list(self._deadlines.items()):
            if deadline < until and not fut.done():
                fut.set_exception(cooldown_refusal(self.name, wait))

    def _head(self) -> _Entry | None:
        for lane in self._lanes:
            while lane and lane[0][0].done():
                lane.popleft()
            if lane:
                return lane[0]
        return None

    def _remove(self, entry: _Entry) -> None:
        for lane in self._lanes:  # (not at the head if promoted while the store answered)
            if entry in lane:
                lane.remove(entry)
                return

    def promote(self, wait: asyncio.Future[Any], priority: Priority) -> None:
        """Move a queued ``wait`` to the lane of ``priority`` (a better one), behind the
        waiters already there (see :class:`QueueTicket`)."""
        lanes = self._lanes
        for lane in lanes[priority + 1 :]:
            for entry in lane:
                if entry[0] is wait:
                    lane.remove(entry)
                    lanes[priority].append(entry)
                    return

    def _fail_waiters(self, error: Callable[[], BaseException]) -> None:
        for lane in self._lanes:
            while lane:
                fut, _ = lane.popleft()
                if not fut.done():
                    fut.set_exception(error())

    # ------------------------------------------------------------------------------ fail open

    def _fall_back(self, exc: Exception) -> None:
        from .backends.memory import MemoryStore

        share = self._fail_open or 1
        logger.warning(
            "limiter %s: store unavailable (%s); local limits at 1/%d of the budget",
            self.name,
            exc,
            share,
        )
        state = self._state.shifted(-self._offset)
        self._store = MemoryStore(self._clock, state)
        self._state, self._offset, self._share = state, 0.0, share
        period = self._span or self._key_span
        self._probe_at = self._clock.now() + period
        # The sends the shared store counted in the last period are not in the local windows:
        # wait them out, so that the local admissions and theirs never add up in one window.
        self._hold_until = max(self._hold_until, self._clock.now() + period)

    async def _probe(self) -> None:
        """On the local fallback: go back to the shared store if it answers, after one shared
        period, so that local admissions and the shared store's never add up in one window."""
        try:
            state, now, _ = await self._primary.load(None)
        except BackendUnavailableError:
            self._probe_at = self._clock.now() + (self._span or self._key_span)
            return
        logger.warning("limiter %s: store back; shared limits again", self.name)
        self._store, self._share, self._probe_at = self._primary, 1, math.inf
        self._state, self._offset = state, now - self._clock.now()
        self._hold_until = self._clock.now() + (self._span or self._key_span)

    # ------------------------------------------------------------------------------ 429s

    async def penalize(
        self,
        retry_after: float | None,
        limit: int | None = None,
        *,
        key: str | None = None,
        cap: float = math.inf,
    ) -> None:
        """Account for a 429 (``retry_after``: its ``Retry-After``; ``limit``: its
        ``X-RateLimit-Limit``) of a request for ``key``, charged to the limit that tripped it.

        The shared limit is charged (every caller cools down, the rate drops, ``limit`` becomes
        a ceiling that recovers) when no key is given, or when the shared window held nearly
        its count and the headers do not point elsewhere: a ``Retry-After`` longer than the
        shared period, or (with a per-key limit) a ``limit`` other than the shared count.
        Otherwise only ``key`` cools down, in this process, whatever ``limit`` says (another
        process may use the same key, or its real limit is lower).

        A cool-down (``Retry-After``, or the default of one period) longer than ``cap``, the
        longest callers wait, is not waited for: calls that would wait for it raise
        :class:`RateLimitedError` at once until it ends, queued ones now.
        """
        rate = self.rate
        if key is not None and (rate is None or not self._may_be_shared(rate, retry_after, limit)):
            self._hold_key(key, retry_after, cap)
            return
        clock = self._clock
        store = self._store
        shared, _ = self._windows(None, clock.now() + self._offset)
        decrease = True
        try:
            state, now, held = await store.load(shared)
            if rate is not None:
                count = _divided(effective_count(state, now, rate), self._span, self._share)[0]
                allowed = count * factor(state, now, rate.period)
                full = held >= min(allowed, math.floor(allowed * C.SHARED_CHARGE_FILL) + 1)
                if key is not None and not full:
                    self._hold_key(key, retry_after, cap)
                    return
                decrease = not (full and self._blame_path(rate, retry_after, limit, count))
            while True:
                new = penalized(state, now, rate, retry_after, limit, cap=cap, decrease=decrease)
                done, state = await store.swap(state.version, new)
                if done:
                    break
        except BackendUnavailableError:  # at least this process backs off
            now = clock.now() + self._offset
            state = penalized(
                self._state, now, rate, retry_after, limit, cap=cap, decrease=decrease
            )
        self._state, self._offset = state, now - clock.now()
        left = state.refuse_until - now
        if left > 0.0:
            self._fail_waiters(lambda: cooldown_refusal(self.name, left))

    def _blame_path(
        self, rate: Rate, retry_after: float | None, limit: int | None, count: int
    ) -> bool:
        """Whether a 429 that came while our shared window was full is the path's doing (so
        the margin widens and the rate stays): the path's delay varies (beyond timer noise) and
        the headers name no other limit (no ``X-RateLimit-Limit`` below our count, no
        ``Retry-After`` longer than the period). One such 429 widens the margin; those that
        come within its cool-down are the same bunching; any other within
        :data:`PATH_WIDEN_GUARD` seconds is not blamed on the path."""
        now = self._clock.now()
        if limit is not None and limit < count:
            return False
        if retry_after is not None and retry_after > max(1.0, math.ceil(rate.period)):
            return False
        if now < self._absorb_until:
            return True
        spread = self._path.spread()
        if now < self._widen_guard or spread < PATH_NOISE:
            return False
        period = rate.period
        if self._widening(period, PATH_WIDEN_FACTOR * spread) <= self._widening(period, spread):
            return False  # the margin cannot grow (it is at its cap): the rate has to
        self._path.widen()
        wait = retry_after if retry_after is not None else rate.period * C.DEFAULT_COOLDOWN_PERIODS
        self._absorb_until = now + wait
        self._widen_guard = now + PATH_WIDEN_GUARD
        logger.info(
            "limiter %s: a 429 at the limit of a jittery path; margin widened to %.3g s",
            self.name,
            self._spread_factor * self._path.spread(),
        )
        return True

    def _may_be_shared(self, rate: Rate, retry_after: float | None, limit: int | None) -> bool:
        """Whether a keyed 429's headers leave the shared limit as the one it tripped: not a
        ``Retry-After`` longer than any window of the shared period asks for, nor (when the key
        has a limit of its own) an ``X-RateLimit-Limit`` other than the shared count."""
        if retry_after is not None and retry_after > max(1.0, math.ceil(rate.period)):
            return False
        return limit is None or self.per_key is None or limit == rate.count

    def _hold_key(self, key: str, retry_after: float | None, cap: float) -> None:
        now = self._clock.now()
        if retry_after is None:
            rate = self.per_key or self.rate
            retry_after = (rate.period if rate is not None else 1.0) * C.DEFAULT_COOLDOWN_PERIODS
        until, refused = now + retry_after, retry_after > cap
        holds = self._key_holds
        old = holds.pop(key, None)
        if old is not None and old[0] > now:
            until, refused = max(until, old[0]), refused or old[1]
        holds[key] = (until, refused)
        if len(holds) >= 64:
            self._prune_holds(now)

    def _prune_holds(self, now: float) -> None:
        holds = self._key_holds
        for key in [k for k, (until, _) in holds.items() if until <= now]:
            del holds[key]

    # ------------------------------------------------------------------------------ state

    def record_headers(self, headers: Mapping[str, str]) -> None:
        """Remember the last ``X-RateLimit-*`` headers seen (kept as given; filtered when
        :meth:`state` is read)."""
        self._last_headers = headers

    @property
    def last_headers(self) -> dict[str, str]:
        """The last ``X-RateLimit-*`` and ``Retry-After`` headers seen."""
        return {
            k: v
            for k, v in self._last_headers.items()
            if k.lower().startswith("x-ratelimit") or k.lower() == "retry-after"
        }

    def waiters(self) -> int:
        """Callers queued for the shared window."""
        return sum(1 for lane in self._lanes for fut, _ in lane if not fut.done())

    def state(self) -> LimiterState:
        """A snapshot for ``client.rate_limit_state()`` (times on the limiter's clock)."""
        now = self._clock.now()
        s, offset = self._state, self._offset
        rate = self.rate
        ceiling, per_second, recovers = None, None, 0.0
        spread = self._path.spread()
        period = rate.period if rate is not None else (self.per_key or Rate(1, 1.0)).period
        margin = self._margin + self._widening(period, spread) / period
        if rate is not None:
            count = effective_count(s, now + offset, rate)
            ceiling = count if count < rate.count else None
            per_second = count / rate.period * factor(s, now + offset, rate.period)
            recovers = ceiling_recovers_in(s, now + offset, rate)
        self._prune_holds(now)
        return LimiterState(
            name=self.name,
            configured=rate,
            per_key=self.per_key,
            effective_per_second=per_second,
            cooldown_until=s.cooldown_until - offset,
            cooldown_remaining=max(0.0, s.cooldown_until - offset - now),
            waiters=self.waiters(),
            live_keys=self._store.live_keys(),
            last_headers=self.last_headers,
            key_cooldowns=len(self._key_holds),
            ceiling=ceiling,
            ceiling_recovers_in=recovers,
            quarantines=self.quarantines,
            margin=margin,
            path_spread=spread,
        )

    async def aclose(self) -> None:
        """Refuse new callers and fail the queued ones with :class:`LimiterClosedError`."""
        self._closed = True
        task = self._dispatcher
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_waiters(lambda: LimiterClosedError(f"limiter {self.name!r} is closed"))
        await self._primary.aclose()


def cooldown_refusal(name: str, left: float, *, key_limited: bool = False) -> RateLimitedError:
    """The error a call gets, without a request, while the limit it would wait for (limiter
    ``name``; one key's when ``key_limited``) cools down ``left`` more seconds after a 429 whose
    ``Retry-After`` exceeded what callers wait."""
    what = "this key" if key_limited else "the endpoint"
    endpoint = name.rsplit(":", 1)[-1] or "limiter"
    return RateLimitedError(
        f"{endpoint}: {what} cools down for another {left:.3g} s after a 429, longer than "
        "calls wait (retry_after_cap); no request was sent",
        retry_after=left,
        status=429,
    )

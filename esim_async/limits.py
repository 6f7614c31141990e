"""Client-side rate limits: "at most ``count`` requests in ANY window of ``period`` seconds".

The providers throttle with Laravel's fixed windows, but no algorithm is published, so the
guarantee kept here is the strictest reading: no window of length ``period`` (placed anywhere,
start-up included) ever holds more than ``count`` admissions. It is kept with a sliding-window log
of the last ``count`` admission times, which also admits as much as that guarantee allows (the
``count``-th previous admission leaves the window, the next one enters). A safety margin
(default 2 % of the period) absorbs network jitter between our clock and the server's.

A 429 is charged to the limit that tripped it. When that is the shared limit (our window held
nearly its count), the limiter cools down (no admission until ``Retry-After`` has passed, for
every caller), then runs at a reduced rate with minimum spacing (no bursts) and recovers
additively: AIMD, with one decrease per cool-down however many 429s arrive during it. A count
learned from ``X-RateLimit-Limit`` recovers the same way. Otherwise only the key (one eSIM)
cools down. A cool-down longer than callers are willing to wait is never slept through: a call
that would wait for it raises :class:`~esim_async.errors.RateLimitedError` at once.

Every admission is a :class:`Slot`: stamped with the real send time when the request goes out,
or released (its budget given back) when nothing of it ever went out.

Nothing here knows about HTTP; the transport calls :meth:`EndpointLimiter.acquire` once per
attempt and :meth:`EndpointLimiter.penalize` on a 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import math
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from . import _constants as C
from .clock import Clock
from .errors import RateLimitedError, TransportError

__all__ = [
    "EndpointLimiter",
    "KeyedWindows",
    "LimiterClosedError",
    "LimiterState",
    "Priority",
    "QueueTicket",
    "Rate",
    "SharedLimiter",
    "WindowLog",
    "cooldown_refusal",
]


class LimiterClosedError(TransportError):
    """The client (and so its limiters) was closed while a request waited for budget."""


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
        if not (isinstance(self.period, int | float) and math.isfinite(self.period)) or (
            self.period <= 0
        ):
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

    Bound to the running task with :meth:`bind`, it applies to every :class:`SharedLimiter`
    wait of that task: a wait takes the better of its own priority and the ticket's, and
    :meth:`raise_to` moves a wait already queued to the better lane (behind the waiters already
    there). Single flight uses it when an interactive caller joins a sweep's queued request.
    """

    __slots__ = ("_waits", "priority")

    def __init__(self, priority: Priority = Priority.INTERACTIVE) -> None:
        self.priority = priority
        self._waits: dict[asyncio.Future[Slot], SharedLimiter] = {}

    def raise_to(self, priority: Priority) -> None:
        """Give the request ``priority`` if it is better than its own (a ticket never drops)."""
        if priority >= self.priority:
            return
        self.priority = priority
        for fut, limiter in list(self._waits.items()):
            limiter._promote(fut, priority)

    @contextlib.contextmanager
    def bind(self) -> Iterator[None]:
        """Apply this ticket to the limiter waits of the current task while inside."""
        token = _TICKET.set(self)
        try:
            yield
        finally:
            _TICKET.reset(token)


_TICKET: contextvars.ContextVar[QueueTicket | None] = contextvars.ContextVar(
    "esim_async_queue_ticket", default=None
)


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


class Slot:
    """One admission. Its time is the admission time until :meth:`mark` stamps the real send
    time (the transport does so when the request goes out on its connection), so a request
    held up by a token or connection set-up cannot make a later window look emptier than it
    is. A request of which nothing went out gives its admission back with :meth:`release`.

    The slot covers the shared window and, when it has one, the key's window. ``sent`` is True
    once nothing is left to settle (stamped, released, or counted at admission)."""

    __slots__ = ("_key", "_keys", "_owner", "sent", "time")

    def __init__(self, time: float, owner: WindowLog | None = None) -> None:
        self.time = time
        self.sent = owner is None
        self._owner = owner
        self._keys: KeyedWindows | None = None
        self._key = ""

    def _bind_key(self, keys: KeyedWindows, key: str) -> None:
        """Settle ``key``'s pending admission in ``keys`` together with this slot."""
        self._keys = keys
        self._key = key
        self.sent = False

    def mark(self, t: float) -> None:
        """The request went out at ``t`` (or may have: then ``t`` is now, never too early)."""
        if self.sent:
            return
        self.sent = True
        if t > self.time:
            self.time = t
        owner, keys = self._owner, self._keys
        self._owner = self._keys = None
        if owner is not None:
            owner._pending -= 1
        if keys is not None:
            keys.mark(self._key, self.time)

    def release(self) -> None:
        """Nothing of the request went out and nothing will: its budget is given back."""
        if self.sent:
            return
        self.sent = True
        owner, keys = self._owner, self._keys
        self._owner = self._keys = None
        if owner is not None:
            owner._drop(self)
        if keys is not None:
            keys.release(self._key)


#: A slot that needs no stamping (no shared window, admissions counted when admitted).
SENT = Slot(0.0)


class WindowLog:
    """The pure bookkeeping of one shared limit: admission log, cool-down and AIMD factor.

    ``earliest(now)`` is the first time an admission is allowed; ``admit(t)`` records one. Times
    passed to ``admit`` must not decrease.
    """

    #: Largest ``count`` kept as an exact log; larger ones are counted in time slots.
    MAX_LOG = 1024
    SLOTS = 64

    __slots__ = (
        "_ceiling",
        "_ceiling_from",
        "_cooldown_until",
        "_decrease_guard",
        "_factor0",
        "_in_slots",
        "_log",
        "_pending",
        "_slot_width",
        "_slots",
        "_slotted",
        "_span",
        "_stamped",
        "rate",
        "recovery_step",
    )

    def __init__(
        self,
        rate: Rate,
        *,
        margin: float = C.DEFAULT_RATE_MARGIN,
        recovery_step: float = C.RATE_RECOVERY_STEP,
    ) -> None:
        if not (0.0 <= margin < 1.0):
            raise ValueError("margin must be in [0, 1)")
        self.rate = rate
        self.recovery_step = recovery_step
        self._span = rate.period * (1.0 + margin)
        # Only the last `count` admissions matter for the window. A Rate above MAX_LOG (limits
        # lifted with a huge Rate) is kept in SLOTS time slots per span instead: admissions in
        # every slot that can still touch the window are counted (stricter by at most one
        # slot, 1/64 of the budget), in constant memory.
        self._slotted = rate.count > self.MAX_LOG
        self._log: deque[Slot] = deque()
        #: Admissions not yet stamped with their send time, and whether any ever were.
        self._pending = 0
        self._stamped = False
        self._slot_width = self._span / self.SLOTS
        self._slots: deque[list[int]] = deque()
        self._in_slots = 0
        self._cooldown_until = -math.inf
        self._decrease_guard = -math.inf
        self._factor0 = 1.0
        #: A count learned from ``X-RateLimit-Limit``, recovering from ``_ceiling_from`` on.
        self._ceiling = rate.count
        self._ceiling_from = -math.inf

    @property
    def cooldown_until(self) -> float:
        return self._cooldown_until

    def factor(self, now: float) -> float:
        """Fraction of the configured rate in force at ``now`` (1.0 = full rate)."""
        if self._factor0 >= 1.0:
            return 1.0
        since = now - self._cooldown_until
        if since <= 0:
            return self._factor0
        f = self._factor0 + self.recovery_step * since / self.rate.period
        return 1.0 if f >= 1.0 else f

    def ceiling(self, now: float) -> int:
        """The count in force at ``now``: the configured one, or a lower one learned from a
        429's ``X-RateLimit-Limit``, which wins back ``recovery_step`` of the configured count
        per period once its cool-down is over (it never stays lowered for good)."""
        base = self._ceiling
        count = self.rate.count
        if base >= count:
            return count
        since = now - self._ceiling_from
        if since <= 0:
            return base
        grown = base + int(count * self.recovery_step * since / self.rate.period)
        return count if grown >= count else grown

    def ceiling_recovers_in(self, now: float) -> float:
        """Seconds from ``now`` until the configured count is in force again."""
        count = self.rate.count
        if self._ceiling >= count or self.recovery_step <= 0:
            return 0.0 if self._ceiling >= count else math.inf
        end = self._ceiling_from + (count - self._ceiling) * self.rate.period / (
            count * self.recovery_step
        )
        return max(0.0, end - now)

    def effective_count(self, now: float) -> int:
        """The count in force at ``now`` (see :meth:`ceiling`)."""
        return self.ceiling(now)

    def recent(self, now: float) -> int:
        """Requests in the window that ends at ``now``: those sent (or, unstamped, admitted)
        within the last period, and those admitted but not sent yet."""
        if self._slotted:
            horizon = int(now // self._slot_width) - self.SLOTS
            return sum(n for index, n in self._slots if index >= horizon)
        edge = now - self._span
        return sum(1 for slot in self._log if not slot.sent or slot.time > edge)

    def nearly_full(self, now: float) -> bool:
        """Whether the window that ends at ``now`` held nearly as many requests as the rate in
        force allows: counting the request a 429 answered, more than ``SHARED_CHARGE_FILL`` of
        that count (all of it for counts up to ten)."""
        allowed = self.ceiling(now) * self.factor(now)
        need = min(allowed, math.floor(allowed * C.SHARED_CHARGE_FILL) + 1)
        return self.recent(now) >= need

    def _drop(self, slot: Slot) -> None:
        """A pending admission that will never be sent leaves the log: its budget is back."""
        self._pending -= 1
        with contextlib.suppress(ValueError):
            self._log.remove(slot)

    def earliest(self, now: float) -> float:
        """The first time at or after ``now`` at which one more admission keeps the guarantee."""
        t = now if now >= self._cooldown_until else self._cooldown_until
        log = self._log
        n = self._ceiling
        if n < self.rate.count:
            n = self.ceiling(t)
        if self._slotted:
            slots = self._slots
            width = self._slot_width
            horizon = int(t // width) - self.SLOTS  # slots before this cannot touch the window
            while slots and slots[0][0] < horizon:
                self._in_slots -= slots.popleft()[1]
            if self._in_slots >= n and slots:
                # (a millionth of a slot past the boundary, so float rounding cannot
                # leave the oldest slot counted at the time returned)
                edge = (slots[0][0] + self.SLOTS + 1 + 1e-6) * width
                if edge > t:
                    t = edge
        elif len(log) >= n:
            edge = self._stamped_edge(t, now, n) if self._stamped else log[-n].time + self._span
            if edge > t:
                t = edge
        if self._factor0 < 1.0 and log:
            f = self.factor(t)
            if f < 1.0:
                spaced = log[-1].time + self._span / (n * f)
                if spaced > t:
                    t = spaced
        return t

    def _stamped_edge(self, t: float, now: float, n: int) -> float:
        """The first time one more send keeps the window, counting sends as they really went
        out: a request still pending will go out at or after now, so it is in any window that
        starts after now; sends can come out of admission order."""
        span = self._span
        log = self._log
        # Sends a whole span old can never share a window with a later request again.
        if any(slot.sent and slot.time <= now - span for slot in log):
            kept = [slot for slot in log if not (slot.sent and slot.time <= now - span)]
            log.clear()
            log.extend(kept)
        pending = self._pending
        if pending >= n:
            return max(t, now + min(0.01, span / 100))  # wait for one of them to go out
        sent = sorted(slot.time for slot in log if slot.sent)
        allowed = n - 1 - pending  # sends that may share the new request's window
        if len(sent) <= allowed:
            return t
        return sent[len(sent) - allowed - 1] + span

    def admit(self, t: float, *, pending: bool = False) -> Slot:
        """Record an admission at ``t``; with ``pending`` its send time is stamped later."""
        if pending and not self._slotted:
            slot = Slot(t, self)
            self._pending += 1
            self._stamped = True
        else:
            slot = Slot(t)
        log = self._log
        log.append(slot)
        if not self._stamped:
            # Only the last `count` admissions matter (one for the slotted mode's spacing).
            keep = 1 if self._slotted else self.rate.count
            while len(log) > keep:
                log.popleft()
        if self._slotted:
            index = int(t // self._slot_width)
            slots = self._slots
            if slots and slots[-1][0] == index:
                slots[-1][1] += 1
            else:
                slots.append([index, 1])
            self._in_slots += 1
        return slot

    def penalize(self, now: float, retry_after: float | None, limit: int | None = None) -> None:
        """Account for a 429 seen at ``now``.

        Cools down for ``retry_after`` seconds (one period when unknown), lowers the rate once
        per cool-down, and takes ``limit`` (``X-RateLimit-Limit``) as a ceiling on ``count``
        that recovers after the cool-down (see :meth:`ceiling`).
        """
        wait = (
            retry_after
            if retry_after is not None
            else self.rate.period * (C.DEFAULT_COOLDOWN_PERIODS)
        )
        current = self.factor(now)  # before the new cool-down moves the recovery anchor
        until = now + wait
        if until > self._cooldown_until:
            self._cooldown_until = until
        if limit is not None and 1 <= limit < self.ceiling(now):
            self._ceiling = limit
            self._ceiling_from = self._cooldown_until
        if now >= self._decrease_guard:
            self._factor0 = max(C.RATE_MIN_FACTOR, current * C.RATE_DECREASE_FACTOR)
            self._decrease_guard = self._cooldown_until

    def effective_per_second(self, now: float) -> float:
        return self.ceiling(now) / self.rate.period * self.factor(now)


class KeyedWindows:
    """Per-key sliding windows (e.g. per ICCID) whose state is dropped once its window passed.

    Live state is one float (or a short sorted tuple of floats when ``count > 1``) per key in
    one dict kept in order of last admission, so eviction pops expired keys from the front in
    O(1) each. An admission made ``pending`` is recorded when its request is sent
    (:meth:`mark`, at the send time) or dropped (:meth:`release`); until then it counts as
    going out at or after any time asked about.
    """

    __slots__ = ("_admits", "_count", "_logs", "_pending", "_spacing", "_span", "rate")

    #: Per-key logs keep at most this many times; a larger ``count`` is kept by spacing a key's
    #: admissions period/count apart (one float per key), so a huge Rate costs no memory.
    MAX_PER_KEY = 128

    def __init__(self, rate: Rate, *, margin: float = C.DEFAULT_RATE_MARGIN) -> None:
        self.rate = rate
        self._span = rate.period * (1.0 + margin)
        self._spacing = self._span / rate.count if rate.count > self.MAX_PER_KEY else 0.0
        self._count = 1 if self._spacing else rate.count
        self._logs: dict[str, float | tuple[float, ...]] = {}
        #: key -> admissions not sent yet.
        self._pending: dict[str, int] = {}
        self._admits = 0

    def __len__(self) -> int:
        return len(self._logs)

    def earliest(self, key: str, now: float) -> float:
        entry = self._logs.get(key)
        pending = self._pending.get(key, 0) if self._pending else 0
        count = self._count
        if pending:
            if pending >= count:
                # Every admission the key may have in a window is still on its way out: wait
                # for one of them to be sent (or given back).
                return now + min(0.01, self._span / 100)
            need = count - pending  # the sends that must have left the window
        else:
            need = count
        if entry is None:
            return now
        if isinstance(entry, float):
            if need > 1:
                return now
            edge = entry + (self._spacing or self._span)
        else:
            if len(entry) < need:
                return now
            edge = entry[-need] + self._span
        return edge if edge > now else now

    def admit(self, key: str, t: float, *, pending: bool = False) -> bool:
        """Record an admission of ``key`` at ``t``. With ``pending`` (and a per-key log) it is
        recorded later by :meth:`mark` or dropped by :meth:`release`; returns whether so."""
        if pending and not self._spacing:
            self._pending[key] = self._pending.get(key, 0) + 1
            return True
        self._record(key, t)
        return False

    def mark(self, key: str, t: float) -> None:
        """A pending admission of ``key`` was sent at ``t``."""
        self._settle(key)
        self._record(key, t)

    def release(self, key: str) -> None:
        """A pending admission of ``key`` will never be sent: it is forgotten."""
        self._settle(key)

    def _settle(self, key: str) -> None:
        left = self._pending.get(key, 0) - 1
        if left > 0:
            self._pending[key] = left
        else:
            self._pending.pop(key, None)

    def _record(self, key: str, t: float) -> None:
        logs = self._logs
        entry = logs.pop(key, None)
        count = self._count
        if entry is None:
            logs[key] = t
        elif isinstance(entry, float):
            if count == 1:
                logs[key] = t if t > entry else entry
            else:
                logs[key] = (entry, t) if t >= entry else (t, entry)
        elif t >= entry[-1]:
            logs[key] = (*entry[-(count - 1) :], t)
        else:  # sends can go out in another order than they were admitted
            logs[key] = tuple(sorted((*entry, t)))[-count:]
        self._admits += 1
        if self._admits & 63 == 0:  # amortised: expired keys go within 64 admissions
            self.evict(t)

    def evict(self, now: float) -> None:
        """Drop every key whose last admission has left the window."""
        logs = self._logs
        span = self._span
        while logs:
            key = next(iter(logs))
            entry = logs[key]
            last = entry if isinstance(entry, float) else entry[-1]
            if last + span > now:
                break
            del logs[key]


class SharedLimiter:
    """An async, fair, two-lane limiter over one :class:`WindowLog`.

    Waiters queue FIFO per lane; an interactive waiter is served before any bulk waiter, and bulk
    waiters take every slot no interactive waiter wants (work-conserving). A cancelled waiter
    gives its place up. With ``rate=None`` nothing is limited but cool-downs still apply.
    """

    def __init__(
        self,
        rate: Rate | None,
        *,
        clock: Clock,
        margin: float = C.DEFAULT_RATE_MARGIN,
        name: str = "",
        stamp_sends: bool = False,
    ) -> None:
        self.name = name
        self._clock = clock
        self._stamp = stamp_sends
        self._window = WindowLog(rate, margin=margin) if rate is not None else None
        self._cooldown_until = -math.inf  # used when rate is None
        self._lanes: tuple[deque[asyncio.Future[Slot]], deque[asyncio.Future[Slot]]] = (
            deque(),
            deque(),
        )
        self._dispatcher: asyncio.Task[None] | None = None
        self._closed = False
        #: Until then a cool-down lasts longer than callers wait: they are refused instead.
        self._refuse_until = -math.inf

    @property
    def rate(self) -> Rate | None:
        return self._window.rate if self._window is not None else None

    def check(self, now: float) -> None:
        """Raise :class:`RateLimitedError` while a cool-down lasts that callers do not wait
        for (see :meth:`penalize`), with the seconds it has left as ``retry_after``."""
        left = self._refuse_until - now
        if left > 0.0:
            raise cooldown_refusal(self.name, left)

    def nearly_full(self, now: float) -> bool:
        """Whether the window that ends at ``now`` held nearly its count (False unlimited)."""
        return self._window is not None and self._window.nearly_full(now)

    def ceiling(self, now: float) -> int | None:
        """The count in force while a lower one learned from a header recovers, else None."""
        window = self._window
        if window is None:
            return None
        count = window.ceiling(now)
        return count if count < window.rate.count else None

    def ceiling_recovers_in(self, now: float) -> float:
        """Seconds until the configured count is in force again (0.0 when it is)."""
        return self._window.ceiling_recovers_in(now) if self._window is not None else 0.0

    def earliest(self, now: float) -> float:
        if self._window is not None:
            return self._window.earliest(now)
        return now if now >= self._cooldown_until else self._cooldown_until

    def _admit(self, now: float) -> Slot:
        if self._window is not None:
            return self._window.admit(now, pending=self._stamp)
        return SENT

    @property
    def cooldown_until(self) -> float:
        return self._window.cooldown_until if self._window is not None else self._cooldown_until

    def waiters(self) -> int:
        return sum(1 for lane in self._lanes for f in lane if not f.done())

    def try_acquire(self, now: float) -> Slot | None:
        """Count one request at ``now`` if it may go at once (nobody queued, budget free)."""
        lanes = self._lanes
        if not lanes[0] and not lanes[1] and not self._closed and self.earliest(now) <= now:
            return self._admit(now)
        return None

    async def acquire(self, priority: Priority = Priority.INTERACTIVE) -> Slot:
        """Wait until one request may be sent, and count it. Mark the returned slot when the
        request goes out, or release it if nothing goes out (it is released for you if you
        are cancelled first).

        Raises:
            RateLimitedError: a cool-down callers do not wait for is on (see ``penalize``).
            LimiterClosedError: the limiter was closed.
        """
        if self._closed:
            raise LimiterClosedError(f"limiter {self.name!r} is closed")
        now = self._clock.now()
        self.check(now)
        lanes = self._lanes
        if not lanes[0] and not lanes[1] and self.earliest(now) <= now:
            return self._admit(now)
        ticket = _TICKET.get()
        if ticket is not None and ticket.priority < priority:
            priority = ticket.priority
        fut: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        lanes[priority].append(fut)
        if ticket is not None and priority > Priority.INTERACTIVE:
            ticket._waits[fut] = self  # it may be promoted while it waits
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(
                self._dispatch(), name=f"esim_async limiter {self.name}"
            )
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                fut.result().release()  # admitted, but nothing will be sent
            raise
        finally:
            if ticket is not None:
                ticket._waits.pop(fut, None)

    def _promote(self, fut: asyncio.Future[Slot], priority: Priority) -> None:
        """Move a queued wait to the lane of ``priority`` (a better one), behind its waiters."""
        if fut.done():
            return
        lanes = self._lanes
        for lane in lanes[priority + 1 :]:
            if fut in lane:
                lane.remove(fut)
                lanes[priority].append(fut)
                return

    def _head(self) -> asyncio.Future[Slot] | None:
        for lane in self._lanes:
            while lane and lane[0].done():
                lane.popleft()
            if lane:
                return lane[0]
        return None

    async def _dispatch(self) -> None:
        clock = self._clock
        try:
            while True:
                head = self._head()
                if head is None:
                    return
                now = clock.now()
                t = self.earliest(now)
                if t > now:
                    await clock.sleep(t - now)
                    continue
                slot = self._admit(now)
                # The head may be in either lane; pop it from the lane that holds it.
                for lane in self._lanes:
                    if lane and lane[0] is head:
                        lane.popleft()
                        break
                head.set_result(slot)
        finally:
            self._dispatcher = None

    def penalize(
        self, retry_after: float | None, limit: int | None = None, *, waitable: bool = True
    ) -> None:
        """A 429 charged to this limit: every caller cools down (see
        :meth:`WindowLog.penalize`).

        With ``waitable=False`` the cool-down lasts longer than callers wait: until it ends,
        :meth:`acquire` raises :class:`RateLimitedError` at once instead of waiting, and the
        callers already queued get that error now.
        """
        now = self._clock.now()
        if self._window is not None:
            self._window.penalize(now, retry_after, limit)
        elif retry_after is not None:
            self._cooldown_until = max(self._cooldown_until, now + retry_after)
        if waitable:
            return
        until = self.cooldown_until
        if until > self._refuse_until:
            self._refuse_until = until
        left = self._refuse_until - now
        if left > 0.0:
            for lane in self._lanes:
                while lane:
                    fut = lane.popleft()
                    if not fut.done():
                        fut.set_exception(cooldown_refusal(self.name, left))

    def effective_per_second(self) -> float | None:
        if self._window is None:
            return None
        return self._window.effective_per_second(self._clock.now())

    async def aclose(self) -> None:
        self._closed = True
        task = self._dispatcher
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for lane in self._lanes:
            while lane:
                fut = lane.popleft()
                if not fut.done():
                    fut.set_exception(LimiterClosedError(f"limiter {self.name!r} is closed"))


class EndpointLimiter:
    """The limits of one endpoint: a shared limit (e.g. per company) and a per-key limit.

    ``acquire(key)`` waits for the key's window first (that wait spends no shared budget), then
    for the shared limiter, and admits the key at the moment the shared limiter admitted it.
    With ``stamp_sends`` both admissions are stamped with the real send time (or given back)
    through the returned :class:`Slot`, so both guarantees hold for what the server sees.

    A 429 is charged to the limit the evidence points to (see :meth:`penalize`): the shared
    limit, or one key's own cool-down.
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
    ) -> None:
        self.name = name
        self._clock = clock
        self._shared = SharedLimiter(
            shared, clock=clock, margin=margin, name=name, stamp_sends=stamp_sends
        )
        self._keys = KeyedWindows(per_key, margin=margin) if per_key is not None else None
        self._stamp = stamp_sends
        #: key -> (end of its own cool-down, whether callers are refused rather than wait).
        self._key_holds: dict[str, tuple[float, bool]] = {}
        self._prune_holds_at = 64
        self._last_headers: Mapping[str, str] = {}
        #: Total seconds callers spent waiting here (for ``client.stats``).
        self.waited = 0.0

    async def acquire(
        self, key: str | None = None, priority: Priority = Priority.INTERACTIVE
    ) -> Slot:
        """Wait for both limits; returns the slot, to be marked when the request goes out or
        released if nothing of it does (the transport does this).

        Raises:
            RateLimitedError: the endpoint or this key cools down for longer than callers
                wait (see :meth:`penalize`); ``retry_after`` says for how long still.
            LimiterClosedError: the limiter was closed.
        """
        clock = self._clock
        shared = self._shared
        start = clock.now()
        if key is None:
            slot = shared.try_acquire(start)
            if slot is None:
                slot = await shared.acquire(priority)
                self.waited += clock.now() - start
            return slot
        # Fast path (the common case): both budgets free now, nobody queued.
        if self._key_ready(key, start) <= start:
            slot = shared.try_acquire(start)
            if slot is not None:
                return self._bind(slot, key, start)
        while True:
            now = clock.now()
            t = self._key_ready(key, now)
            if t > now:
                shared.check(now)  # a cool-down nobody waits for is not waited for here either
                await clock.sleep(t - now)
                continue
            slot = await shared.acquire(priority)
            now = clock.now()
            try:
                ready = self._key_ready(key, now) <= now
            except BaseException:
                slot.release()
                raise
            if ready:
                break
            # Another request for this key went first while we waited: nothing was sent, so
            # the shared permit goes back; wait for the key again.
            slot.release()
        self.waited += clock.now() - start
        return self._bind(slot, key, now)

    def _key_ready(self, key: str, now: float) -> float:
        """When ``key`` may go: after its window and its own cool-down. Raises
        :class:`RateLimitedError` while that cool-down lasts longer than callers wait."""
        t = now
        holds = self._key_holds
        if holds:
            hold = holds.get(key)
            if hold is not None:
                until, refused = hold
                if until <= now:
                    del holds[key]
                elif refused:
                    raise cooldown_refusal(self.name, until - now, key_limited=True)
                else:
                    t = until
        keys = self._keys
        if keys is not None:
            edge = keys.earliest(key, now)
            if edge > t:
                t = edge
        return t

    def _bind(self, slot: Slot, key: str, t: float) -> Slot:
        """Admit ``key`` at ``t`` along with ``slot``; a pending key admission is settled
        (stamped or released) with the slot."""
        keys = self._keys
        if keys is not None and keys.admit(key, t, pending=self._stamp):
            if slot is SENT:
                slot = Slot(t)
            slot._bind_key(keys, key)
        return slot

    def penalize(
        self,
        retry_after: float | None,
        limit: int | None = None,
        *,
        key: str | None = None,
        waitable: bool = True,
    ) -> None:
        """Account for a 429 (``retry_after``: its ``Retry-After``; ``limit``: its
        ``X-RateLimit-Limit``) of a request for ``key``, charged to the limit that tripped it.

        The shared limit is charged (every caller cools down, the rate drops, ``limit`` becomes
        a ceiling that recovers) when no key is given, or when our window held nearly its count
        and neither a ``Retry-After`` longer than the shared period nor a ``limit`` equal to
        the per-key count points elsewhere. Otherwise only ``key`` cools down, whatever
        ``limit`` says (another process may use the same key, or its real limit is lower).

        With ``waitable=False`` (the cool-down is longer than callers wait), calls that would
        wait for it raise :class:`RateLimitedError` at once until it ends.
        """
        now = self._clock.now()
        if key is None or self._charges_shared(now, retry_after, limit):
            self._shared.penalize(retry_after, limit, waitable=waitable)
            return
        if retry_after is None:
            rate = self._keys.rate if self._keys is not None else self._shared.rate
            retry_after = (rate.period if rate is not None else 1.0) * C.DEFAULT_COOLDOWN_PERIODS
        until = now + retry_after
        refused = not waitable
        old = self._key_holds.pop(key, None)
        if old is not None and old[0] > now:
            until = max(until, old[0])
            refused = refused or old[1]
        self._key_holds[key] = (until, refused)
        if len(self._key_holds) >= self._prune_holds_at:
            self._prune_holds(now)
            self._prune_holds_at = max(64, 2 * len(self._key_holds))

    def _charges_shared(self, now: float, retry_after: float | None, limit: int | None) -> bool:
        """Whether a 429 of a keyed request is the shared limit's (see :meth:`penalize`)."""
        rate = self._shared.rate
        if rate is None:
            return False
        if retry_after is not None and retry_after > max(1.0, math.ceil(rate.period)):
            return False  # a window of the shared period never asks to wait that long
        per_key = self._keys.rate if self._keys is not None else None
        if (
            limit is not None
            and per_key is not None
            and limit == per_key.count
            and limit != rate.count
        ):
            return False
        return self._shared.nearly_full(now)

    def _prune_holds(self, now: float) -> None:
        holds = self._key_holds
        for key in [k for k, (until, _) in holds.items() if until <= now]:
            del holds[key]

    def record_headers(self, headers: Mapping[str, str]) -> None:
        # Kept as given (no copy on the hot path); filtered when state() is read.
        self._last_headers = headers

    @property
    def last_headers(self) -> dict[str, str]:
        """The last ``X-RateLimit-*`` and ``Retry-After`` headers seen."""
        return {
            k: v
            for k, v in self._last_headers.items()
            if k.lower().startswith("x-ratelimit") or k.lower() == "retry-after"
        }

    def state(self) -> LimiterState:
        now = self._clock.now()
        cd = self._shared.cooldown_until
        if self._keys is not None:
            self._keys.evict(now)
        self._prune_holds(now)
        return LimiterState(
            name=self.name,
            configured=self._shared.rate,
            per_key=self._keys.rate if self._keys is not None else None,
            effective_per_second=self._shared.effective_per_second(),
            cooldown_until=cd,
            cooldown_remaining=max(0.0, cd - now),
            waiters=self._shared.waiters(),
            live_keys=len(self._keys) if self._keys is not None else 0,
            last_headers=dict(self.last_headers),
            key_cooldowns=len(self._key_holds),
            ceiling=self._shared.ceiling(now),
            ceiling_recovers_in=self._shared.ceiling_recovers_in(now),
        )

    async def aclose(self) -> None:
        await self._shared.aclose()


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

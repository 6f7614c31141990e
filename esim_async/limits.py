"""Client-side rate limits: "at most ``count`` requests in ANY window of ``period`` seconds".

The providers throttle with Laravel's fixed windows, but no algorithm is published, so the
guarantee kept here is the strictest reading: no window of length ``period`` (placed anywhere,
start-up included) ever holds more than ``count`` admissions. It is kept with a sliding-window log
of the last ``count`` admission times, which also admits as much as that guarantee allows (the
``count``-th previous admission leaves the window, the next one enters). A safety margin
(default 2 % of the period) absorbs network jitter between our clock and the server's.

After a 429 the limiter cools down (no admission until ``Retry-After`` has passed, for every
caller), then runs at a reduced rate with minimum spacing (no bursts) and recovers additively:
AIMD, with one decrease per cool-down however many 429s arrive during it.

Nothing here knows about HTTP; the transport calls :meth:`EndpointLimiter.acquire` once per
attempt and :meth:`EndpointLimiter.penalize` on a 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import _constants as C
from .clock import Clock
from .errors import TransportError

__all__ = [
    "EndpointLimiter",
    "KeyedWindows",
    "LimiterClosedError",
    "LimiterState",
    "Priority",
    "Rate",
    "SharedLimiter",
    "WindowLog",
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


class Slot:
    """One admission. Its time is the admission time until :meth:`mark` stamps the real send
    time (the transport does so when the request goes out on its connection), so a request
    held up by connection set-up cannot make a later window look emptier than it is."""

    __slots__ = ("_owner", "sent", "time")

    def __init__(self, time: float, owner: WindowLog | None = None) -> None:
        self.time = time
        self.sent = owner is None
        self._owner = owner

    def mark(self, t: float) -> None:
        """The request went out at ``t`` (or will not go out: then ``t`` is now)."""
        if self.sent:
            return
        self.sent = True
        if t > self.time:
            self.time = t
        owner = self._owner
        if owner is not None:
            owner._pending -= 1
            self._owner = None


#: A slot that needs no stamping (limits lifted, per-key windows, other backends).
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
        self._ceiling = rate.count

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

    def effective_count(self) -> int:
        return self._ceiling

    def earliest(self, now: float) -> float:
        """The first time at or after ``now`` at which one more admission keeps the guarantee."""
        t = now if now >= self._cooldown_until else self._cooldown_until
        log = self._log
        n = self._ceiling
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
        per cool-down, and takes ``limit`` (``X-RateLimit-Limit``) as a ceiling on ``count``.
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
        if limit is not None and 1 <= limit < self._ceiling:
            self._ceiling = limit
        if now >= self._decrease_guard:
            self._factor0 = max(C.RATE_MIN_FACTOR, current * C.RATE_DECREASE_FACTOR)
            self._decrease_guard = self._cooldown_until

    def effective_per_second(self, now: float) -> float:
        return self._ceiling / self.rate.period * self.factor(now)


class KeyedWindows:
    """Per-key sliding windows (e.g. per ICCID) whose state is dropped once its window passed.

    Live state is one float (or a short tuple of floats when ``count > 1``) per key in one dict
    kept in order of last admission, so eviction pops expired keys from the front in O(1) each.
    """

    __slots__ = ("_admits", "_count", "_logs", "_spacing", "_span", "rate")

    #: Per-key logs keep at most this many times; a larger ``count`` is kept by spacing a key's
    #: admissions period/count apart (one float per key), so a huge Rate costs no memory.
    MAX_PER_KEY = 128

    def __init__(self, rate: Rate, *, margin: float = C.DEFAULT_RATE_MARGIN) -> None:
        self.rate = rate
        self._span = rate.period * (1.0 + margin)
        self._spacing = self._span / rate.count if rate.count > self.MAX_PER_KEY else 0.0
        self._count = 1 if self._spacing else rate.count
        self._logs: dict[str, float | tuple[float, ...]] = {}
        self._admits = 0

    def __len__(self) -> int:
        return len(self._logs)

    def earliest(self, key: str, now: float) -> float:
        entry = self._logs.get(key)
        if entry is None:
            return now
        count = self._count
        if isinstance(entry, float):
            if count > 1:
                return now
            edge = entry + (self._spacing or self._span)
        else:
            if len(entry) < count:
                return now
            edge = entry[-count] + self._span
        return edge if edge > now else now

    def admit(self, key: str, t: float) -> None:
        logs = self._logs
        entry = logs.pop(key, None)
        count = self._count
        if entry is None or count == 1:
            logs[key] = t
        elif isinstance(entry, float):
            logs[key] = (entry, t)
        else:
            logs[key] = (*entry[-(count - 1) :], t)
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

    @property
    def rate(self) -> Rate | None:
        return self._window.rate if self._window is not None else None

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
        request goes out (it is marked for you if you are cancelled first)."""
        if self._closed:
            raise LimiterClosedError(f"limiter {self.name!r} is closed")
        now = self._clock.now()
        lanes = self._lanes
        if not lanes[0] and not lanes[1] and self.earliest(now) <= now:
            return self._admit(now)
        fut: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        lanes[priority].append(fut)
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(
                self._dispatch(), name=f"esim_async limiter {self.name}"
            )
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                fut.result().mark(self._clock.now())  # admitted, but nothing will be sent
            raise

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

    def penalize(self, retry_after: float | None, limit: int | None = None) -> None:
        now = self._clock.now()
        if self._window is not None:
            self._window.penalize(now, retry_after, limit)
        elif retry_after is not None:
            self._cooldown_until = max(self._cooldown_until, now + retry_after)

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
    for the shared limiter, and records the key's admission at the moment the shared limiter
    admitted it, so both guarantees hold for the real send time.
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
        self._last_headers: Mapping[str, str] = {}
        #: Total seconds callers spent waiting here (for ``client.stats``).
        self.waited = 0.0

    async def acquire(
        self, key: str | None = None, priority: Priority = Priority.INTERACTIVE
    ) -> Slot:
        """Wait for both limits; returns the shared slot, to be marked when the request goes
        out (the transport does this)."""
        clock = self._clock
        keys = self._keys if key is not None else None
        start = clock.now()
        # Fast path (the common case): both budgets free now, nobody queued.
        if keys is None or keys.earliest(key, start) <= start:  # type: ignore[arg-type]
            slot = self._shared.try_acquire(start)
            if slot is not None:
                if keys is not None:
                    keys.admit(key, start)  # type: ignore[arg-type]
                return slot
        while True:
            if keys is not None:
                now = clock.now()
                t = keys.earliest(key, now)  # type: ignore[arg-type]
                if t > now:
                    await clock.sleep(t - now)
                    continue
            slot = await self._shared.acquire(priority)
            if keys is None:
                break
            now = clock.now()
            if keys.earliest(key, now) <= now:  # type: ignore[arg-type]
                keys.admit(key, now)  # type: ignore[arg-type]
                break
            # Another request for this key slipped in while we waited: the shared permit is
            # spent (never over the limit, only conservative); wait for the key again.
            slot.mark(now)
        self.waited += clock.now() - start
        return slot

    def penalize(self, retry_after: float | None, limit: int | None = None) -> None:
        self._shared.penalize(retry_after, limit)

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
        )

    async def aclose(self) -> None:
        await self._shared.aclose()

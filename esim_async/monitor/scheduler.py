"""Which eSIM to read next, in O(log n) per read: heaps with lazy invalidation.

``due`` holds every schedulable eSIM keyed by the time it is next worth reading; ``parked``
holds those taken off ``due`` because they may not be read yet (their cache entry, on our side
and the server's, is still fresh), keyed by the time they may. ``timed`` holds the eSIMs whose
read is planned at a predicted crossing (:attr:`.estimator.SimState.timed`), keyed by that
moment. An eSIM has at most one live entry per heap, named by its ``token``; rescheduling
pushes new entries with a new token and leaves the old ones to be skipped when they surface.
Nothing scans the fleet per read.

:meth:`Schedule.pick` returns, at the moment a read can start, a timed eSIM whose moment has
come (each instant of waiting adds to its delay: it goes first), else the eligible eSIM with
the earliest due time among those already due. When none is due and the budget would
otherwise go unused (``spare=True``), it reads early the eSIM due soonest, whatever it waits
for, except a timed one (a read before its crossing would hold the next one a whole cache
period back): every due time comes from one common threshold on the delay a read removes
(:meth:`.estimator.Budget.threshold`), so the eSIM due soonest is the one closest to being
worth its read.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Iterable

from .estimator import SimState

__all__ = ["Pacer", "Schedule"]

_Entry = tuple[float, int, SimState]
#: Relative rounding of clock arithmetic: a time this close to now counts as now (the moment
#: the dispatcher sleeps until and the clock's own sum may differ in their last bits).
_SLACK = 1e-12


class Schedule:
    """The due-time and eligibility heaps over the tracked eSIMs."""

    __slots__ = ("_due", "_parked", "_timed", "_tokens", "_urgent")

    def __init__(self) -> None:
        self._due: list[_Entry] = []
        self._parked: list[_Entry] = []
        self._urgent: list[_Entry] = []
        self._timed: list[_Entry] = []
        self._tokens = itertools.count(1)

    def __len__(self) -> int:
        """Entries held (live and stale)."""
        return len(self._due) + len(self._parked) + len(self._urgent) + len(self._timed)

    def _heap(self, state: SimState) -> tuple[list[_Entry], float] | None:
        """The heap ``state`` belongs in and its key there (``None``: in none)."""
        if state.urgent:
            return self._urgent, state.eligible_at
        if math.isfinite(state.due):
            return (self._timed if state.timed else self._due), state.due
        return None

    def push(self, state: SimState) -> None:
        """(Re)schedule ``state`` at its ``due`` time; an earlier entry of it goes stale."""
        state.token = token = next(self._tokens)
        place = self._heap(state)
        if place is not None:
            heapq.heappush(place[0], (place[1], token, state))

    def remove(self, state: SimState) -> None:
        """Take ``state`` out of the schedule (its entries go stale)."""
        state.token = 0

    def rebuild(self, states: Iterable[SimState]) -> None:
        """Drop every stale entry: one heap entry per scheduled eSIM (linear time)."""
        self._due, self._urgent, self._parked, self._timed = [], [], [], []
        for state in states:
            if state.token:
                state.token = token = next(self._tokens)
                place = self._heap(state)
                if place is not None:
                    place[0].append((place[1], token, state))
        for heap in (self._due, self._urgent, self._timed):
            heapq.heapify(heap)

    def pick(self, now: float, *, spare: bool) -> SimState | None:
        """Take the eSIM to read now, or ``None``. The eSIM leaves the schedule (push it back
        once its reading is in)."""
        now += _SLACK * abs(now)
        state = self._pop_ready(self._urgent, now, eligible=False)
        if state is None:
            state = self._pop_ready(self._timed, now, eligible=True)
        if state is None:
            # When nothing is due and ``spare``: the eSIM due soonest, whatever it waits for
            # (timed ones are not in this heap).
            state = self._take(now, math.inf if spare else now)
        return state

    @staticmethod
    def _pop_ready(heap: list[_Entry], now: float, *, eligible: bool) -> SimState | None:
        """The top of ``heap`` if its time has come (and, with ``eligible``, it may be read),
        taken out of the schedule; stale entries on top are dropped on the way."""
        while heap:
            when, token, state = heap[0]
            if state.token != token:
                heapq.heappop(heap)
                continue
            if when > now or (eligible and state.eligible_at > now):
                return None
            heapq.heappop(heap)
            state.token = 0
            return state
        return None

    def _take(self, now: float, until: float) -> SimState | None:
        """The eligible eSIM due soonest, if due by ``until`` (those not eligible yet go to
        ``parked``, back once they are)."""
        due, parked = self._due, self._parked
        while parked and parked[0][0] <= now:
            _, token, state = heapq.heappop(parked)
            if state.token == token:
                heapq.heappush(due, (state.due, token, state))
        while due:
            when, token, state = due[0]
            if state.token != token:
                heapq.heappop(due)
                continue
            if when > until:
                return None
            heapq.heappop(due)
            if state.eligible_at > now:
                heapq.heappush(parked, (state.eligible_at, token, state))
                continue
            state.token = 0
            return state
        return None

    def next_time(self, now: float, *, spare: bool) -> float:
        """The earliest time :meth:`pick` may return something (``inf``: nothing scheduled).

        Stale entries on top are dropped on the way; the answer may be early, never late.
        """
        for heap in (self._urgent, self._due, self._parked, self._timed):
            while heap and heap[0][2].token != heap[0][1]:
                heapq.heappop(heap)
        times = [heap[0][0] for heap in (self._urgent, self._parked) if heap]
        if self._timed:
            when, _, state = self._timed[0]
            times.append(max(when, state.eligible_at))
        if self._due:
            times.append(now if spare else self._due[0][0])
        return min(times, default=math.inf)


class Pacer:
    """Keeps the starts of reads within the monitor's share of the budget: at most ``burst``
    starts in any window of ``burst / per_second`` seconds (a sliding-window log, the same
    guarantee the client's limiter keeps). ``per_second`` of ``inf`` means no limit (the due
    times and the client's per-eSIM limits pace the reads).

    :meth:`ready_at` says when the next read may start; :meth:`started` books it. A start up to
    ``lag`` of a window late is booked at the moment it could have come (so a loop that wakes a
    little late does not lose budget): then at most ``burst * (1 + lag + t / window)`` starts
    fall in any ``t`` seconds.
    """

    __slots__ = ("_log", "burst", "lag", "per_second", "window")

    def __init__(self, per_second: float, burst: int = 1, lag: float = 0.0) -> None:
        self._log: deque[float] = deque()
        self.lag = lag
        self.set_rate(per_second, burst)

    @property
    def limited(self) -> bool:
        return math.isfinite(self.per_second)

    def set_rate(self, per_second: float, burst: int) -> None:
        """Change the rate (the starts already booked still count)."""
        self.per_second = per_second
        self.burst = max(1, burst)
        self.window = self.burst / per_second if math.isfinite(per_second) else 0.0

    def ready_at(self, now: float) -> float:
        log = self._log
        while len(log) > self.burst:
            log.popleft()
        if len(log) < self.burst or not self.limited:
            return now
        return max(now, log[0] + self.window)

    def started(self, now: float) -> None:
        log = self._log
        booked = now
        if self.lag > 0 and self.limited and len(log) >= self.burst:
            booked = max(now - self.lag * self.window, min(now, log[0] + self.window))
        log.append(booked)
        if len(log) > self.burst:
            log.popleft()

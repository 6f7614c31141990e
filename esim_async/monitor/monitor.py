"""The fleet monitor: watch a fleet's usage within the request budget, report what changed.

See :mod:`esim_async.monitor` for the policy and how to use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import sqlite3
from collections import Counter, deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ..errors import EsimError, NotFoundError, RateLimitedError
from ..limits import Priority
from ..models.usage import Usage
from ..validation import validate_iccid
from .estimator import (
    HORIZON_UNITS,
    Budget,
    FleetPrior,
    SimState,
    Timing,
    observe,
    plan,
    upper_rate,
)
from .events import THRESHOLD_BITS, EventKind, UsageEvent, detect
from .lock import MonitorLock, default_lock, raise_if_cancelled
from .scheduler import Pacer, Schedule
from .settings import ClientView, read_client, wall_clock
from .store import SqliteStore, StoredEvent, StoredSim, encode_sim

if TYPE_CHECKING:
    from ..client import BaseClient
    from ..clock import Clock
    from ..webhooks import WebhookEvent

__all__ = ["FleetMonitor", "MonitorStats", "TrackedSim"]

logger = logging.getLogger("esim_async")

#: Changed rows that make the writer flush before its next period.
_FLUSH_ROWS = 5000
#: Times of an eSIM's state, stored on the wall clock.
_TIMES = ("read_at", "eligible_at", "due", "since")
#: The fields of an eSIM's state stored as they are.
_KEPT = tuple(set(StoredSim.__struct_fields__) - {*_TIMES, "fired", "known_low", "known_high"})
#: What a store that cannot take a batch raises (locked by another process, disk full...).
_STORE_ERRORS = (sqlite3.Error, OSError)
#: Bounds of the reads kept in flight (adapted between them; see ``_adapt_in_flight``).
_MIN_IN_FLIGHT = 2
_MAX_IN_FLIGHT = 16
#: Planning every eSIM again (once the budget's threshold or the fleet moved far) is done at
#: most once per this share of the time the budget takes to read the fleet once (``N / R``).
_REPLAN_SHARE = 0.25
#: Share of a pacer slot a read may start late and keep its place on the pace.
_PACE_LAG = 0.5


@dataclass(slots=True)
class MonitorStats:
    """What a monitor did (counts only)."""

    #: Readings received (from a request or the client's cache).
    reads: int = 0
    #: Reads that failed (transport, server, rate limit), each retried later.
    errors: int = 0
    #: Events emitted, by kind.
    events: Counter[str] = field(default_factory=Counter)
    #: Low-data webhooks fed in for tracked eSIMs.
    webhooks: int = 0
    #: Batches written to the store.
    flushes: int = 0
    #: Times this monitor took the lease (1 for a monitor that ran alone).
    leases: int = 0
    #: Times the eSIM states were loaded from the store.
    loads: int = 0
    #: Events dropped from the front of a full queue nobody was taking from (with a store,
    #: they are still in it).
    events_dropped: int = 0
    #: Batches the store refused (locked, disk full...), each kept and written with the next.
    store_errors: int = 0


@dataclass(frozen=True, slots=True)
class TrackedSim:
    """What the monitor knows about one eSIM (:meth:`FleetMonitor.snapshot`).

    Attributes:
        iccid: the eSIM.
        usage: its last reading (``None`` before the first).
        read_at: when that reading came in (UTC), or ``None``.
        next_read: when it is next worth reading (UTC), or ``None`` if never (404, recycled)
            or while a read is in flight.
        burn_rate: the EWMA of its speed while it uses data, MB/s.
        upper_rate: the optimistic speed its schedule assumes, MB/s (``None``: unknown yet).
        fired: the thresholds already reported for its current package.
        missing: the provider answered 404.
    """

    iccid: str
    usage: Usage | None
    read_at: datetime | None
    next_read: datetime | None
    burn_rate: float
    upper_rate: float | None
    fired: tuple[float, ...]
    missing: bool


class _LeaseLost(Exception):
    """Another monitor took the lease over."""


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class FleetMonitor:
    """Watches the usage of a fleet of eSIMs and reports threshold crossings, status changes,
    exhaustion and coming expiries as :class:`UsageEvent` values (an example and the policy
    are in :mod:`esim_async.monitor`).

    Args:
        client: an :class:`~esim_async.AiraloClient` or :class:`~esim_async.PressOneClient`.
            Its cache TTL, usage limits and clock set every interval and the budget.
        thresholds: fractions of data used to report (ascending, in (0, 1], at most 16).
        store: ``None`` (in memory) or the path of an SQLite file that keeps readings,
            estimates, schedule and emitted events across restarts.
        share: the fraction of the company (and sandbox account) limit the monitor may use.
        expiring_within: how long before ``expired_at`` an ``expiring`` event fires.
        lock: the lease that keeps one monitor per account running: through Redis by default
            when the client has a Redis backend (:class:`~esim_async.monitor.RedisMonitorLock`
            on its connection pool), in process otherwise.
        cache_ttl, clock: stand-ins for a client without ``config`` (its values otherwise).
        max_in_flight: reads in flight at once (default: adapted between 2 and 16 to keep the
            budget busy while every choice is made at the moment a read can start).
        max_queued_events: events kept for :meth:`events` while nobody takes them; past it the
            oldest are dropped (counted in ``stats.events_dropped``, logged once per overflow),
            so a monitor whose events nobody reads does not grow without bound.
    """

    def __init__(
        self,
        client: BaseClient,
        thresholds: Iterable[float] = (0.75, 0.9),
        store: str | os.PathLike[str] | None = None,
        *,
        share: float = 1.0,
        expiring_within: timedelta | float = timedelta(days=3),
        lock: MonitorLock | None = None,
        cache_ttl: float | None = None,
        clock: Clock | None = None,
        max_in_flight: int | None = None,
        max_queued_events: int = 10_000,
    ) -> None:
        marks = tuple(sorted({float(t) for t in thresholds}))
        if len(marks) > 16 or any(not (0.0 < t <= 1.0) for t in marks):
            raise ValueError("thresholds are at most 16 fractions of data used, each in (0, 1]")
        if not (0.0 < share <= 1.0):
            raise ValueError("share is the fraction of the budget to use, in (0, 1]")
        if isinstance(expiring_within, timedelta):
            expiring_within = expiring_within.total_seconds()
        window = float(expiring_within)
        if window < 0:
            raise ValueError("expiring_within must be >= 0")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        if max_queued_events < 1:
            raise ValueError("max_queued_events must be >= 1")
        self._client = client
        self._view: ClientView = read_client(client, cache_ttl=cache_ttl, clock=clock)
        self._clock: Clock = self._view.clock
        self._wall = wall_clock(self._clock)
        self.thresholds = marks
        self.share = share
        self._timing = Timing(unit=self._view.unit, expiring_within=window)
        self._store = SqliteStore(store) if store is not None else None
        backend = getattr(getattr(client, "config", None), "backend", None)
        self._lock: MonitorLock = lock if lock is not None else default_lock(backend)
        self._fixed_in_flight = max_in_flight
        self._in_flight = max_in_flight or _MIN_IN_FLIGHT
        self._sims: dict[str, SimState] = {}
        self._schedule = Schedule()
        self._prior = FleetPrior(self._timing.unit)
        #: How the reads per second are shared out (see ``estimator.Budget``).
        self._shares = Budget()
        #: What every due time was last planned with, and when (see ``_replan``).
        self._planned: tuple[float, float] = (0.0, 0.0)
        self._planned_at = -math.inf
        self._tuned_at = -math.inf
        self._loaded = False
        self._load_lock = asyncio.Lock()
        self._stop_lock = asyncio.Lock()
        self._writer_id = secrets.token_hex(8)
        self._generation = 0
        #: (writer, generation) of the store as this monitor last loaded or wrote it.
        self._seen: tuple[Any, Any] = (None, None)
        self._queue: deque[UsageEvent] = deque()
        self._max_queued = max_queued_events
        self._overflowing = False
        self._consumers: set[asyncio.Future[None]] = set()
        self._dirty: set[SimState] = set()
        self._pending: list[StoredEvent] = []
        self._flush_lock = asyncio.Lock()
        self._store_failing = False
        self._reads: set[asyncio.Task[None]] = set()
        self._reading: dict[str, SimState] = {}
        #: eSIMs whose low-data webhook came while a read of them was in flight.
        self._fed: set[str] = set()
        self._runner: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._writer_wakeup: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None
        self._running = False
        self._active = False
        self._ended = False
        self._blocked = 0
        self.stats = MonitorStats()

    def __repr__(self) -> str:
        return (
            f"FleetMonitor(tracked={len(self._sims)}, thresholds={self.thresholds!r}, "
            f"store={self._store!r}, active={self._active})"
        )

    def __len__(self) -> int:
        return len(self._sims)

    def __contains__(self, iccid: object) -> bool:
        return iccid in self._sims

    @property
    def active(self) -> bool:
        """True while this monitor holds the lease and reads (False on a standby)."""
        return self._active

    @property
    def lock(self) -> MonitorLock:
        """The lease this monitor takes before it reads (see :mod:`esim_async.monitor.lock`)."""
        return self._lock

    @property
    def unit(self) -> float:
        """The shortest gap between two reads of one eSIM, from the client's cache TTL and
        per-eSIM limit: every interval of the monitor is a multiple of it."""
        return self._timing.unit

    # ------------------------------------------------------------------ tracking

    async def _validated(self, iccids: Iterable[str] | AsyncIterable[str]) -> list[str]:
        """Every ICCID checked, once each, in order (a single string is one ICCID)."""
        if isinstance(iccids, AsyncIterable):
            items = [i async for i in iccids]
        else:
            items = [iccids] if isinstance(iccids, str) else list(iccids)
        lo, hi = self._view.iccid_length
        return list(dict.fromkeys(validate_iccid(i, min_length=lo, max_length=hi) for i in items))

    async def track(self, iccids: Iterable[str] | AsyncIterable[str]) -> int:
        """Start watching ``iccids`` (any iterable or async iterable; a single ICCID string is
        one eSIM). Every ICCID is checked first: a malformed one raises
        :class:`~esim_async.errors.InvalidIccidError` and nothing is tracked. Tracking an eSIM
        again changes nothing. New eSIMs get a first read early, and are stored at once when
        the monitor has a store. Returns how many were new."""
        valid = await self._validated(iccids)
        try:
            await self._ensure_loaded()
            now = self._clock.now()
            fresh: list[SimState] = []
            for iccid in valid:
                if iccid not in self._sims:
                    state = SimState(iccid, now)
                    self._sims[iccid] = state
                    self._schedule.push(state)
                    fresh.append(state)
            if fresh and self._store is not None:
                wall_now = self._wall()
                try:
                    await self._store.add((s.iccid, self._stored(s, now, wall_now)) for s in fresh)
                except BaseException:
                    # Not stored, not tracked: the same call can be made again.
                    for state in fresh:
                        if self._sims.get(state.iccid) is state:
                            del self._sims[state.iccid]
                            state.tracked = False
                            self._schedule.remove(state)
                    raise
        finally:
            await self._release_store()
        _wake(self._wakeup)
        return len(fresh)

    async def untrack(self, iccids: Iterable[str] | AsyncIterable[str]) -> int:
        """Stop watching ``iccids`` (unknown ones are ignored); they are removed from the
        store (if the store refuses, the error is raised and they stay tracked: the call can be
        made again). A read in flight finishes unseen. Returns how many were tracked."""
        valid = await self._validated(iccids)
        try:
            await self._ensure_loaded()
            gone = [iccid for iccid in valid if iccid in self._sims]
            if gone and self._store is not None:
                # Out of the store first: if it refuses, nothing changed and the same call
                # can be made again.
                await self._store.remove(gone)
            removed = 0
            for iccid in gone:
                state = self._sims.pop(iccid, None)
                if state is None:
                    continue  # untracked meanwhile by another call
                removed += 1
                state.tracked = False
                self._fed.discard(iccid)
                self._forget(state)
                self._schedule.remove(state)
                self._dirty.discard(state)
        finally:
            await self._release_store()
        return removed

    def tracked(self) -> list[str]:
        """The ICCIDs tracked, in the order they were first tracked."""
        return list(self._sims)

    def snapshot(self, iccid: str) -> TrackedSim | None:
        """What the monitor knows about ``iccid`` (``None`` if it is not tracked)."""
        state = self._sims.get(iccid)
        if state is None:
            return None
        now, wall_now = self._clock.now(), self._wall()

        def at(t: float) -> datetime | None:
            return datetime.fromtimestamp(wall_now + (t - now), UTC) if math.isfinite(t) else None

        return TrackedSim(
            iccid=iccid,
            usage=state.usage,
            read_at=at(state.read_at),
            next_read=at(state.eligible_at if state.urgent else state.due) if state.token else None,
            burn_rate=state.rate,
            upper_rate=upper_rate(state, self._prior, self._timing.unit),
            fired=tuple(t for i, t in enumerate(self.thresholds) if state.fired & (1 << i)),
            missing=state.missing,
        )

    # ------------------------------------------------------------------ webhooks

    async def feed(self, event: WebhookEvent) -> None:
        """Take in a webhook notification (wire it as ``webhook_app(..., on_event=
        monitor.feed)``, or call it from your own handler).

        A low-data notification for a tracked eSIM is reported at once as a ``low_data``
        event, and the eSIM is read as soon as its cache allows, ahead of everything else.
        Other notifications, and eSIMs not tracked, are ignored.
        """
        from ..webhooks import LowDataEvent

        if not isinstance(event, LowDataEvent):
            return
        state = self._sims.get(event.iccid)
        if state is None:
            return
        self.stats.webhooks += 1
        level = event.level
        threshold = None
        if level is not None and level.strip().endswith("%"):
            with contextlib.suppress(ValueError):
                threshold = float(level.strip()[:-1]) / 100.0
        self._emit_about(state, "low_data", threshold=threshold, level=level)
        with contextlib.suppress(RuntimeError):
            self._client.sims.invalidate_usage(state.iccid)
        if state.iccid in self._reading:
            # The read in flight may carry an answer from before the notification: the eSIM
            # goes to the front once it has landed (see ``_read``).
            self._fed.add(state.iccid)
        else:
            self._hurry(state)
        _wake(self._wakeup)

    def _hurry(self, state: SimState) -> None:
        """Read ``state`` ahead of everything else as soon as its cache allows."""
        state.urgent = True
        state.missing = False
        self._schedule.push(state)
        self._dirty.add(state)

    # ------------------------------------------------------------------ events

    async def events(self) -> AsyncIterator[UsageEvent]:
        """The events, in the order they were found. The iteration ends once the monitor has
        stopped (left ``async with``) and every event was taken; if the monitor failed, it
        raises that error."""
        loop = asyncio.get_running_loop()
        while True:
            queue = self._queue
            while queue:
                yield queue.popleft()
            if self._failure is not None:
                raise self._failure
            if self._ended:
                return
            waiter: asyncio.Future[None] = loop.create_future()
            self._consumers.add(waiter)
            try:
                await waiter
            finally:
                self._consumers.discard(waiter)

    def _emit(self, event: UsageEvent) -> None:
        queue = self._queue
        if not queue:
            self._overflowing = False  # taken up to here: a new overflow is logged again
        elif len(queue) >= self._max_queued:
            queue.popleft()
            self.stats.events_dropped += 1
            if not self._overflowing:
                self._overflowing = True
                logger.warning(
                    "fleet monitor: %d events queued and none taken; dropping the oldest",
                    len(queue) + 1,
                )
        queue.append(event)
        self.stats.events[event.kind] += 1
        self._wake_consumers()
        if self._store is not None:
            row = (event.iccid, event.kind, event.threshold, event.detected_at.timestamp())
            self._pending.append(StoredEvent(*row, event.usage))
            _wake(self._writer_wakeup)

    def _emit_about(self, state: SimState, kind: EventKind, **extra: Any) -> None:
        """Report ``kind`` about ``state`` without a new reading (its last one as previous)."""
        at, wall = self._clock.now(), datetime.fromtimestamp(self._wall(), UTC)
        self._emit(UsageEvent(state.iccid, kind, None, state.usage, wall, at=at, **extra))

    def _wake_consumers(self) -> None:
        for waiter in self._consumers:
            _wake(waiter)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Run in the background (the lease first: a second monitor of the account waits as a
        standby). Called by ``async with``."""
        if self._running:
            return
        self._running = True
        try:
            await self._ensure_loaded()
        except BaseException:
            self._running = False
            await self._release_store()
            raise
        self._ended = False
        self._failure = None
        self._runner = asyncio.create_task(self._run(), name="esim_async monitor")

    async def aclose(self) -> None:
        """The same as :meth:`stop`."""
        await self.stop()

    async def stop(self) -> None:
        """Stop reading, write what is pending to the store and give the lease up; every task
        of the monitor has ended when this returns. Idempotent; a second call made while the
        first is under way returns when the first does."""
        async with self._stop_lock:
            runner, self._runner = self._runner, None
            if runner is not None:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
            self._running = False
            self._ended = True
            self._wake_consumers()
            if self._store is not None:
                # Events reported while standing by (a webhook fed in) were never written.
                await self._flush_events()
                if self._store_failing and self._pending:
                    logger.error(
                        "fleet monitor: %d events could not be written to the store",
                        len(self._pending),
                    )
                await self._store.close()

    async def _run(self) -> None:
        name = f"{self._view.account_name}:monitor"
        ttl = self._timing.unit / 4
        try:
            while True:
                await self._lock.acquire(name, ttl, self._clock)
                raise_if_cancelled()
                lost = False
                try:
                    self.stats.leases += 1
                    await self._reload_if_changed()
                    self._active = True
                    self._schedule.rebuild(self._sims.values())
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._dispatch(), name="esim_async monitor dispatch")
                        group.create_task(self._write_behind(), name="esim_async monitor store")
                        group.create_task(self._keep_lease(name, ttl), name="esim_async lease")
                except* _LeaseLost:
                    lost = True
                    logger.warning("fleet monitor: the lease was taken over; standing by")
                finally:
                    self._active = False
                    await self._settle_reads()
                    await self._flush()
                    if not lost:
                        await self._lock.release(name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure: BaseException = exc
            if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                failure = exc.exceptions[0]
            self._failure = failure
            self._ended = True
            self._wake_consumers()
            logger.exception("fleet monitor failed")

    async def _keep_lease(self, name: str, ttl: float) -> None:
        while True:
            await self._clock.sleep(ttl / 3)
            renewed = await self._lock.renew(name, ttl)
            raise_if_cancelled()
            if not renewed:
                raise _LeaseLost

    async def _settle_reads(self) -> None:
        """Cancel the reads in flight and put their eSIMs back in the schedule."""
        reads = list(self._reads)
        for task in reads:
            task.cancel()
        if reads:
            await asyncio.gather(*reads, return_exceptions=True)

    # ------------------------------------------------------------------ loading and storing

    async def _ensure_loaded(self) -> None:
        """Open the store (while running, or for one call) and load it once."""
        async with self._load_lock:
            if self._store is not None:
                await self._store.open()
                if not self._loaded:
                    await self._load()
            self._loaded = True

    async def _release_store(self) -> None:
        """Close the store after a call made while not running (its thread would outlive
        the program otherwise)."""
        if self._store is not None and not self._running:
            await self._store.close()

    async def _reload_if_changed(self) -> None:
        """On taking the lease: reload if another monitor wrote the store since we read it."""
        store = self._store
        if store is None:
            return
        await self._ensure_loaded()
        meta = await store.load_meta()
        if (meta.get("writer"), meta.get("generation")) != self._seen:
            await self._load()

    async def _load(self) -> None:
        store = self._store
        assert store is not None
        rows, meta = await store.load()
        now, wall_now = self._clock.now(), self._wall()
        written = meta.get("written_at")
        if isinstance(written, int | float) and math.isfinite(written):
            # Written on a wall clock ahead of ours (another host, or ours stepped back): the
            # stored times count from the moment it was written, not from a wait for the skew.
            wall_now = max(wall_now, float(written))

        def mono(t: float | None, default: float) -> float:
            return default if t is None else now - (wall_now - t)

        remap = self._fired_remap(meta.get("thresholds"))

        sims: dict[str, SimState] = {}
        for iccid, row in rows:
            state = SimState(iccid, now, **{name: getattr(row, name) for name in _KEPT})
            state.read_at = mono(row.read_at, -math.inf)
            state.eligible_at = mono(row.eligible_at, now)
            state.due = mono(row.due, math.inf)
            if row.read_at is None and not row.missing:
                state.due = now  # never read: a first read early
            state.since = mono(row.since, now)
            state.known = (row.known_low, row.known_high)
            state.fired = remap(row.fired)
            sims[iccid] = state
        # eSIMs tracked here and not stored yet keep their state.
        for iccid, state in self._sims.items():
            if iccid not in sims and state.tracked:
                sims[iccid] = state
        for state in self._sims.values():
            if sims.get(state.iccid) is not state:
                state.tracked = False
        self._sims = sims
        self._recount()
        if "prior" in meta:
            self._prior = FleetPrior.from_dict(meta["prior"], self._timing.unit)
        self._dirty = {s for s in self._dirty if s.tracked}
        self._schedule = Schedule()
        for state in sims.values():
            self._schedule.push(state)
        generation = meta.get("generation")
        self._generation = generation if isinstance(generation, int) else 0
        self._seen = (meta.get("writer"), meta.get("generation"))
        self.stats.loads += 1

    def _fired_remap(self, stored: object) -> Callable[[int], int]:
        """How a stored fired set reads with this monitor's thresholds: by value, when the
        store was written with other ones (a threshold added or removed between runs)."""
        marks = self.thresholds
        if not isinstance(stored, list | tuple) or tuple(stored) == marks:
            return lambda fired: fired
        position = {t: i for i, t in enumerate(marks)}
        moves = [
            (1 << old, 1 << position[t])
            for old, t in enumerate(stored)
            if isinstance(t, int | float) and t in position and old < 16
        ]

        def remap(fired: int) -> int:
            kept = fired & ~THRESHOLD_BITS
            for old, new in moves:
                if fired & old:
                    kept |= new
            return kept

        return remap

    def _stored(self, state: SimState, now: float, wall_now: float) -> StoredSim:
        fields: dict[str, Any] = {name: getattr(state, name) for name in _KEPT}
        for name in _TIMES:
            t = getattr(state, name)
            fields[name] = wall_now + (t - now) if math.isfinite(t) else None
        low, high = state.known
        return StoredSim(**fields, fired=state.fired, known_low=low, known_high=high)

    async def _flush(self) -> None:
        """Write the changed eSIMs and the new events in one transaction."""
        store = self._store
        if store is None or not store.is_open:
            self._dirty.clear()
            return
        async with self._flush_lock:
            if not self._dirty and not self._pending:
                return
            now, wall_now = self._clock.now(), self._wall()
            changed = [s for s in self._dirty if s.tracked]
            rows = [(s.iccid, encode_sim(self._stored(s, now, wall_now))) for s in changed]
            events, self._pending = self._pending, []
            self._dirty = set()
            generation = self._generation + 1
            meta = {
                "prior": self._prior.to_dict(),
                "writer": self._writer_id,
                "generation": generation,
                "written_at": wall_now,
                "thresholds": list(self.thresholds),
            }
            # The batch left ``_dirty`` and ``_pending``: it is written whole even when the
            # writer is cancelled half-way (a stop), or its events and rows would be lost.
            save = asyncio.ensure_future(store.save(rows, events, meta))
            try:
                await asyncio.shield(save)
            except asyncio.CancelledError:
                try:
                    await save
                except Exception:
                    logger.exception("fleet monitor: writing the last batch to the store failed")
                else:
                    self._saved(generation)
                raise
            except _STORE_ERRORS as exc:
                # The file is locked by another process, the disk is full...: the batch goes
                # back and is written with the next one; reading goes on.
                self._dirty.update(s for s in changed if s.tracked)
                self._pending[:0] = events
                self.stats.store_errors += 1
                if not self._store_failing:
                    self._store_failing = True
                    logger.warning(
                        "fleet monitor: writing to the store failed (%s: %s); retried with "
                        "the next batch",
                        type(exc).__name__,
                        exc,
                    )
                return
            self._saved(generation)

    async def _flush_events(self) -> None:
        """Write the events not written yet, and nothing else: a standby's eSIM rows and
        meta values are older than those of the monitor that reads."""
        store = self._store
        if store is None or not store.is_open or not self._pending:
            return
        async with self._flush_lock:
            events, self._pending = self._pending, []
            try:
                await store.save((), events, {})
            except _STORE_ERRORS:
                self._pending[:0] = events
                self._store_failing = True
                self.stats.store_errors += 1

    def _saved(self, generation: int) -> None:
        """A batch of ours is in the store."""
        self._generation = generation
        self._seen = (self._writer_id, generation)
        self._store_failing = False
        self.stats.flushes += 1

    async def _write_behind(self) -> None:
        """Flush every unit of time, or sooner after an event or many changed rows."""
        loop = asyncio.get_running_loop()
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            self._writer_wakeup = waiter
            await self._sleep(self._timing.unit, waiter)
            self._writer_wakeup = None
            await self._flush()

    # ------------------------------------------------------------------ the scheduler

    def _recount(self) -> None:
        """Recompute the budget's sums over the tracked eSIMs."""
        budget = self._shares
        budget.tracked = len(self._sims)
        budget.demand = sum(s.share for s in self._sims.values())
        budget.roots = sum(s.root for s in self._sims.values())

    def _forget(self, state: SimState) -> None:
        """Take ``state``'s parts out of the budget's sums."""
        budget = self._shares
        budget.demand -= state.share
        budget.roots -= state.root
        state.share = state.root = 0.0

    def _adapt_in_flight(self, waiters: int) -> None:
        """Keep just enough reads in flight: one more when reads were held back by the cap
        while none waited for budget (the round trip is the limit), one fewer when several
        wait in the limiter (they would only be stale choices)."""
        if self._fixed_in_flight is not None:
            return
        if waiters == 0 and self._blocked > 0:
            self._in_flight = min(_MAX_IN_FLIGHT, self._in_flight + 1)
        elif waiters > 1:
            self._in_flight = max(_MIN_IN_FLIGHT, self._in_flight - 1)
        self._blocked = 0

    async def _sleep(self, delay: float | None, waiter: asyncio.Future[None]) -> None:
        """Wait ``delay`` seconds of the clock (``None``: no limit) or until ``waiter`` is
        woken, whichever comes first."""
        if delay is None or not math.isfinite(delay):
            await waiter
            return
        if delay <= 0:
            await asyncio.sleep(0)
            return
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        try:
            await asyncio.wait((sleeper, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            if not waiter.done():
                waiter.cancel()

    async def _dispatch(self) -> None:
        # Reads start evenly, one per ``1 / R``: a read timed on a predicted crossing then
        # starts at its moment, not at the next burst the limit would allow. A start half a
        # slot late keeps its place (at most one start more than ``R`` in any second: the
        # client's margin covers it). The budget is looked at again once per burst the limit
        # allows.
        clock, loop = self._clock, asyncio.get_running_loop()
        pacer = Pacer(math.inf, lag=_PACE_LAG)

        def rebudget() -> int:
            """Take the budget's rate now; returns the starts until it is looked at again."""
            limiter = self._client.rate_limit_state().get("usage")
            self._adapt_in_flight(limiter.waiters if limiter is not None else 0)
            effective = limiter.effective_per_second if limiter is not None else None
            per_second, burst = self._view.budget(self.share, effective)
            pacer.set_rate(per_second, 1)
            self._shares.per_second = pacer.per_second
            return burst if pacer.limited else 64

        refresh_every, started = rebudget(), 0
        while True:
            schedule = self._schedule
            waiter: asyncio.Future[None] = loop.create_future()
            self._wakeup = waiter
            now = clock.now()
            if len(self._reads) >= self._in_flight:
                self._blocked += 1
                await self._sleep(None, waiter)
                continue
            ready = pacer.ready_at(now)
            if ready > now:
                await self._sleep(ready - now, waiter)
                continue
            state = schedule.pick(now, spare=pacer.limited)
            if state is None:
                await self._sleep(schedule.next_time(now, spare=pacer.limited) - now, waiter)
                continue
            pacer.started(now)
            self._start_read(state)
            started += 1
            if started % refresh_every == 0:
                refresh_every = rebudget()
            if len(schedule) > 3 * len(self._sims) + 64:
                schedule.rebuild(self._sims.values())

    def _start_read(self, state: SimState) -> None:
        self._reading[state.iccid] = state
        self._reads.add(asyncio.create_task(self._read(state)))

    async def _read(self, state: SimState) -> None:
        sims = self._client.sims
        iccid = state.iccid
        try:
            usage = await sims.usage(iccid, priority=Priority.BULK)
            if usage is state.usage:
                # Our own reading from the client's cache: it outlived the unit.
                usage = await sims.usage(iccid, priority=Priority.BULK, refresh=True)
        except asyncio.CancelledError:
            self._requeue(state)
            raise
        except NotFoundError:
            self._on_missing(state)
        except EsimError as exc:
            retry_after = exc.retry_after if isinstance(exc, RateLimitedError) else None
            self._on_error(state, exc, retry_after)
        except Exception as exc:  # a bug or an unexpected failure: logged, retried later
            logger.exception("fleet monitor: reading %s raised", iccid)
            self._on_error(state, exc, None)
        else:
            self._on_reading(state, usage)
        finally:
            self._reading.pop(iccid, None)
            if iccid in self._fed:
                self._fed.discard(iccid)
                if state.tracked:
                    self._hurry(state)
            task = asyncio.current_task()
            if task is not None:
                self._reads.discard(task)
            _wake(self._wakeup)

    def _requeue(self, state: SimState) -> None:
        if state.tracked and not state.token:
            self._schedule.push(state)

    def _on_reading(self, state: SimState, usage: Usage) -> None:
        if not state.tracked:
            return
        self.stats.reads += 1
        clock, timing = self._clock, self._timing
        now, wall_now = clock.now(), self._wall()
        observe(state, usage, now, self._prior, timing.unit)
        if self.stats.reads % 32 == 0:
            self._prior.refresh()
        events, state.fired = detect(
            state.iccid,
            state.usage,
            usage,
            state.fired,
            self.thresholds,
            now_wall=wall_now,
            detected_at=datetime.fromtimestamp(wall_now, UTC),
            expiring_within=timing.expiring_within,
            at=now,
        )
        state.usage = usage
        state.read_at = now
        state.fails = 0
        state.missing = False
        state.urgent = False
        state.eligible_at = now + timing.unit
        budget = self._shares
        budget.tracked = len(self._sims)
        self._forget(state)
        state.due = plan(state, now, wall_now, timing, self._prior, self.thresholds, budget)
        budget.demand += state.share
        budget.roots += state.root
        self._schedule.push(state)
        self._mark(state)
        for event in events:
            self._emit(event)
        if now - self._tuned_at >= timing.unit:
            self._tuned_at = now
            budget.tune(timing.unit)
        # Planning the whole fleet again costs what reading it does: at most once per
        # ``_REPLAN_SHARE`` of the time the budget takes to read it once.
        if now - self._planned_at >= max(timing.unit, _REPLAN_SHARE * budget.period(timing.unit)):
            signature = (budget.threshold(timing.unit), budget.period(timing.unit))
            if any(
                new > 1.5 * old or new < old / 1.5
                for new, old in zip(signature, self._planned, strict=True)
            ):
                self._replan(now, wall_now, signature)

    def _replan(self, now: float, wall_now: float, signature: tuple[float, float]) -> None:
        """The budget's shares moved far from those the due times were planned with (the
        first sweep of a fleet, a change of budget or fleet size): plan every eSIM again."""
        self._planned, self._planned_at = signature, now
        timing, prior, thresholds = self._timing, self._prior, self.thresholds
        budget = self._shares
        for state in self._sims.values():
            if state.token and state.usage is not None and not state.urgent:
                state.due = plan(state, now, wall_now, timing, prior, thresholds, budget)
        self._recount()
        self._schedule.rebuild(self._sims.values())

    def _on_missing(self, state: SimState) -> None:
        if not state.tracked:
            return
        self.stats.reads += 1
        now = self._clock.now()
        first = not state.missing
        state.missing = True
        state.urgent = False
        state.read_at = now
        state.eligible_at = now + self._timing.unit
        state.due = math.inf
        self._forget(state)
        self._mark(state)
        if first:
            self._emit_about(state, "not_found")

    def _on_error(self, state: SimState, exc: Exception, retry_after: float | None) -> None:
        if not state.tracked:
            return
        self.stats.errors += 1
        timing = self._timing
        state.fails += 1
        backoff = min(timing.unit * 2 ** min(state.fails - 1, 16), timing.unit * HORIZON_UNITS)
        now = self._clock.now()
        state.eligible_at = now + max(backoff, retry_after or 0.0)
        state.due = max(state.due, state.eligible_at)
        self._schedule.push(state)
        self._mark(state)
        logger.debug("fleet monitor: reading %s failed (%s); retried later", state.iccid, exc)

    def _mark(self, state: SimState) -> None:
        if self._store is None:
            return
        self._dirty.add(state)
        if len(self._dirty) >= _FLUSH_ROWS:
            _wake(self._writer_wakeup)

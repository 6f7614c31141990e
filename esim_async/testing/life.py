"""Fleet life: make an emulated fleet use its data over time, as real users do.

:class:`FleetLife` drives an :class:`~esim_async.testing.Emulator`'s fleet through its public
API (``emu.fleet`` and ``emu.set_usage``): heterogeneous speeds, usage in bursts (online
sessions, then pauses), some eSIMs idle, some installed later, finished, topped up. It records
the exact clock time at which each eSIM's data (as the emulator reports it, whole MB) crossed
each threshold, the ground truth to measure a monitor's detection delay against.

The model is analytic: each eSIM's usage is a piecewise-linear function of time, advanced only
when asked (:meth:`FleetLife.sync`), so the recorded crossing times are exact whatever the pace
of the updates. Use it

- in tests, with an injected clock: move the clock, then call ``life.sync()``;
- live: ``async with life.running(interval):`` updates the whole fleet every ``interval``
  seconds of the clock in the background;
- exact on every read: ``life.attach()`` brings an eSIM up to date each time a usage request
  for it reaches the emulator (before the emulator's cache and limits see it).

Durations in :class:`LifeProfile` are in *fleet* seconds; ``time_scale`` fleet seconds pass per
second of the clock, so ``time_scale=1440`` runs a day of fleet life in a minute.

Example::

    async with Emulator(fleet=Fleet.generate(200), cache_ttl=1.0) as emu:
        life = FleetLife(emu, time_scale=1200, seed=1)
        life.attach()
        async with life.running(0.5):
            ...  # poll emu.url; the fleet drains
        print(len(life.crossings), "threshold crossings")

The emulator's server cache (``Emulator(cache_ttl=...)``) keeps answering a cached body until
it expires, as the providers' does, so a crossing shows in answers at most one TTL later.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from .clock import Clock, utc_now
from .fleet import stamp

__all__ = ["Crossing", "FleetLife", "LifeProfile", "Transition"]

Mode = Literal["bursty", "idle", "waiting", "finished", "static"]

_M64 = (1 << 64) - 1


class _Emulator(Protocol):
    """What :class:`FleetLife` uses of an emulator."""

    @property
    def fleet(self) -> Any: ...

    @property
    def clock(self) -> Any: ...

    on_request: Any

    def set_usage(self, iccid: str, **fields: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class LifeProfile:
    """How a fleet lives (durations in fleet seconds).

    Attributes:
        drain_90: range of the online time an eSIM needs to use 90 % of its package; each
            eSIM draws its own, log-uniformly (2.4 hours to 25 days by default: 250x apart).
        session: mean length of an online session (exponential).
        pause: mean pause between sessions (exponential).
        idle_share: share of active eSIMs that use no data at all.
        install_share: share of NOT_ACTIVE eSIMs installed during the run ...
        install_after: ... after this mean time (exponential); they then use data.
        topup_share: share of eSIMs that buy a top-up when their data runs out ...
        topup_after: ... after this mean time (exponential): a new package of the same size,
            valid ``topup_validity`` from then (its ``expired_at`` moves).
        thresholds: fractions of data used whose crossings are recorded (1.0: exhausted).
    """

    drain_90: tuple[float, float] = (8_640.0, 2_160_000.0)
    session: float = 7_200.0
    pause: float = 14_400.0
    idle_share: float = 0.2
    install_share: float = 0.5
    install_after: float = 86_400.0
    topup_share: float = 0.3
    topup_after: float = 43_200.0
    topup_validity: float = 30 * 86_400.0
    thresholds: tuple[float, ...] = (0.75, 0.9, 1.0)


@dataclass(frozen=True, slots=True)
class Crossing:
    """The emulator's data for ``iccid`` reached ``threshold`` (fraction used) at ``at``
    (clock time), in its ``package`` (0: the one it started with, +1 per top-up)."""

    iccid: str
    threshold: float
    at: float
    package: int


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state: ``installed``, ``finished`` or ``topup``, at clock time ``at``."""

    iccid: str
    kind: Literal["installed", "finished", "topup"]
    at: float
    package: int


def _mix(x: int) -> int:
    """splitmix64: a cheap, well-spread hash (one random stream per eSIM, no objects)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


@dataclass(slots=True, eq=False)
class _Sim:
    """One eSIM's life: its own random stream (``key``, ``draws``) and state at clock time ``t``."""

    iccid: str
    key: int
    t: float
    draws: int = 0
    mode: Mode = "static"
    online: bool = False
    switch_at: float = math.inf
    speed: float = 0.0
    used: float = 0.0
    total: int = 0
    package: int = 0
    status: str = ""
    install_at: float = math.inf
    topup_at: float = math.inf
    #: Whole MB of use at which each recorded threshold is reached, for the package.
    marks: list[tuple[float, int]] = field(default_factory=list)
    #: ``expired_at`` as the emulator reports it.
    expires: str | None = None
    #: (remaining, total, status, expired_at) as last given to the emulator.
    shown: tuple[int, int, str, str | None] = (0, 0, "", None)

    def uniform(self) -> float:
        self.draws += 1
        return ((_mix(self.key + self.draws) >> 11) + 0.5) / float(1 << 53)


def _marks(total: int, thresholds: tuple[float, ...]) -> list[tuple[float, int]]:
    """For each threshold, the least whole MB used whose fraction reaches it."""
    out = []
    for t in thresholds:
        k = max(0, math.ceil(t * total))
        while k > 0 and (k - 1) / total >= t:
            k -= 1
        while k / total < t:
            k += 1
        out.append((t, k))
    return out


class FleetLife:
    """Drives an emulator's fleet over time; see :mod:`esim_async.testing.life`.

    Args:
        emulator: the :class:`~esim_async.testing.Emulator` whose fleet lives.
        profile: how the fleet lives (:class:`LifeProfile`).
        seed: the same seed, fleet and profile give the same life.
        time_scale: fleet seconds per second of the clock.
        clock: the clock life runs on (the emulator's by default).

    Attributes:
        crossings: every threshold crossing so far, in the order they were found.
        transitions: installations, exhaustions and top-ups so far.
    """

    def __init__(
        self,
        emulator: _Emulator,
        *,
        profile: LifeProfile | None = None,
        seed: int = 0,
        time_scale: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        if time_scale <= 0 or not math.isfinite(time_scale):
            raise ValueError("time_scale must be a finite number > 0")
        self.emulator = emulator
        self.profile = profile if profile is not None else LifeProfile()
        self.time_scale = time_scale
        self.clock: Clock = clock if clock is not None else emulator.clock
        self.crossings: list[Crossing] = []
        self.transitions: list[Transition] = []
        self._hook: Callable[[str, Any], None] | None = None
        self._previous_hook: Callable[[str, Any], None] | None = None
        start = self.clock.now()
        self.started_at = start
        generated = getattr(emulator.fleet, "generated_at", None)
        #: The fleet's wall time (UTC) at the start: dates move ``time_scale`` times faster.
        self.epoch: datetime = generated if generated is not None else utc_now()
        self._sims: dict[str, _Sim] = {}
        for record in emulator.fleet.sims.values():
            key = _mix((seed & _M64) ^ _mix(int(record.iccid) & _M64))
            sim = _Sim(record.iccid, key, start)
            self._setup(sim, record)
            self._sims[sim.iccid] = sim

    # ------------------------------------------------------------------ set-up

    def _scaled(self, fleet_seconds: float) -> float:
        return fleet_seconds / self.time_scale

    def _stamp(self, t: float) -> str:
        """Clock time ``t`` as a fleet date in the API's format."""
        return stamp(self.epoch + timedelta(seconds=(t - self.started_at) * self.time_scale))

    def _exp(self, sim: _Sim, mean: float) -> float:
        return -self._scaled(mean) * math.log(sim.uniform())

    def _draw_speed(self, sim: _Sim) -> None:
        lo, hi = self.profile.drain_90
        drain = lo * (hi / lo) ** sim.uniform() if hi > lo else lo
        # MB per second of the clock: 90 % of the package in ``drain`` fleet seconds online.
        sim.speed = 0.9 * sim.total / self._scaled(drain) if sim.total else 0.0

    def _go_bursty(self, sim: _Sim, t: float) -> None:
        p = self.profile
        sim.mode = "bursty"
        sim.online = sim.uniform() < p.session / (p.session + p.pause)
        sim.switch_at = t + self._exp(sim, p.session if sim.online else p.pause)

    def _setup(self, sim: _Sim, record: Any) -> None:
        p = self.profile
        sim.total = int(record.total or 0)
        sim.used = float(max(0, sim.total - int(record.remaining or 0)))
        sim.status = str(record.status)
        sim.expires = record.expired_at
        sim.shown = (int(record.remaining or 0), sim.total, sim.status, sim.expires)
        sim.marks = _marks(sim.total, p.thresholds) if sim.total > 0 else []
        kind = record.kind
        limited = sim.total > 0 and not record.is_unlimited
        t = sim.t
        if kind in ("active", "voice_text", "low") and limited and sim.status == "ACTIVE":
            if sim.uniform() < p.idle_share:
                sim.mode = "idle"
            else:
                self._draw_speed(sim)
                self._go_bursty(sim, t)
        elif kind == "not_active" and limited:
            if sim.uniform() < p.install_share:
                sim.mode = "waiting"
                sim.install_at = t + self._exp(sim, p.install_after)
        elif kind == "finished" and limited:
            sim.mode = "finished"
            self._plan_topup(sim, t)

    def _plan_topup(self, sim: _Sim, t: float) -> None:
        p = self.profile
        if sim.uniform() < p.topup_share:
            sim.topup_at = t + self._exp(sim, p.topup_after)

    # ------------------------------------------------------------------ simulation

    def _advance(self, sim: _Sim, now: float) -> None:
        """Run ``sim`` from its time to ``now``, recording crossings and transitions."""
        p = self.profile
        while sim.t < now:
            mode = sim.mode
            if mode == "bursty":
                end = min(now, sim.switch_at)
                if sim.online and sim.speed > 0:
                    used, speed = sim.used, sim.speed
                    reached = used + speed * (end - sim.t)
                    for threshold, k in sim.marks:
                        if used < k <= reached:
                            self.crossings.append(
                                Crossing(
                                    sim.iccid, threshold, sim.t + (k - used) / speed, sim.package
                                )
                            )
                    if reached >= sim.total:
                        sim.t += (sim.total - used) / speed
                        sim.used = float(sim.total)
                        sim.status = "FINISHED"
                        sim.mode = "finished"
                        self.transitions.append(
                            Transition(sim.iccid, "finished", sim.t, sim.package)
                        )
                        self._plan_topup(sim, sim.t)
                        continue
                    sim.used = reached
                sim.t = end
                if end >= sim.switch_at:
                    sim.online = not sim.online
                    sim.switch_at = end + self._exp(sim, p.session if sim.online else p.pause)
            elif mode == "waiting" and sim.install_at <= now:
                sim.t = sim.install_at
                sim.status = "ACTIVE"
                self.transitions.append(Transition(sim.iccid, "installed", sim.t, sim.package))
                self._draw_speed(sim)
                self._go_bursty(sim, sim.t)
            elif mode == "finished" and sim.topup_at <= now:
                sim.t = sim.topup_at
                sim.topup_at = math.inf
                sim.package += 1
                sim.used = 0.0
                sim.status = "ACTIVE"
                sim.expires = self._stamp(sim.t + self._scaled(self.profile.topup_validity))
                self.transitions.append(Transition(sim.iccid, "topup", sim.t, sim.package))
                if sim.speed <= 0:
                    self._draw_speed(sim)
                self._go_bursty(sim, sim.t)
            else:
                sim.t = now
        shown = (sim.total - math.floor(sim.used), sim.total, sim.status, sim.expires)
        if shown != sim.shown:
            sim.shown = shown
            self.emulator.set_usage(
                sim.iccid,
                remaining=shown[0],
                total=shown[1],
                status=shown[2],
                expired_at=shown[3],
            )

    def sync(self, iccid: str | None = None) -> None:
        """Bring one eSIM (or the whole fleet) up to the clock's time, in the emulator too."""
        now = self.clock.now()
        if iccid is not None:
            sim = self._sims.get(iccid)
            if sim is not None:
                self._advance(sim, now)
            return
        for sim in self._sims.values():
            self._advance(sim, now)

    def attach(self) -> None:
        """Sync each eSIM when a usage request for it reaches the emulator (chained with any
        ``on_request`` hook already set)."""
        if self._hook is not None:
            return
        emulator = self.emulator
        previous = emulator.on_request

        def hook(endpoint: str, request: Any) -> None:
            # A hook set after attach() may still call this one once detached: it then only
            # passes the call on.
            if endpoint == "usage" and self._hook is hook:
                iccid = request.match_info.get("iccid")
                if iccid is not None:
                    self.sync(iccid)
            if previous is not None:
                previous(endpoint, request)

        self._previous_hook = previous
        self._hook = hook
        emulator.on_request = hook

    def detach(self) -> None:
        """Undo :meth:`attach`: the previous hook is put back, and usage requests no longer
        sync the fleet, even through a hook that was chained after :meth:`attach`."""
        if self._hook is None:
            return
        emulator = self.emulator
        if emulator.on_request is self._hook:
            emulator.on_request = self._previous_hook
        self._hook = self._previous_hook = None

    async def run(self, interval: float) -> None:
        """Sync the whole fleet every ``interval`` seconds of the clock, until cancelled."""
        if interval <= 0:
            raise ValueError("interval must be > 0")
        while True:
            self.sync()
            await self.clock.sleep(interval)

    @contextlib.asynccontextmanager
    async def running(self, interval: float) -> AsyncIterator[FleetLife]:
        """:meth:`run` in a background task for the duration of the block."""
        task = asyncio.get_running_loop().create_task(self.run(interval))
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.sync()

    # ------------------------------------------------------------------ inspection

    def mode(self, iccid: str) -> Mode:
        """How ``iccid`` lives: ``bursty``, ``idle``, ``waiting`` (to be installed),
        ``finished`` or ``static`` (unlimited, expired, recycled, never installed...)."""
        return self._sims[iccid].mode

    def speed(self, iccid: str) -> float:
        """MB per second of the clock ``iccid`` uses while online (0 if it never does)."""
        return self._sims[iccid].speed

    def package(self, iccid: str) -> int:
        """The package ``iccid`` is on (0: the one it started with, +1 per top-up)."""
        return self._sims[iccid].package

    def crossings_of(self, threshold: float) -> list[Crossing]:
        """The crossings of ``threshold``, by time."""
        return sorted((c for c in self.crossings if c.threshold == threshold), key=lambda c: c.at)

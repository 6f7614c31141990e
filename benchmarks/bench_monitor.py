"""Figure 7: the fleet monitor's detection delay against round-robin sweeping, and its cost.

1. Detection delay. 1,000 eSIMs on the emulator (in another process, so that the client's
   event loop cannot delay the server's arrival stamps; ``--same-process`` for one process;
   server cache 1 s, strict sliding windows at 50 requests per second and Airalo's 10 per
   minute per eSIM, both scaled 1,200 times like the cache), living through
   ``esim_async.testing.life.FleetLife`` at 1,200 fleet seconds per second: more than half
   active, at speeds 250 times apart (90 % of a package in 7 s to 30 min of online time), in
   bursts (6 s sessions, 12 s pauses), the rest idle, waiting to be installed, finished (some
   topped up later), unlimited, expired, recycled. The life records the exact time each eSIM's
   data crossed 90 %. Two arms see the
   same life (same seed) under the same budget, one after the other:

   - ``FleetMonitor(client, thresholds=(0.75, 0.9))``;
   - round robin: ``client.sims.usage_many(fleet, refresh=True)`` swept again and again (each
     sweep about N/R = 20 s, so a crossing waits N/(2R) = 10 s on average), its readings run
     through the same event rules.

   The delay of a crossing is from the moment the emulator's data crossed 90 % to the 0.9
   threshold event (clock of the process), for crossings after the warm-up; crossings left
   without an event at the end are counted as missed. Also: 429s at the emulator (by the limit
   that answered them), the most usage requests in any 1-second window as stamped by a witness
   middleware in front of the emulator (independent of its limiter), reads per event, events
   before their crossing (must be 0), and the CPU of the client process (client and monitor)
   and of the emulator process (emulator and fleet life).

2. Scale, with the HTTP exchange replaced by a stub client answering at once on a simulated
   clock (so only the monitor's own work is measured): the monitor's CPU per read over 100,000
   tracked eSIMs, as a share of one core at 50 reads per second; traced memory per tracked eSIM
   at 100,000 (every eSIM read at least once); and the restart from a 100,000-eSIM SQLite store
   until the schedule is loaded and reading resumes.

    python benchmarks/bench_monitor.py            # 240 s per arm, then the scale figures
    python benchmarks/bench_monitor.py --quick    # 80 s per arm, 20,000 eSIMs for the scale
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import itertools
import math
import multiprocessing
import os
import re
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from _common import fmt, parser, record
from aiohttp import web

from esim_async import AiraloClient, EndpointLimit, LimiterState, Rate, Usage, UsageStatus
from esim_async.monitor import FleetMonitor, UsageEvent
from esim_async.monitor.events import detect
from esim_async.testing import Emulator, Fleet, ServerLimits
from esim_async.testing.life import Crossing, FleetLife

SCALE = 1200.0
CACHE_TTL = 1.0
COMPANY = Rate(50, 1.0)
PER_ESIM = Rate(10, 60.0 / SCALE)
THRESHOLDS = (0.75, 0.9)
SEED = 2026


# ---------------------------------------------------------------------- 1. detection delay


@dataclass
class Arm:
    name: str
    reads: int = 0
    events: list[UsageEvent] = field(default_factory=list)
    crossings: list[Crossing] = field(default_factory=list)
    rate_limited: int = 0
    rate_limited_by: dict[str, int] = field(default_factory=dict)
    #: Most usage arrivals in any window of the company limit's period, as stamped by a
    #: witness middleware in front of the emulator (independent of its limiter).
    crowded: int = 0
    cpu: float = 0.0
    server_cpu: float = 0.0
    elapsed: float = 0.0
    started: float = 0.0


_USAGE_PATH = re.compile(r"/sims/(?P<iccid>[^/]+)/usage$")


def make_world(n: int, middlewares: tuple[Any, ...] = ()) -> tuple[Emulator, FleetLife]:
    fleet = Fleet.generate(n, seed=SEED)
    limits = ServerLimits(usage_company=COMPANY, usage_iccid=PER_ESIM, token=None)
    emu = Emulator(fleet=fleet, limits=limits, cache_ttl=CACHE_TTL, middlewares=middlewares)
    return emu, FleetLife(emu, seed=SEED, time_scale=SCALE)


def most_crowded(times: list[float], period: float) -> int:
    """The most of ``times`` (sorted) inside any half-open window ``[t, t + period)``."""
    best = j = 0
    for i, t in enumerate(times):
        while t - times[j] >= period:
            j += 1
        best = max(best, i - j + 1)
    return best


@dataclass
class WorldReport:
    """What the emulator's side saw (sent back by the world process)."""

    crossings: list[Crossing]
    rate_limited: int
    rate_limited_by: dict[str, int]
    crowded: int
    cpu: float


async def _world(conn: Connection, n: int, limit: float) -> None:
    """The emulator and its fleet life, serving until told to stop (or ``limit`` seconds)."""
    arrivals: list[float] = []

    @web.middleware
    async def witness(request: web.Request, handler: Any) -> web.StreamResponse:
        if _USAGE_PATH.search(request.path):
            arrivals.append(time.monotonic())
        return await handler(request)  # type: ignore[no-any-return]

    emu, life = make_world(n, (witness,))
    cpu = time.process_time()
    async with emu:
        life.attach()
        conn.send((emu.url, life.started_at, emu.fleet.iccids()))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.poll, limit)
        life.sync()
        conn.send(
            WorldReport(
                crossings=life.crossings_of(0.9),
                rate_limited=emu.stats.rate_limited,
                rate_limited_by=dict(emu.stats.rate_limited_by),
                crowded=most_crowded(arrivals, COMPANY.period),
                cpu=time.process_time() - cpu,
            )
        )


def _world_main(conn: Connection, n: int, limit: float) -> None:
    asyncio.run(_world(conn, n, limit))


class World:
    """The emulator and its fleet life in another process (``separate=True``, the default:
    the client's event loop cannot delay the server's arrival stamps) or in this one."""

    def __init__(self, n: int, duration: float, *, separate: bool) -> None:
        self.n, self.duration, self.separate = n, duration, separate
        self.url = ""
        self.started = 0.0
        self.iccids: list[str] = []
        self._conn: Connection | None = None
        self._proc: Any = None
        self._local: tuple[Emulator, FleetLife] | None = None
        self._arrivals: list[float] = []

    async def __aenter__(self) -> World:
        if self.separate:
            ctx = multiprocessing.get_context("fork")
            ours, theirs = ctx.Pipe()
            self._proc = ctx.Process(
                target=_world_main, args=(theirs, self.n, self.duration + 120.0), daemon=True
            )
            self._proc.start()
            self._conn = ours
            self.url, self.started, self.iccids = ours.recv()
        else:
            arrivals = self._arrivals

            @web.middleware
            async def witness(request: web.Request, handler: Any) -> web.StreamResponse:
                if _USAGE_PATH.search(request.path):
                    arrivals.append(time.monotonic())
                return await handler(request)  # type: ignore[no-any-return]

            emu, life = make_world(self.n, (witness,))
            await emu.start()
            life.attach()
            self._local = (emu, life)
            self.url, self.started, self.iccids = emu.url, life.started_at, emu.fleet.iccids()
        return self

    async def finish(self) -> WorldReport:
        if self._conn is not None:
            self._conn.send("stop")
            report: WorldReport = self._conn.recv()
            return report
        assert self._local is not None
        emu, life = self._local
        life.sync()
        return WorldReport(
            crossings=life.crossings_of(0.9),
            rate_limited=emu.stats.rate_limited,
            rate_limited_by=dict(emu.stats.rate_limited_by),
            crowded=most_crowded(self._arrivals, COMPANY.period),
            cpu=0.0,
        )

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(5)
        if self._local is not None:
            await self._local[0].stop()


def client_for(url: str) -> AiraloClient:
    return AiraloClient(
        "bench",
        "bench-secret",
        base_url=url,
        company_rate=COMPANY,
        iccid_rate=PER_ESIM,
        cache_ttl=CACHE_TTL,
    )


def _settle(arm: Arm, report: WorldReport, cpu0: float) -> None:
    arm.cpu = time.process_time() - cpu0
    arm.elapsed = time.monotonic() - arm.started
    arm.crossings = report.crossings
    arm.rate_limited = report.rate_limited
    arm.rate_limited_by = report.rate_limited_by
    arm.crowded = report.crowded
    arm.server_cpu = report.cpu


async def monitor_arm(n: int, duration: float, separate: bool) -> Arm:
    arm = Arm("fleet monitor")
    async with World(n, duration, separate=separate) as world:
        arm.started = world.started
        cpu = time.process_time()
        async with client_for(world.url) as client:
            monitor = FleetMonitor(client, thresholds=THRESHOLDS, expiring_within=0.0)
            await monitor.track(world.iccids)

            async def consume() -> None:
                async for event in monitor.events():
                    arm.events.append(event)

            async with monitor:
                task = asyncio.get_running_loop().create_task(consume())
                await asyncio.sleep(max(0.0, world.started + duration - time.monotonic()))
                task.cancel()
            arm.reads = monitor.stats.reads
        _settle(arm, await world.finish(), cpu)
    return arm


async def round_robin_arm(n: int, duration: float, separate: bool) -> Arm:
    arm = Arm("round robin (usage_many)")
    previous: dict[str, Usage] = {}
    fired: defaultdict[str, int] = defaultdict(int)
    async with World(n, duration, separate=separate) as world:
        arm.started = world.started
        end = world.started + duration
        cpu = time.process_time()
        async with client_for(world.url) as client:
            iccids = world.iccids
            while time.monotonic() < end:
                async with client.sims.usage_many(iccids, refresh=True) as results:
                    async for r in results:
                        if r.usage is None:
                            continue
                        arm.reads += 1
                        now = time.monotonic()
                        events, fired[r.iccid] = detect(
                            r.iccid,
                            previous.get(r.iccid),
                            r.usage,
                            fired[r.iccid],
                            THRESHOLDS,
                            now_wall=time.time(),
                            detected_at=datetime.now(UTC),
                            expiring_within=0.0,
                            at=now,
                        )
                        previous[r.iccid] = r.usage
                        arm.events += events
                        if now >= end:
                            break
        _settle(arm, await world.finish(), cpu)
    return arm


@dataclass
class Delays:
    delays: list[float]
    missed: int
    early: int


def delays(arm: Arm, warmup: float, window: float) -> Delays:
    """Delay of each 90 % crossing in [warm-up, warm-up + window) to its 0.9 event."""
    by_iccid: defaultdict[str, list[Crossing]] = defaultdict(list)
    for c in arm.crossings:
        by_iccid[c.iccid].append(c)
    events: defaultdict[str, list[float]] = defaultdict(list)
    early = 0
    for e in arm.events:
        if e.kind == "threshold" and e.threshold == 0.9:
            events[e.iccid].append(e.at)
            if e.previous is not None and not any(c.at <= e.at for c in by_iccid[e.iccid]):
                early += 1
    out, missed = [], 0
    lo, hi = arm.started + warmup, arm.started + warmup + window
    for iccid, crossings in by_iccid.items():
        crossings.sort(key=lambda c: c.at)
        for k, c in enumerate(crossings):
            if not lo <= c.at < hi:
                continue
            until = crossings[k + 1].at if k + 1 < len(crossings) else math.inf
            found = [t for t in events[iccid] if c.at <= t < until]
            if found:
                out.append(min(found) - c.at)
            else:
                missed += 1
    return Delays(out, missed, early)


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) >= 2 else math.nan


# ---------------------------------------------------------------------- 2. scale (stub client)


class SimClock:
    """A simulated clock: when every task waits, time jumps to the earliest sleeper."""

    def __init__(self) -> None:
        self._now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return 1_900_000_000.0 + self._now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._seq), fut))
        await fut

    async def drive(self, done: Any) -> None:
        while not done():
            for _ in range(4):
                await asyncio.sleep(0)
            while self._sleepers:
                when, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    self._now = max(self._now, when)
                    fut.set_result(None)
                    break


class StubSims:
    """Answers ``usage`` at once from a drain model (half the fleet active, 1-100 MB/s)."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.calls = 0

    async def usage(self, iccid: str, **_: Any) -> Usage:
        self.calls += 1
        n = int(iccid[-7:-1])
        total = 1024 * (1 + n % 8)
        speed = (n % 100) + 1.0 if n % 2 else 0.0
        used = min(total, int((n * 37) % (total // 2) + speed * self.clock.now()))
        status = UsageStatus.FINISHED if used >= total else UsageStatus.ACTIVE
        return Usage(raw_remaining=total - used, raw_total=total, status=status, is_unlimited=False)

    def invalidate_usage(self, iccid: str) -> None:
        return None


def stub_client(clock: SimClock) -> Any:
    limit = EndpointLimit(shared=COMPANY, per_key=None)
    state = LimiterState("usage", COMPANY, None, 50.0, -math.inf, 0.0, 0, 0)
    return SimpleNamespace(
        config=SimpleNamespace(
            limit=lambda endpoint: limit,
            account_rate=None,
            rate_margin=0.02,
            iccid_length=(18, 22),
            cache_ttl=CACHE_TTL,
            clock=clock,
        ),
        profile=SimpleNamespace(name="stub", cache_ttl=CACHE_TTL),
        client_id="bench",
        rate_limit_state=lambda: {"usage": state},
        sims=StubSims(clock),
    )


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def scale(n: int, store: Path, traced: bool) -> dict[str, float]:
    clock = SimClock()
    client = stub_client(clock)
    iccids = [Fleet.make_iccid(i, prefix="894488") for i in range(n)]
    gc.collect()
    if traced:
        tracemalloc.start()
    base_traced = tracemalloc.get_traced_memory()[0]
    base_rss = rss()
    monitor = FleetMonitor(client, store=store, expiring_within=0.0)
    await monitor.track(iccids)
    cpu0, reads0 = time.process_time(), 0
    async with monitor:
        # Until every eSIM was read once, then as many reads again: CPU per read at steady state.
        await clock.drive(lambda: monitor.stats.reads >= n)
        gc.collect()
        memory = tracemalloc.get_traced_memory()[0] - base_traced
        grown = rss() - base_rss
        cpu0, reads0 = time.process_time(), monitor.stats.reads
        await clock.drive(lambda: monitor.stats.reads >= reads0 + min(n, 50_000))
        cpu = time.process_time() - cpu0
        reads = monitor.stats.reads - reads0
        # Let the writer catch up, then stop (the last batch is written on the way out).
    if traced:
        tracemalloc.stop()
    out = {"cpu_per_read": cpu / reads, "traced_per": memory / n, "rss_per": grown / n}
    # Restart: a new monitor on the store, until its schedule is loaded and it reads again.
    clock2 = SimClock()
    client2 = stub_client(clock2)
    started = time.perf_counter()
    again = FleetMonitor(client2, store=store, expiring_within=0.0)
    async with again:
        await clock2.drive(lambda: again.active)
        out["restart_s"] = time.perf_counter() - started
        calls = client2.sims.calls
        await clock2.drive(lambda: clock2.now() >= CACHE_TTL / 2)
        out["restart_reads_half_unit"] = client2.sims.calls - calls
        out["restart_loaded"] = float(len(again))
    return out


# ---------------------------------------------------------------------- main


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--duration", type=float, default=None, help="seconds per arm")
    p.add_argument("--arms", default="monitor,rr", help="which arms to run")
    p.add_argument("--scale", type=int, default=None, help="eSIMs for the scale figures")
    p.add_argument(
        "--same-process",
        action="store_true",
        help="run the emulator and its fleet life in this process (default: another one)",
    )
    p.add_argument("--no-scale", action="store_true", help="skip the scale figures")
    args = p.parse_args()
    n = 1000
    duration = args.duration or (80.0 if args.quick else 240.0)
    warmup = 25.0 if args.quick else 40.0
    tail = 20.0 if args.quick else 30.0
    window = duration - warmup - tail
    suffix = " (quick)" if args.quick else ""
    arms: list[Arm] = []
    if "monitor" in args.arms:
        arms.append(asyncio.run(monitor_arm(n, duration, not args.same_process)))
    if "rr" in args.arms:
        arms.append(asyncio.run(round_robin_arm(n, duration, not args.same_process)))
    rows: list[tuple[str, ...]] = [
        (
            "arm",
            "90 % crossings",
            "mean delay s",
            "p50 s",
            "p90 s",
            "max s",
            "missed",
            "before crossing",
            "reads",
            "events",
            "reads per event",
            "429s",
            "most arrivals in 1 s",
            "client CPU",
            "server CPU",
        )
    ]
    figures: dict[str, Delays] = {}
    for arm in arms:
        d = delays(arm, warmup, window)
        figures[arm.name] = d
        rows.append(
            (
                arm.name,
                str(len(d.delays) + d.missed),
                fmt(statistics.fmean(d.delays), 2) if d.delays else "-",
                fmt(statistics.median(d.delays), 2) if d.delays else "-",
                fmt(p90(d.delays), 2),
                fmt(max(d.delays), 2) if d.delays else "-",
                str(d.missed),
                str(d.early),
                f"{arm.reads:,}",
                f"{len(arm.events):,}",
                fmt(arm.reads / max(1, len(arm.events)), 1),
                str(arm.rate_limited)
                + (
                    f" ({', '.join(f'{k} {v}' for k, v in arm.rate_limited_by.items())})"
                    if arm.rate_limited
                    else ""
                ),
                str(arm.crowded),
                f"{100 * arm.cpu / arm.elapsed:.1f} %",
                f"{100 * arm.server_cpu / arm.elapsed:.1f} %" if arm.server_cpu else "-",
            )
        )
    notes = (
        f"N={n}, budget {COMPANY.count}/s, server cache {CACHE_TTL:g} s, time scale "
        f"{SCALE:g}; {duration:g} s per arm: warm-up {warmup:g} s, crossings measured over "
        f"{window:g} s, {tail:g} s more to find them. "
        + (
            "Emulator, fleet life, client and monitor in one process (client CPU covers all)."
            if args.same_process
            else "The emulator and its fleet life run in another process (server CPU); client "
            "CPU is the client and the monitor (or the sweep) alone."
        )
        + " Most arrivals in 1 s: usage requests in the most crowded window of the company "
        f"limit's period, stamped by a witness in front of the emulator (limit {COMPANY.count})."
    )
    mon, rr = figures.get("fleet monitor"), figures.get("round robin (usage_many)")
    if mon and rr and mon.delays and rr.delays:
        ratio_mean = statistics.fmean(mon.delays) / statistics.fmean(rr.delays)
        ratio_p90 = p90(mon.delays) / p90(rr.delays)
        notes += (
            f"\n\nMonitor vs round robin: mean {ratio_mean:.3f}x (target <= 0.1x), "
            f"p90 {ratio_p90:.3f}x (target <= 0.2x)."
        )
    record(
        "Fleet monitor: detection delay of the 90 % mark" + suffix,
        rows,
        notes,
        enabled=not args.no_record and bool(arms),
    )
    if args.no_scale:
        return
    size = args.scale or (20_000 if args.quick else 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        plain = asyncio.run(scale(size, Path(tmp) / "plain.db", traced=False))
    with tempfile.TemporaryDirectory() as tmp:
        traced = asyncio.run(scale(size, Path(tmp) / "traced.db", traced=True))
    cpu_share = 100 * plain["cpu_per_read"] * COMPANY.count
    record(
        "Fleet monitor: CPU, memory and restart at scale" + suffix,
        [
            ("figure", "result", "target"),
            ("tracked eSIMs", f"{size:,}", "100,000"),
            ("monitor CPU per read", f"{plain['cpu_per_read'] * 1e6:.1f} us", ""),
            ("monitor CPU at 50 reads/s", f"{cpu_share:.2f} % of a core", "<= 5 %"),
            ("traced memory per tracked eSIM", f"{traced['traced_per']:,.0f} B", "<= 2,048 B"),
            ("RSS growth per tracked eSIM", f"{plain['rss_per']:,.0f} B", ""),
            (
                "restart from the SQLite store until reading",
                f"{plain['restart_s']:.2f} s",
                "< 5 s",
            ),
            (
                "reads in the first half TTL after the restart",
                f"{plain['restart_reads_half_unit']:,.0f} of {size:,}",
                "not the whole fleet",
            ),
        ],
        "Stub client answering at once on a simulated clock: the monitor's own work only "
        "(scheduling, estimates, event rules, write-behind to SQLite).",
        enabled=not args.no_record,
    )


if __name__ == "__main__":
    sys.exit(main())

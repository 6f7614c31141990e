"""Reads timed on a predicted crossing: an eSIM whose burst speed is known is read when its
crossing comes at that speed, not before (a read before it would hold the next one a whole
cache period back), such reads go first once due, and the monitor starts its reads evenly
over its budget instead of in bursts."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from esim_async import Rate, Usage, UsageStatus
from esim_async.monitor.estimator import Budget, FleetPrior, SimState, Timing, observe, plan
from esim_async.monitor.scheduler import Pacer, Schedule
from esim_async.monitor.store import StoredSim, encode_sim

from ..arrivals import max_in_any_window
from .rig import rig

UNIT = 10.0
TIMING = Timing(UNIT, expiring_within=0.0)
WALL = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
TOTAL = 1000


def usage(used: int) -> Usage:
    return Usage(
        raw_remaining=TOTAL - used,
        raw_total=TOTAL,
        status=UsageStatus.ACTIVE,
        is_unlimited=False,
        expired_at=datetime.fromtimestamp(WALL, UTC) + timedelta(days=30),
    )


def budget() -> Budget:
    b = Budget()
    b.per_second, b.tracked = 5.0, 100
    return b


def read(state: SimState, used: int, at: float, prior: FleetPrior) -> None:
    """What the monitor does with a reading of ``used`` MB taken at ``at``."""
    u = usage(used)
    observe(state, u, at, prior, UNIT)
    state.usage, state.read_at, state.eligible_at = u, at, at + UNIT


def test_an_eSIM_in_full_flow_is_read_when_its_crossing_comes_at_the_speed_it_showed() -> None:
    prior = FleetPrior(UNIT)
    s = SimState("x", 0.0)
    s.fired = 1  # the 75 % mark is reported
    # 3 MB/s over two agreeing intervals of one unit: 810 MB used at t=20, 90 MB to the
    # 90 % mark (900 MB). At 3 MB/s it comes at t=50; the readings, whole MB at both ends,
    # say the speed is at least 2.9 MB/s, so by t=51.03 at the latest.
    for at, used in ((0.0, 750), (10.0, 780), (20.0, 810)):
        read(s, used, at, prior)
    due = plan(s, 20.0, WALL, TIMING, prior, (0.75, 0.9), budget())
    assert 50.0 <= due <= 20.0 + 90 / 2.9 + 1e-9


def test_a_known_speed_times_the_read_after_a_pause() -> None:
    prior = FleetPrior(UNIT)
    s = SimState("x", 0.0)
    for at, used in ((0.0, 600), (10.0, 630), (20.0, 660), (30.0, 660), (40.0, 660)):
        read(s, used, at, prior)
    # A new session: its first interval shows part of a burst (6 MB in a unit), its speed
    # is still the 3 MB/s it showed: 234 MB to the 90 % mark, by t=50 + 234/2.9 at the latest.
    read(s, 666, 50.0, prior)
    due = plan(s, 50.0, WALL, TIMING, prior, (0.9,), budget())
    assert 50.0 + 234 / 3.0 <= due <= 50.0 + 234 / 2.9 + 1e-9


def test_a_read_timed_on_a_crossing_waits_for_it_and_then_goes_first() -> None:
    prior = FleetPrior(UNIT)
    timed = SimState("timed", 0.0)
    timed.fired = 1
    for at, used in ((0.0, 750), (10.0, 780), (20.0, 810)):
        read(timed, used, at, prior)
    timed.due = plan(timed, 20.0, WALL, TIMING, prior, (0.75, 0.9), budget())
    waiting = SimState("waiting", 0.0)
    waiting.due, waiting.eligible_at = 40.0, 0.0
    schedule = Schedule()
    schedule.push(timed)
    schedule.push(waiting)
    # Budget to spare before the crossing goes to the other eSIM, never to the timed one.
    assert schedule.pick(35.0, spare=True) is waiting
    assert schedule.pick(36.0, spare=True) is None
    # Once due, it goes ahead of an eSIM due earlier.
    waiting.due = 45.0
    schedule.push(waiting)
    assert schedule.pick(timed.due, spare=False) is timed
    assert schedule.pick(timed.due, spare=False) is waiting
    assert math.isfinite(timed.due)


async def test_the_monitor_starts_its_reads_evenly_over_its_budget() -> None:
    async with rig(size=40, cache_ttl=2.0, company=Rate(5, 1.0), per_key=None) as r:
        monitor = r.monitor()
        await monitor.track(r.emu.fleet.iccids())
        async with r.running(monitor):
            await r.clock.run(12, 0.05)
        times = r.reads()
        assert len(times) >= 50
        # 5 per second: never two starts within a fifth of a second (no bursts of five).
        assert max_in_any_window(times, 0.19) <= 1
        assert r.rate_limited == 0


def test_a_known_speed_is_stored_and_older_rows_read_without_it() -> None:
    row = StoredSim(usage=usage(810), read_at=WALL, moves=3, known_low=2.9, known_high=3.1)
    back = msgspec.msgpack.decode(encode_sim(row), type=StoredSim)
    assert (back.known_low, back.known_high) == (2.9, 3.1)
    # A row written before the speed was kept: no known speed.
    older = msgspec.msgpack.encode([None, WALL, None, None, 0.0, 1.5, 3])
    old = msgspec.msgpack.decode(older, type=StoredSim)
    assert (old.known_low, old.known_high, old.moves) == (0.0, 0.0, 3)


@given(st.lists(st.floats(0.0, 0.45), min_size=20, max_size=200))
def test_a_start_a_little_late_keeps_its_place_on_the_pace(lates: list[float]) -> None:
    pacer = Pacer(per_second=10.0, lag=0.5)
    window = pacer.window
    now, starts = 0.0, []
    for late in lates:  # the loop wakes up to 0.45 of a slot late each time
        now = pacer.ready_at(now) + late * window
        pacer.started(now)
        starts.append(now)
    # No budget lost to the late wake-ups: n starts span n - 1 slots and the last lateness...
    assert starts[-1] - starts[0] <= (len(starts) - 1 + 0.45) * window + 1e-9
    # ... and never more than one start beyond the pace in any stretch of time.
    for slots in (1, 5, 10):
        assert max_in_any_window(starts, slots * window * (1 - 1e-9)) <= slots + 1

"""The schedule's heaps, the pacer and the due-time rule, on their own."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esim_async import Usage, UsageStatus
from esim_async.monitor.estimator import (
    CAP_ACTIVE,
    OPTIMISM,
    Budget,
    FleetPrior,
    SimState,
    Timing,
    observe,
    plan,
    upper_rate,
)
from esim_async.monitor.scheduler import Pacer, Schedule

from ..arrivals import max_in_any_window

UNIT = 10.0
TIMING = Timing(UNIT, expiring_within=0.0)
WALL = datetime(2030, 1, 1, tzinfo=UTC).timestamp()


def state(name: str, due: float, eligible: float) -> SimState:
    s = SimState(name, 0.0)
    s.due, s.eligible_at = due, eligible
    return s


def usage(remaining: int, status: UsageStatus = UsageStatus.ACTIVE, total: int = 1000) -> Usage:
    return Usage(
        raw_remaining=remaining,
        raw_total=total,
        status=status,
        is_unlimited=False,
        expired_at=datetime.fromtimestamp(WALL, UTC) + timedelta(days=30),
    )


def test_pick_takes_the_earliest_due_eligible_and_skips_stale_entries() -> None:
    schedule = Schedule()
    a, b, c = state("a", 5.0, 0.0), state("b", 3.0, 0.0), state("c", 1.0, 0.0)
    for s in (a, b, c):
        schedule.push(s)
    c.due = 9.0
    schedule.push(c)  # rescheduled: its first entry is stale
    assert schedule.pick(2.0, spare=False) is None  # nothing due yet
    assert schedule.pick(4.0, spare=False) is b
    assert schedule.pick(4.0, spare=True) is a  # spare budget: earliest due, not yet due
    assert schedule.pick(4.0, spare=True) is c
    assert schedule.pick(4.0, spare=True) is None


def test_an_eSIM_whose_cache_is_fresh_waits_and_the_next_is_taken() -> None:
    schedule = Schedule()
    fresh, other = state("fresh", 1.0, 8.0), state("other", 2.0, 0.0)
    schedule.push(fresh)
    schedule.push(other)
    assert schedule.pick(3.0, spare=False) is other
    assert schedule.pick(3.0, spare=True) is None
    assert schedule.next_time(3.0, spare=True) == 8.0
    assert schedule.pick(8.0, spare=False) is fresh


def test_urgent_eSIMs_go_first_once_eligible() -> None:
    schedule = Schedule()
    due, urgent = state("due", 1.0, 0.0), state("urgent", 50.0, 4.0)
    urgent.urgent = True
    schedule.push(due)
    schedule.push(urgent)
    assert schedule.pick(2.0, spare=False) is due
    assert schedule.next_time(2.0, spare=False) == 4.0
    assert schedule.pick(4.0, spare=False) is urgent


def test_removed_and_never_due_eSIMs_are_not_picked_and_rebuild_drops_stale_entries() -> None:
    schedule = Schedule()
    states = [state(str(i), float(i), 0.0) for i in range(10)]
    for s in states:
        schedule.push(s)
        schedule.push(s)
    schedule.remove(states[0])
    states[1].due = math.inf
    schedule.push(states[1])
    schedule.rebuild(states)
    assert len(schedule) == 8
    picked = [schedule.pick(100.0, spare=False) for _ in range(9)]
    assert [p.iccid if p else None for p in picked] == [*map(str, range(2, 10)), None]


@given(st.lists(st.floats(0.0, 0.5), min_size=1, max_size=200), st.integers(1, 5))
def test_the_pacer_never_starts_more_than_its_burst_in_a_window(
    gaps: list[float], burst: int
) -> None:
    pacer = Pacer(per_second=2.0 * burst, burst=burst)
    now, starts = 0.0, []
    for gap in gaps:
        now = pacer.ready_at(now + gap)
        pacer.started(now)
        starts.append(now)
    assert max_in_any_window(starts, pacer.window * (1 - 1e-9)) <= burst


def draining(remaining: int, *, peak: float = 0.0, moves: int = 0) -> SimState:
    s = SimState("x", 0.0)
    s.usage, s.read_at, s.eligible_at = usage(remaining), 0.0, UNIT
    s.peak, s.moves = peak, moves
    return s


def budget(per_second: float = 5.0, tracked: int = 100, roots: float = 10.0) -> Budget:
    b = Budget()
    b.per_second, b.tracked, b.roots = per_second, tracked, roots
    return b


def test_a_draining_eSIM_is_read_when_its_next_threshold_can_first_be_reached() -> None:
    prior = FleetPrior()
    b = budget()

    def due(s: SimState) -> float:
        return plan(s, 0.0, WALL, TIMING, prior, (0.75, 0.9), b)

    # 300 MB to the 75 % mark at OPTIMISM x 2 MB/s of its own peak.
    assert due(draining(550, peak=2.0, moves=3)) == 300 / (OPTIMISM * 2.0)
    assert due(draining(550, peak=1000.0, moves=3)) == UNIT  # never sooner than the cache
    # Never later than the active cap (12 units here: the fleet takes 20 s to sweep).
    assert due(draining(550, peak=1e-6, moves=3)) == TIMING.cap(CAP_ACTIVE, 20.0) == 12 * UNIT
    assert due(draining(550)) == UNIT  # nothing known about anyone: learn
    # Past 75 %: the 90 % mark is next.
    s = draining(150, peak=1.0, moves=3)
    s.fired = 0b01
    assert due(s) == min(max(50 / OPTIMISM, UNIT), 12 * UNIT)


def test_the_fleet_speed_weighs_less_with_the_eSIMs_own_evidence() -> None:
    prior = FleetPrior()
    for _ in range(10):
        prior.add(100.0)  # every moving interval seen so far: 100 MB/s
    prior.refresh()
    assert prior.speed == 128.0  # its bucket's upper edge
    fresh = draining(550)
    assert upper_rate(fresh, prior, UNIT) == OPTIMISM * 128.0
    assert upper_rate(draining(550, peak=5.0, moves=3), prior, UNIT) == OPTIMISM * 32.0
    idle = draining(550)
    idle.still = 12 * UNIT * 3  # idle for three horizons
    assert upper_rate(idle, prior, UNIT) == OPTIMISM * 128.0 * math.exp(-3)


def test_events_that_come_at_random_are_read_by_the_square_root_law() -> None:
    prior = FleetPrior()
    b = budget(per_second=5.0, tracked=100, roots=10.0)

    def interval(status: UsageStatus, peak: float = 0.0) -> float:
        s = SimState("x", 0.0)
        s.usage, s.read_at, s.eligible_at = usage(0, status), 0.0, 0.0
        s.peak, s.moves = peak, 1 if peak else 0
        return plan(s, 0.0, WALL, TIMING, prior, (0.75, 0.9), b)

    assert interval(UsageStatus.RECYCLED) == math.inf
    waiting, settled = interval(UsageStatus.NOT_ACTIVE), interval(UsageStatus.FINISHED)
    # Priors: an installation per 36 units, a top-up per 216: read sqrt(6) times as often.
    assert settled / waiting == pytest.approx(math.sqrt(6))
    # A fast user's finished eSIM: a top-up would reach 75 % soon, so it is read sooner.
    assert interval(UsageStatus.FINISHED, peak=50.0) < settled
    # The fleet shows quick top-ups: finished eSIMs are read sooner.
    for _ in range(50):
        prior.topups.add(0.0, UNIT, True, UNIT)
    assert interval(UsageStatus.FINISHED) < settled / 3


def test_the_speed_estimate_follows_moving_intervals_and_top_ups_are_seen() -> None:
    prior = FleetPrior()
    s = SimState("x", 0.0)
    s.usage, s.read_at = usage(900), 0.0
    observe(s, usage(900), 10.0, prior, UNIT)  # no data used
    assert (s.moves, s.still) == (0, 10.0)
    s.read_at = 10.0
    observe(s, usage(800), 20.0, prior, UNIT)  # 100 MB in 10 s
    s.usage, s.read_at = usage(800), 20.0
    observe(s, usage(790), 30.0, prior, UNIT)  # 10 MB in 10 s
    assert (s.moves, s.still, s.peak) == (2, 0.0, 10.0)
    assert 1.0 < s.rate < 10.0
    # A finished eSIM whose expiry moved later was topped up (and maybe used up again).
    done = usage(0, UsageStatus.FINISHED)
    later = Usage(
        raw_remaining=0,
        raw_total=1000,
        status=UsageStatus.FINISHED,
        is_unlimited=False,
        expired_at=done.expired_at + timedelta(days=30),  # type: ignore[operator]
    )
    s.usage, s.read_at = done, 40.0
    observe(s, later, 50.0, prior, UNIT)
    assert sum(prior.topups.events) == 1.0

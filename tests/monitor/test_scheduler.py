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
    COST_BOUNDS,
    COST_STEP,
    OPTIMISM,
    Budget,
    FleetPrior,
    SimState,
    Timing,
    delay_until,
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


def test_a_draining_eSIM_is_read_once_its_next_threshold_can_first_be_reached() -> None:
    prior = FleetPrior()
    b = budget()

    def due(s: SimState) -> float:
        return plan(s, 0.0, WALL, TIMING, prior, (0.75, 0.9), b)

    # 300 MB to the 75 % mark at 5 MB/s of its own peak: not before 60 s. Online at its
    # last reading, it is read soon after; offline, a session must start first: later.
    online = draining(550, peak=5.0, moves=3)
    offline = draining(550, peak=5.0, moves=3)
    offline.still = UNIT
    assert 300 / (OPTIMISM * 5.0) < due(online) < due(offline) < 12 * UNIT
    assert due(draining(550, peak=1000.0, moves=3)) == UNIT  # never sooner than the cache
    # Never later than the active cap (12 units here: the fleet takes 20 s to sweep).
    assert due(draining(550, peak=1e-6, moves=3)) == TIMING.cap(CAP_ACTIVE, 20.0) == 12 * UNIT
    assert UNIT < due(draining(550)) < 12 * UNIT  # nothing known about anyone: soon
    # Past 75 %: the 90 % mark is next, 50 MB away.
    s = draining(150, peak=1.0, moves=3)
    s.fired = 0b01
    assert 50 / OPTIMISM < due(s) < 12 * UNIT


def test_one_threshold_on_the_delay_a_read_removes_sets_every_interval() -> None:
    """A read is due once the expected delay it removes reaches the budget's threshold: right
    after the earliest moment for a crossing that is sure then, the square-root law for one
    that comes at random; a higher threshold (a tighter budget) delays every kind of eSIM."""
    assert delay_until(2.0, 1.0, 0.1) == pytest.approx(2.0)
    assert delay_until(2.0, 0.5, 0.0) == pytest.approx(4.0)
    assert delay_until(2.0, 0.0, 0.0) == math.inf
    small, large = delay_until(0.01, 0.0, 1e-3), delay_until(0.04, 0.0, 1e-3)
    assert small == pytest.approx(math.sqrt(2 * 0.01 / 1e-3), rel=1e-2)
    assert large / small == pytest.approx(2.0, rel=1e-2)  # four times the cost, twice as long
    prior = FleetPrior()

    def due(s: SimState, cost: float) -> float:
        b = budget()
        b.cost = cost
        return plan(s, 0.0, WALL, TIMING, prior, (0.75, 0.9), b)

    finished = SimState("f", 0.0)
    finished.usage, finished.read_at = usage(0, UsageStatus.FINISHED), 0.0
    offline = draining(550, peak=5.0, moves=3)
    offline.still = UNIT
    for s in (finished, offline):
        assert due(s, 0.1 * UNIT) < due(s, UNIT)


def test_the_threshold_is_tuned_until_the_plans_ask_for_the_budget() -> None:
    b = budget(per_second=5.0)
    start = b.threshold(UNIT)
    b.demand = 20.0  # the plans ask for four times the budget: read less often
    assert b.tune(UNIT) == pytest.approx(start * COST_STEP)
    b.demand = 5.0  # just the budget: stay
    assert b.tune(UNIT) == pytest.approx(start * COST_STEP)
    b.demand = 1.0  # a fifth of it: read more often, down to the floor
    for _ in range(100):
        b.tune(UNIT)
    assert b.threshold(UNIT) == pytest.approx(COST_BOUNDS[0] * UNIT)


def test_the_fleet_speed_weighs_less_with_the_eSIMs_own_evidence() -> None:
    prior = FleetPrior()
    for _ in range(10):
        prior.add(0.1)  # every moving interval seen so far: 10 % of its package per second
    prior.refresh()
    assert prior.speed == 0.125  # its bucket's upper edge
    fresh = draining(550)  # a 1,000 MB package
    assert upper_rate(fresh, prior, UNIT) == OPTIMISM * 125.0
    assert upper_rate(draining(550, peak=5.0, moves=3), prior, UNIT) == OPTIMISM * 125.0 / 4
    idle = draining(550)
    idle.still = 12 * UNIT * 3  # idle for three horizons
    assert upper_rate(idle, prior, UNIT) == OPTIMISM * 125.0 * math.exp(-3)


def test_the_fleet_speed_is_learnt_as_a_share_of_the_package() -> None:
    """Heavy users buy big packages: what the fleet teaches is the share of a package used per
    second, so a little-known eSIM on a package 20 times larger is assumed 20 times faster in
    MB and is read as soon as one on a small package at the same fraction."""
    prior = FleetPrior()
    small = SimState("small", 0.0)
    small.usage, small.read_at = usage(900), 0.0
    observe(small, usage(800), UNIT, prior, UNIT)  # 10 % of 1,000 MB in one unit
    prior.refresh()
    big = SimState("big", 0.0)
    big.usage = usage(18_000, total=20_000)  # 10 % used, like a fresh small one below
    fresh = SimState("fresh", 0.0)
    fresh.usage = usage(900)
    big_rate, small_rate = upper_rate(big, prior, UNIT), upper_rate(fresh, prior, UNIT)
    assert big_rate is not None and small_rate is not None
    assert big_rate == pytest.approx(20 * small_rate)
    b = budget()
    for s in (big, fresh):
        s.read_at = s.eligible_at = 0.0
    due = [plan(s, 0.0, WALL, TIMING, prior, (0.75, 0.9), b) for s in (big, fresh)]
    assert due[0] == pytest.approx(due[1])


def test_a_stored_fleet_speed_in_mb_per_second_is_relearnt_not_taken_as_shares() -> None:
    """A store written when the fleet's speeds were kept in MB/s ("speeds") must not make every
    eSIM look thousands of times faster: that histogram is dropped and learnt again, while one
    kept as shares of the package ("shares") comes back as it was."""
    prior = FleetPrior()
    for _ in range(10):
        prior.add(0.1)
    prior.refresh()
    data = prior.to_dict()
    assert FleetPrior.from_dict(data).speed == prior.speed == 0.125
    data["speeds"] = [c * 0 for c in data.pop("shares_per_unit")]
    data["speeds"][46] = 10.0  # 64-128 MB/s, as an older store keeps it
    assert FleetPrior.from_dict(data).speed is None


def test_spare_reads_go_to_the_eSIM_due_soonest_whatever_it_waits_for() -> None:
    """With budget left and nothing due, the next read goes to the eSIM due soonest, waiting
    or draining alike: every due time comes from the same threshold."""
    schedule = Schedule()
    finished = state("finished", 2.0, 0.0)
    finished.root = 0.1  # waiting for a top-up
    fast = state("fast", 6.0, 0.0)
    slow = state("slow", 9.0, 0.0)
    fresh = state("fresh", 4.0, 8.0)  # its cache is fresh until 8
    for s, share in ((fast, 0.2), (slow, 0.1), (fresh, 0.5), (finished, 0.01)):
        s.share = share
    for s in (finished, fast, slow, fresh):
        schedule.push(s)
    picked = [schedule.pick(1.0, spare=True) for _ in range(3)]
    assert picked == [finished, fast, slow]
    assert schedule.pick(1.0, spare=True) is None  # "fresh" may not be read yet
    assert schedule.pick(8.0, spare=True) is fresh


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
    # Priors: an installation per 36 units, a top-up per 216: read about sqrt(6) times as
    # often (the square-root law while the rate times the interval is small).
    assert settled / waiting == pytest.approx(math.sqrt(6), rel=0.15)
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
    # The peak counts the pauses an interval may span: at least the fastest interval's speed.
    assert (s.moves, s.still) == (2, 0.0)
    assert 10.0 <= s.peak < 30.0
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


def test_sessions_are_learnt_from_short_intervals_of_eSIMs_seen_moving() -> None:
    """How long sessions and pauses last comes from the fleet: a short interval after a
    moving one that shows no use ends a session, one after a still one that shows use
    starts one; long intervals (which may span both) and unknown eSIMs teach nothing."""
    prior = FleetPrior()
    stop, resume = prior.stop_rate(UNIT), prior.resume_rate(UNIT)
    s = SimState("x", 0.0)
    s.usage, s.read_at, s.peak, s.moves = usage(800), 0.0, 10.0, 1
    observe(s, usage(800), UNIT, prior, UNIT)  # online at 0, nothing used: session over
    assert prior.sessions[:2] == [1.0, UNIT]
    assert prior.stop_rate(UNIT) > stop
    s.read_at = UNIT
    observe(s, usage(700), 2 * UNIT, prior, UNIT)  # offline at UNIT, used: a session began
    assert prior.sessions[2:] == [1.0, UNIT]
    assert prior.resume_rate(UNIT) > resume
    s.usage, s.read_at = usage(700), 2 * UNIT
    observe(s, usage(700), 12 * UNIT, prior, UNIT)  # ten units: could be anything
    fresh = SimState("y", 0.0)
    fresh.usage, fresh.read_at = usage(900), 0.0
    observe(fresh, usage(900), UNIT, prior, UNIT)  # never seen moving
    assert prior.sessions == [1.0, UNIT, 1.0, UNIT]
    assert FleetPrior.from_dict(prior.to_dict()).sessions == prior.sessions


def test_a_new_package_or_status_clears_the_evidence_that_an_eSIM_is_idle() -> None:
    """Time spent FINISHED (or NOT_ACTIVE) shows no use, as an idle eSIM's does; once topped
    up (or installed) that says nothing of the new package, which is planned as fresh."""
    prior = FleetPrior()
    for _ in range(10):
        prior.add(0.1)
    prior.refresh()
    s = SimState("x", 0.0)
    s.usage, s.read_at = usage(0, UsageStatus.FINISHED), 0.0
    observe(s, usage(0, UsageStatus.FINISHED), 50 * UNIT, prior, UNIT)
    assert s.still == 50 * UNIT
    s.read_at = 50 * UNIT
    topped_up = Usage(
        raw_remaining=1000,
        raw_total=1000,
        status=UsageStatus.ACTIVE,
        is_unlimited=False,
        expired_at=s.usage.expired_at + timedelta(days=30),  # type: ignore[operator]
    )
    observe(s, topped_up, 51 * UNIT, prior, UNIT)
    assert s.still == 0.0
    s.usage, s.read_at, s.eligible_at = topped_up, 51 * UNIT, 52 * UNIT
    fresh = SimState("y", 0.0)
    fresh.usage, fresh.read_at, fresh.eligible_at = topped_up, 51 * UNIT, 52 * UNIT
    b = budget()
    due = [plan(x, 51 * UNIT, WALL, TIMING, prior, (0.75, 0.9), b) for x in (s, fresh)]
    assert due[0] == due[1]

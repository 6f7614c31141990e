"""The speed estimates the schedule rests on: a top-up's first reading, and an eSIM's own
burst speed once it has shown enough moving intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from esim_async import Usage, UsageStatus
from esim_async.monitor.estimator import (
    MEASURED_MARGIN,
    MEASURED_MOVES,
    OPTIMISM,
    Budget,
    FleetPrior,
    SimState,
    Timing,
    observe,
    plan,
    upper_rate,
)

UNIT = 10.0
TIMING = Timing(UNIT, expiring_within=0.0)
WALL = datetime(2030, 1, 1, tzinfo=UTC).timestamp()


def usage(
    remaining: int,
    status: UsageStatus = UsageStatus.ACTIVE,
    total: int = 1000,
    days: int = 30,
) -> Usage:
    return Usage(
        raw_remaining=remaining,
        raw_total=total,
        status=status,
        is_unlimited=False,
        expired_at=datetime.fromtimestamp(WALL, UTC) + timedelta(days=days),
    )


def test_a_top_ups_first_reading_shows_how_fast_its_user_goes() -> None:
    """A new package already 20 % used at its first reading was used since the last reading
    before the top-up: at least that fast. A finished eSIM never seen moving is then known to
    move, and is read again well before it could reach its first threshold at that pace."""
    prior = FleetPrior()
    budget = Budget()
    budget.per_second, budget.tracked = 5.0, 100
    s = SimState("x", 0.0)
    observe(s, usage(0, UsageStatus.FINISHED), 0.0, prior, UNIT)
    s.usage, s.read_at = usage(0, UsageStatus.FINISHED), 0.0
    now = 5 * UNIT
    topped_up = usage(800, days=60)  # 200 MB of a new 1,000 MB package in 5 units
    observe(s, topped_up, now, prior, UNIT)
    s.usage, s.read_at, s.eligible_at = topped_up, now, now + UNIT
    assert s.moves == 1
    rate = upper_rate(s, prior, UNIT)
    assert rate is not None and rate >= 200 / now
    # 550 MB to the 75 % mark at no more than 200 MB per 5 units: not before 13.75 units;
    # read by then, not at the cap.
    due = plan(s, now, WALL, TIMING, prior, (0.75, 0.9), budget)
    assert now + UNIT <= due <= now + 550 / (200 / now)


def test_an_eSIMs_speed_is_its_fastest_interval_once_it_has_shown_enough() -> None:
    """A user online for long stretches at 10 MB/s, read every 6 units: each interval could
    have spanned a pause, so a single one is taken generously (its peak, 1.7 times the speed
    here). Once it has shown :data:`MEASURED_MOVES` of them, its fastest interval is its
    speed, with a margin of :data:`MEASURED_MARGIN`."""
    prior = FleetPrior()
    s = SimState("x", 0.0)
    remaining, now = 100_000, 0.0
    first = usage(remaining, total=200_000)
    observe(s, first, now, prior, UNIT)
    s.usage, s.read_at = first, now
    rates = []
    for _ in range(MEASURED_MOVES):
        now += 6 * UNIT
        remaining -= int(10 * 6 * UNIT)
        reading = usage(remaining, total=200_000)
        observe(s, reading, now, prior, UNIT)
        s.usage, s.read_at = reading, now
        rate = upper_rate(s, prior, UNIT)
        assert rate is not None
        rates.append(rate)
    assert min(rates[:-1]) > 1.6 * 10.0  # few intervals yet: the generous peak
    assert rates[-1] == OPTIMISM * MEASURED_MARGIN * 10.0

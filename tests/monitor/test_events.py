"""What two consecutive readings of one eSIM report: thresholds, top-ups, status, exhaustion,
expiry (the pure rules the monitor applies to every reading)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from esim_async import Usage, UsageStatus
from esim_async.monitor.events import EXHAUSTED_BIT, detect

ICCID = "8944465400000267221"
NOW = datetime(2030, 1, 1, tzinfo=UTC)
THRESHOLDS = (0.75, 0.9)


def reading(
    remaining: int,
    total: int = 1000,
    status: UsageStatus = UsageStatus.ACTIVE,
    *,
    unlimited: bool = False,
    expires: datetime | None = None,
) -> Usage:
    return Usage(
        raw_remaining=remaining,
        raw_total=total,
        status=status,
        is_unlimited=unlimited,
        expired_at=expires or NOW + timedelta(days=30),
    )


def run(
    *readings: Usage, fired: int = 0, window: float = 0.0
) -> tuple[list[tuple[str, float | None]], int]:
    """Feed the readings in order; the events of all of them and the final fired set."""
    out: list[tuple[str, float | None]] = []
    previous = None
    for usage in readings:
        events, fired = detect(
            ICCID,
            previous,
            usage,
            fired,
            THRESHOLDS,
            now_wall=NOW.timestamp(),
            detected_at=NOW,
            expiring_within=window,
        )
        out += [(e.kind, e.threshold) for e in events]
        previous = usage
    return out, fired


def test_a_jump_fires_every_threshold_at_or_below_the_fraction_shown() -> None:
    events, _ = run(reading(400), reading(80))  # 60 % used, then 92 %
    assert events == [("threshold", 0.75), ("threshold", 0.9)]


def test_a_threshold_fires_exactly_when_reached_not_before() -> None:
    events, _ = run(reading(251), reading(250), reading(101), reading(100))
    assert events == [("threshold", 0.75), ("threshold", 0.9)]


def test_finished_in_the_same_reading_fires_the_thresholds_then_exhausted() -> None:
    events, _ = run(reading(400), reading(0, status=UsageStatus.FINISHED))
    assert events == [
        ("status", None),
        ("threshold", 0.75),
        ("threshold", 0.9),
        ("exhausted", None),
    ]


def test_each_threshold_fires_once_per_package() -> None:
    events, _ = run(reading(200), reading(150), reading(120), reading(50), reading(40))
    assert events == [("threshold", 0.75), ("threshold", 0.9)]


def test_a_top_up_rearms_the_thresholds() -> None:
    # 95 % used, then a top-up (total and remaining rise), then the new package drains.
    events, _ = run(reading(50), reading(2050, total=2000 + 50), reading(100, total=2050))
    assert events == [
        ("threshold", 0.75),
        ("threshold", 0.9),
        ("topup", None),
        ("threshold", 0.75),
        ("threshold", 0.9),
    ]


def test_remaining_rising_alone_is_a_top_up() -> None:
    events, _ = run(
        reading(0, status=UsageStatus.FINISHED),
        reading(1000),  # same total, data back: a new package of the same size
        reading(240),
    )
    assert events == [
        ("threshold", 0.75),
        ("threshold", 0.9),
        ("exhausted", None),
        ("topup", None),
        ("status", None),
        ("threshold", 0.75),
    ]


def test_unlimited_packages_have_no_data_thresholds() -> None:
    events, fired = run(reading(0, 0, unlimited=True), reading(0, 0, unlimited=True))
    assert events == []
    assert fired == 0


def test_status_changes_are_reported() -> None:
    events, _ = run(
        reading(1000, status=UsageStatus.NOT_ACTIVE),
        reading(1000),
        reading(600, status=UsageStatus.EXPIRED),
        reading(0, 0, status=UsageStatus.RECYCLED),
    )
    assert events == [("status", None), ("status", None), ("status", None)]


def test_expiring_fires_once_when_the_expiry_is_within_the_window() -> None:
    far = reading(900, expires=NOW + timedelta(days=5))
    near = reading(800, expires=NOW + timedelta(days=2))
    events, _ = run(far, near, near, window=timedelta(days=3).total_seconds())
    assert events == [("expiring", None)]


def test_a_new_expiry_date_is_a_new_package_and_rearms_expiring() -> None:
    near = reading(800, expires=NOW + timedelta(days=2))
    extended = reading(800, expires=NOW + timedelta(days=2, hours=12))
    events, _ = run(near, extended, window=timedelta(days=3).total_seconds())
    assert events == [("expiring", None), ("topup", None), ("expiring", None)]


def test_what_fired_before_is_not_fired_again() -> None:
    events, fired = run(reading(50), fired=0b11 | EXHAUSTED_BIT)
    assert events == []
    assert fired == 0b11 | EXHAUSTED_BIT


def test_a_top_up_used_up_between_two_readings_shows_in_its_later_expiry() -> None:
    done = reading(0, status=UsageStatus.FINISHED, expires=NOW + timedelta(days=1))
    again = reading(0, status=UsageStatus.FINISHED, expires=NOW + timedelta(days=31))
    events, _ = run(done, again)
    assert events == [
        ("threshold", 0.75),
        ("threshold", 0.9),
        ("exhausted", None),
        ("topup", None),
        ("threshold", 0.75),
        ("threshold", 0.9),
        ("exhausted", None),
    ]


def test_an_installation_that_moves_the_expiry_is_not_a_top_up() -> None:
    waiting = reading(1000, status=UsageStatus.NOT_ACTIVE, expires=NOW + timedelta(days=10))
    installed = reading(1000, expires=NOW + timedelta(days=30))
    events, _ = run(waiting, installed)
    assert events == [("status", None)]

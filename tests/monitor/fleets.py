"""Small hand-made fleets for the monitor tests (dates relative to the virtual wall clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from esim_async.testing import Fleet, SimRecord
from esim_async.testing.life import LifeProfile

from .rig import WALL

#: A small fleet's life in seconds of the clock: drains 12x apart, sessions and pauses of a
#: few seconds, every NOT_ACTIVE eSIM installed and half of the finished ones topped up.
BURSTY = LifeProfile(
    drain_90=(10.0, 120.0),
    session=8.0,
    pause=6.0,
    idle_share=0.1,
    install_share=1.0,
    install_after=30.0,
    topup_share=0.5,
    topup_after=20.0,
)


def stamp(days: float) -> str:
    """``days`` after the virtual clock's start, in the API's date format."""
    when = datetime.fromtimestamp(WALL, UTC) + timedelta(days=days)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def iccid(n: int) -> str:
    return Fleet.make_iccid(n)


def record(
    n: int,
    remaining: int,
    total: int = 1000,
    status: str = "ACTIVE",
    *,
    expires_in: float = 30.0,
    unlimited: bool = False,
    kind: str = "active",
) -> SimRecord:
    return SimRecord(
        iccid(n),
        kind,
        remaining,
        total,
        status,
        stamp(expires_in) if status != "RECYCLED" else None,
        unlimited,
    )


def fleet(*records: SimRecord) -> Fleet:
    f = Fleet()
    for r in records:
        f.add(r)
    return f

"""A deterministic fleet of eSIMs with realistic usage figures, for the emulator.

Dates are relative to a reference time (the wall clock when the fleet is generated, unless
given) and fit each eSIM's status: active and not-yet-active eSIMs expire after it, expired ones
before it, finished ones keep their package's expiry, recycled ones report none.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .catalogue import PACKAGES
from .clock import utc_now

__all__ = ["INSTALL_WINDOW", "Fleet", "SimRecord", "stamp"]

# Share of each kind in a generated fleet (the rest is ACTIVE with data left).
_KINDS: tuple[tuple[str, float], ...] = (
    ("unlimited", 0.08),
    ("recycled", 0.03),
    ("expired", 0.06),
    ("finished", 0.06),
    ("not_active", 0.07),
    ("voice_text", 0.10),
    ("low", 0.10),
)


@dataclass(slots=True)
class SimRecord:
    """One emulated eSIM and what its usage endpoint reports."""

    iccid: str
    kind: str
    remaining: int
    total: int
    status: str
    expired_at: str | None
    is_unlimited: bool | None
    remaining_voice: int = 0
    remaining_text: int = 0
    total_voice: int = 0
    total_text: int = 0
    #: The package the eSIM was ordered with (a catalogue package id).
    package_id: str = "change-7days-1gb"
    brand_settings_name: str | None = None
    #: Top-up package ids bought for this eSIM, oldest first.
    topups: list[str] = field(default_factory=list)
    #: When the eSIM was ordered, activated (``None``: not yet) and recycled (``None``: not),
    #: as ``"YYYY-MM-DD HH:MM:SS"`` in UTC like ``expired_at``.
    created_at: str | None = None
    activated_at: str | None = None
    recycled_at: str | None = None

    def usage(self) -> dict[str, Any]:
        """The ``data`` object of ``GET /sims/{iccid}/usage``."""
        return {
            "remaining": self.remaining,
            "total": self.total,
            "expired_at": self.expired_at,
            "is_unlimited": self.is_unlimited,
            "status": self.status,
            "remaining_voice": self.remaining_voice,
            "remaining_text": self.remaining_text,
            "total_voice": self.total_voice,
            "total_text": self.total_text,
        }


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


@dataclass
class Fleet:
    """A set of eSIMs keyed by ICCID.

    ``Fleet.generate(300, seed=1)`` yields 300 eSIMs: a mix of active, unlimited, recycled,
    expired, finished, not-yet-active, low-data and voice+text eSIMs. The same seed and
    reference time ``now`` always yield the same fleet; without ``now`` the dates are relative
    to the time of generation, kept in ``generated_at``.
    """

    sims: dict[str, SimRecord] = field(default_factory=dict)
    #: The reference time the fleet's dates were generated against (UTC).
    generated_at: datetime | None = None

    @classmethod
    def generate(
        cls, size: int, *, seed: int = 0, now: datetime | None = None, prefix: str = "894400"
    ) -> Fleet:
        """``size`` eSIMs drawn from ``seed``, dated relative to ``now`` (default: the current
        UTC time; a naive ``now`` is read as UTC)."""
        rng = random.Random(seed)
        # Times of day come from their own stream, so kinds and figures depend on the seed only.
        clock_rng = random.Random(f"fleet-dates:{seed}")
        if now is None:
            base = utc_now()
        elif now.tzinfo is None:
            base = now.replace(tzinfo=UTC)
        else:
            base = now.astimezone(UTC)
        fleet = cls(generated_at=base)
        packages = [p for _, p in PACKAGES.values() if p["type"] == "sim"]
        for n in range(size):
            body = f"{prefix}{seed % 1000:03d}{n:09d}"[:18]
            package = packages[n % len(packages)]
            sim = _make(body + _luhn_digit(body), rng, clock_rng, base, int(package["day"]))
            sim.package_id = package["id"]
            fleet.add(sim)
        return fleet

    @staticmethod
    def make_iccid(n: int, prefix: str = "894499") -> str:
        """A valid-looking ICCID (Luhn check digit) for number ``n``."""
        body = f"{prefix}{n:012d}"[:18]
        return body + _luhn_digit(body)

    def add(self, sim: SimRecord) -> None:
        self.sims[sim.iccid] = sim

    def __len__(self) -> int:
        return len(self.sims)

    def __contains__(self, iccid: object) -> bool:
        return iccid in self.sims

    def get(self, iccid: str) -> SimRecord | None:
        return self.sims.get(iccid)

    def iccids(self) -> list[str]:
        return list(self.sims)

    def by_kind(self, kind: str) -> list[str]:
        return [s.iccid for s in self.sims.values() if s.kind == kind]


#: Days an ordered eSIM can wait before it is installed (the catalogue's ``install_window_days``).
INSTALL_WINDOW = timedelta(days=180)


def stamp(when: datetime) -> str:
    """``when`` in the API's date format, ``"YYYY-MM-DD HH:MM:SS"`` (UTC)."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _make(
    iccid: str, rng: random.Random, clock_rng: random.Random, base: datetime, validity: int
) -> SimRecord:
    roll = rng.random()
    kind = "active"
    acc = 0.0
    for name, share in _KINDS:
        acc += share
        if roll < acc:
            kind = name
            break
    total = rng.choice([1024, 2048, 3072, 5120, 10240, 20480])
    days_ahead = rng.randint(1, 30)
    days_ago = rng.randint(1, 30)

    def moment(days: int) -> timedelta:
        # Whole days plus a time of day: at least a minute, less than a day.
        return timedelta(days=days, seconds=clock_rng.randint(60, 86_399))

    # The package runs ``validity`` days from activation; eSIMs in use are part-way through.
    expires = base + moment((days_ahead - 1) % validity)
    lapsed = base - moment(days_ago - 1)
    ordered_lead = timedelta(seconds=clock_rng.randint(600, 3 * 86_400))
    if kind == "recycled":
        created = stamp(lapsed - timedelta(days=180 + days_ahead))
        return SimRecord(
            iccid, kind, 0, 0, "RECYCLED", None, None, created_at=created, recycled_at=stamp(lapsed)
        )
    if kind == "not_active":
        install_by = stamp(lapsed + INSTALL_WINDOW)
        return SimRecord(
            iccid, kind, total, total, "NOT_ACTIVE", install_by, False, created_at=stamp(lapsed)
        )
    expiry = lapsed if kind == "expired" else expires
    activated = expiry - timedelta(days=validity)
    status, remaining, is_unlimited = "ACTIVE", 0, False
    voice = text = remaining_voice = remaining_text = 0
    if kind == "unlimited":
        total, is_unlimited = 0, True
    elif kind == "expired":
        status, remaining = "EXPIRED", rng.randint(0, total)
    elif kind == "finished":
        status = "FINISHED"  # the data ran out before the package's validity did
    elif kind == "voice_text":
        voice, text = rng.choice([(30, 50), (60, 100), (100, 100)])
        remaining = rng.randint(0, total)
        remaining_voice, remaining_text = rng.randint(0, voice), rng.randint(0, text)
    elif kind == "low":
        remaining = rng.randint(0, total // 20)
    else:
        remaining = rng.randint(total // 5, total)
    return SimRecord(
        iccid,
        kind,
        remaining,
        total,
        status,
        stamp(expiry),
        is_unlimited,
        remaining_voice,
        remaining_text,
        voice,
        text,
        created_at=stamp(activated - ordered_lead),
        activated_at=stamp(activated),
    )

"""A deterministic fleet of eSIMs with realistic usage figures, for the emulator."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Fleet", "SimRecord"]

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

    ``Fleet.generate(300, seed=1)`` always yields the same 300 eSIMs: a mix of active,
    unlimited, recycled, expired, finished, not-yet-active, low-data and voice+text eSIMs.
    """

    sims: dict[str, SimRecord] = field(default_factory=dict)

    @classmethod
    def generate(
        cls, size: int, *, seed: int = 0, now: datetime | None = None, prefix: str = "894400"
    ) -> Fleet:
        rng = random.Random(seed)
        base = now or datetime(2026, 1, 1, tzinfo=UTC)
        fleet = cls()
        from .catalogue import CATALOGUE

        sim_packages = [
            p["id"]
            for entry in CATALOGUE
            for op in entry["operators"]
            for p in op["packages"]
            if p["type"] == "sim"
        ]
        for n in range(size):
            body = f"{prefix}{seed % 1000:03d}{n:09d}"[:18]
            iccid = body + _luhn_digit(body)
            sim = _make(iccid, rng, base)
            sim.package_id = sim_packages[n % len(sim_packages)]
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


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _make(iccid: str, rng: random.Random, base: datetime) -> SimRecord:
    roll = rng.random()
    kind = "active"
    acc = 0.0
    for name, share in _KINDS:
        acc += share
        if roll < acc:
            kind = name
            break
    total = rng.choice([1024, 2048, 3072, 5120, 10240, 20480])
    future = _stamp(base + timedelta(days=rng.randint(1, 30)))
    past = _stamp(base - timedelta(days=rng.randint(1, 30)))
    if kind == "unlimited":
        return SimRecord(iccid, kind, 0, 0, "ACTIVE", future, True)
    if kind == "recycled":
        return SimRecord(iccid, kind, 0, 0, "RECYCLED", None, None)
    if kind == "expired":
        return SimRecord(iccid, kind, rng.randint(0, total), total, "EXPIRED", past, False)
    if kind == "finished":
        return SimRecord(iccid, kind, 0, total, "FINISHED", future, False)
    if kind == "not_active":
        return SimRecord(iccid, kind, total, total, "NOT_ACTIVE", None, False)
    if kind == "voice_text":
        voice, text = rng.choice([(30, 50), (60, 100), (100, 100)])
        return SimRecord(
            iccid,
            kind,
            rng.randint(0, total),
            total,
            "ACTIVE",
            future,
            False,
            rng.randint(0, voice),
            rng.randint(0, text),
            voice,
            text,
        )
    if kind == "low":
        return SimRecord(iccid, kind, rng.randint(0, total // 20), total, "ACTIVE", future, False)
    return SimRecord(iccid, kind, rng.randint(total // 5, total), total, "ACTIVE", future, False)

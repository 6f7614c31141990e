"""The emulator's generated fleet: dates relative to the generation time, consistent with each
eSIM's status, and deterministic for a seed and a reference time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from esim_async import AiraloClient, UsageStatus
from esim_async.cli import main
from esim_async.testing import Emulator, Fleet, ServerLimits, SimRecord

T = datetime(2027, 3, 14, 15, 9, 26, tzinfo=UTC)
#: What the catalogue's operators allow between ordering and installing an eSIM.
INSTALL_WINDOW = timedelta(days=180)


def parse(stamp: str | None) -> datetime | None:
    if stamp is None:
        return None
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def inconsistencies(sim: SimRecord, now: datetime) -> list[str]:
    """Why ``sim``'s dates do not fit its status at ``now`` (empty: they fit)."""
    problems: list[str] = []
    expires = parse(sim.expired_at)
    activated = parse(sim.activated_at)
    created = parse(sim.created_at)

    def bad(why: str) -> None:
        problems.append(f"{sim.iccid} {sim.status}: {why} (expired_at={sim.expired_at})")

    if created is None or created > now:
        bad(f"created_at {sim.created_at} is missing or after generation")
    if sim.status == "ACTIVE":
        if expires is None or expires <= now:
            bad("an active eSIM expires in the future")
        if activated is None or activated > now:
            bad("an active eSIM was activated before now")
    elif sim.status == "NOT_ACTIVE":
        if expires is None or expires <= now:
            bad("a not-yet-active eSIM can still be installed: expiry in the future")
        if activated is not None:
            bad("a not-yet-active eSIM has no activation date")
    elif sim.status == "EXPIRED":
        if expires is None or expires >= now:
            bad("an expired eSIM expired in the past")
    elif sim.status == "FINISHED":
        if expires is None:
            bad("a finished eSIM keeps its package's expiry")
        if sim.remaining != 0:
            bad("a finished eSIM has no data left")
        if activated is None or activated > now:
            bad("a finished eSIM was activated before now")
    elif sim.status == "RECYCLED":
        if expires is not None:
            bad("a recycled eSIM reports no expiry")
        recycled = parse(sim.recycled_at)
        if recycled is None or recycled > now:
            bad("a recycled eSIM was recycled before now")
    else:
        bad("unexpected status")
    if activated is not None and expires is not None and not activated < expires:
        bad("activation comes before expiry")
    if created is not None and activated is not None and not created <= activated:
        bad("ordering comes before activation")
    return problems


def test_every_status_has_consistent_dates_at_the_reference_time() -> None:
    fleet = Fleet.generate(400, seed=1, now=T)
    assert fleet.generated_at == T
    problems = [p for sim in fleet.sims.values() for p in inconsistencies(sim, T)]
    assert problems == []
    statuses = {sim.status for sim in fleet.sims.values()}
    assert statuses == {"ACTIVE", "NOT_ACTIVE", "EXPIRED", "FINISHED", "RECYCLED"}
    # Expiry of active eSIMs lies within their package's validity, not years ahead.
    for sim in fleet.sims.values():
        if sim.status == "ACTIVE":
            expires = parse(sim.expired_at)
            assert expires is not None and expires - T <= timedelta(days=30)
        if sim.status == "NOT_ACTIVE":
            created, expires = parse(sim.created_at), parse(sim.expired_at)
            assert created is not None and expires == created + INSTALL_WINDOW


def test_default_reference_is_the_time_of_generation() -> None:
    """Without ``now`` the dates are relative to the wall clock when the fleet is generated,
    so a demo run today shows active eSIMs that expire after today."""
    before = datetime.now(UTC).replace(microsecond=0)
    fleet = Fleet.generate(200, seed=2026)
    after = datetime.now(UTC)
    assert fleet.generated_at is not None and before <= fleet.generated_at <= after
    active = [s for s in fleet.sims.values() if s.status == "ACTIVE"]
    assert active
    for sim in active:
        expires = parse(sim.expired_at)
        assert expires is not None and expires > after, (sim.iccid, sim.expired_at)
    problems = [p for sim in fleet.sims.values() for p in inconsistencies(sim, before)]
    assert problems == []


def test_same_seed_and_reference_time_give_the_same_fleet() -> None:
    a = Fleet.generate(120, seed=9, now=T)
    b = Fleet.generate(120, seed=9, now=T)
    assert a == b
    assert Fleet.generate(120, seed=10, now=T) != a
    # A later reference time moves every date by the same amount and changes nothing else.
    shift = timedelta(days=45, hours=3, seconds=7)
    later = Fleet.generate(120, seed=9, now=T + shift)
    for sim, moved in zip(a.sims.values(), later.sims.values(), strict=True):
        assert (sim.iccid, sim.status, sim.remaining, sim.total) == (
            moved.iccid,
            moved.status,
            moved.remaining,
            moved.total,
        )
        for name in ("expired_at", "activated_at", "created_at", "recycled_at"):
            before, after = parse(getattr(sim, name)), parse(getattr(moved, name))
            assert (before is None) == (after is None)
            if before is not None and after is not None:
                assert after - before == shift, name


def test_a_naive_reference_time_is_read_as_utc() -> None:
    naive = T.replace(tzinfo=None)
    assert Fleet.generate(30, seed=4, now=naive) == Fleet.generate(30, seed=4, now=T)


async def test_the_emulator_serves_consistent_dates() -> None:
    """Through the client: usage, the eSIM record and its package history agree."""
    fleet = Fleet.generate(40, seed=3)
    now = fleet.generated_at
    assert now is not None
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu,
        AiraloClient(
            "id", "secret", base_url=emu.url, iccid_rate=None, company_rate=None
        ) as client,
    ):
        for iccid, sim in fleet.sims.items():
            usage = await client.sims.usage(iccid)
            if usage.status in (UsageStatus.ACTIVE, UsageStatus.NOT_ACTIVE):
                assert usage.expired_at is not None and usage.expired_at > now
            elif usage.status is UsageStatus.EXPIRED:
                assert usage.expired_at is not None and usage.expired_at < now
            record = await client.sims.get(iccid)
            assert record.created_at == parse(sim.created_at)
            if sim.status == "RECYCLED":
                assert record.recycled and record.recycled_at == parse(sim.recycled_at)
        active = next(i for i, s in fleet.sims.items() if s.status == "ACTIVE")
        history = await client.sims.package_history(active)
        assert history[-1].activated_at == parse(fleet.sims[active].activated_at)
        assert history[-1].expired_at == parse(fleet.sims[active].expired_at)


async def test_ordered_and_topped_up_esims_keep_consistent_dates() -> None:
    fleet = Fleet.generate(40, seed=3)
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu,
        AiraloClient("id", "secret", base_url=emu.url) as client,
    ):
        order = await client.orders.create("change-7days-1gb", 1)
        iccid = order.sims[0].iccid
        assert iccid is not None
        now = datetime.now(UTC)
        ordered = emu.fleet.sims[iccid]
        assert ordered.status == "NOT_ACTIVE"
        assert inconsistencies(ordered, now) == []
        # Topping up an expired eSIM makes it active again, with an expiry ahead.
        expired = next(i for i, s in fleet.sims.items() if s.status == "EXPIRED")
        offered = await client.sims.topup_packages(expired)
        await client.orders.topup(offered[0].id, expired)
        usage = await client.sims.usage(expired, refresh=True)
        assert usage.status is UsageStatus.ACTIVE
        assert usage.expired_at is not None and usage.expired_at > now
        assert inconsistencies(emu.fleet.sims[expired], datetime.now(UTC)) == []


def test_sweep_emulator_shows_a_plausible_fleet(tmp_path: Path) -> None:
    """The main job on the bundled emulator: no active eSIM that expired months ago."""
    out = tmp_path / "out.jsonl"
    before = datetime.now(UTC).replace(microsecond=0)
    result = CliRunner().invoke(
        main,
        [
            "sweep",
            "--emulator",
            "--emulator-size",
            "40",
            "--company-rate",
            "40/1",
            "--out",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 40
    seen = set()
    for r in records:
        seen.add(r["status"])
        expires = datetime.fromisoformat(r["expired_at"]) if r["expired_at"] else None
        if r["status"] in ("ACTIVE", "NOT_ACTIVE"):
            assert expires is not None and expires > before, r
        elif r["status"] == "EXPIRED":
            assert expires is not None and expires < before, r
    assert "ACTIVE" in seen

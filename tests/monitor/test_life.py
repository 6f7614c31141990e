"""Fleet life on the emulator: exact crossing times, installations, top-ups, determinism, and a
monitor watching it (no event before its crossing, every crossing found)."""

from __future__ import annotations

import math

from esim_async import AiraloClient, ManualClock, Rate
from esim_async.testing import Emulator, Fleet
from esim_async.testing.life import FleetLife, LifeProfile

from .fleets import BURSTY, fleet, iccid, record
from .rig import rig

#: Always online (pauses of a nanosecond), 90 % of a package in 10 s of the clock.
STEADY = LifeProfile(
    drain_90=(10.0, 10.0), session=1e12, pause=1e-9, idle_share=0.0, topup_share=0.0
)


def reported_used(emu: Emulator, sim: str) -> int:
    record = emu.fleet.get(sim)
    assert record is not None
    return int(record.total) - int(record.remaining)


async def test_crossings_are_recorded_exactly_when_the_reported_data_reaches_them() -> None:
    clock = ManualClock()
    sim = iccid(1)
    emu = Emulator(fleet=fleet(record(1, 1000)), clock=clock)  # 0 % used, 90 MB/s
    life = FleetLife(emu, profile=STEADY)
    clock.advance(5.0)
    life.sync()
    assert reported_used(emu, sim) == 450
    assert life.crossings == []
    clock.advance(7.0)  # 12 s: 1080 MB would be used, the package has 1000
    life.sync()
    assert [(c.threshold, c.package) for c in life.crossings] == [(0.75, 0), (0.9, 0), (1.0, 0)]
    assert [round(c.at, 9) for c in life.crossings] == [
        round(750 / 90, 9),
        round(900 / 90, 9),
        round(1000 / 90, 9),
    ]
    assert reported_used(emu, sim) == 1000
    assert emu.fleet.get(sim).status == "FINISHED"  # type: ignore[union-attr]
    assert [t.kind for t in life.transitions] == ["finished"]
    # Replaying the same life, the data shows a crossing from its recorded time on, not before.
    for crossing in life.crossings:
        replay_clock = ManualClock()
        replay = Emulator(fleet=fleet(record(1, 1000)), clock=replay_clock)
        again = FleetLife(replay, profile=STEADY)
        k = math.ceil(crossing.threshold * 1000)
        replay_clock.advance(crossing.at - 1e-6)
        again.sync()
        assert reported_used(replay, sim) < k
        replay_clock.advance(2e-6)
        again.sync()
        assert reported_used(replay, sim) >= k


async def test_installations_and_top_ups_come_and_rearm_the_crossings() -> None:
    clock = ManualClock()
    waiting, finished = iccid(1), iccid(2)
    f = fleet(
        record(1, 1000, status="NOT_ACTIVE", kind="not_active"),
        record(2, 0, status="FINISHED", kind="finished"),
    )
    emu = Emulator(fleet=f, clock=clock)
    profile = LifeProfile(
        drain_90=(10.0, 10.0),
        session=1e12,
        pause=1e-9,
        install_share=1.0,
        install_after=5.0,
        topup_share=1.0,
        topup_after=5.0,
    )
    life = FleetLife(emu, profile=profile, seed=3)
    assert (life.mode(waiting), life.mode(finished)) == ("waiting", "finished")
    clock.advance(1000.0)
    life.sync()
    kinds = {(t.iccid, t.kind) for t in life.transitions}
    assert {(waiting, "installed"), (finished, "topup")} <= kinds
    assert life.package(finished) >= 1
    # The topped-up package drained again: its crossings are recorded under its number.
    assert any(c.iccid == finished and c.package >= 1 for c in life.crossings_of(0.9))
    assert any(c.iccid == waiting for c in life.crossings_of(0.75))


async def test_the_same_seed_gives_the_same_life() -> None:
    def run(seed: int) -> list[tuple[str, float, float]]:
        clock = ManualClock()
        emu = Emulator(fleet=Fleet.generate(200, seed=4), clock=clock)
        life = FleetLife(emu, seed=seed, time_scale=3600.0)
        for _ in range(24):
            clock.advance(60.0)
            life.sync()
        return [(c.iccid, c.threshold, round(c.at, 6)) for c in life.crossings_of(0.9)]

    first = run(1)
    assert first == run(1)
    assert first != run(2)
    assert len(first) >= 10  # a day of fleet life per minute: plenty happens


async def test_attached_every_usage_request_sees_the_data_of_its_moment() -> None:
    clock = ManualClock()
    sim = iccid(1)
    async with Emulator(fleet=fleet(record(1, 1000)), clock=clock, cache_ttl=0.0) as emu:
        life = FleetLife(emu, profile=STEADY)
        life.attach()
        async with AiraloClient(
            "id", "secret", base_url=emu.url, cache_ttl=0.0, clock=clock
        ) as client:
            clock.advance(5.0)
            first = await client.sims.usage(sim)
            clock.advance(4.0)
            second = await client.sims.usage(sim)
        life.detach()
        assert emu.on_request is None
    assert (first.used, second.used) == (450, 810)


async def test_running_in_the_background_updates_the_whole_fleet() -> None:
    async with rig(fleet=fleet(record(1, 1000), record(2, 1000))) as r:
        life = FleetLife(r.emu, profile=STEADY, clock=r.clock)
        async with life.running(0.5):
            await r.clock.run(4.0, 0.5)
        assert reported_used(r.emu, iccid(1)) == reported_used(r.emu, iccid(2)) == 360


async def test_a_monitor_finds_every_crossing_and_never_before_it() -> None:
    async with rig(
        fleet=Fleet.generate(30, seed=11), cache_ttl=1.0, company=Rate(20, 1.0), per_key=None
    ) as r:
        life = FleetLife(r.emu, profile=BURSTY, seed=5, clock=r.clock)
        life.attach()
        monitor = r.monitor()
        await monitor.track(r.emu.fleet.iccids())
        async with r.running(monitor):
            await r.clock.run(60.0, 0.3)
        end = r.clock.now()
        life.sync()
        crossings = [c for c in life.crossings_of(0.9) if c.at < end - 5.0]
        assert len(crossings) >= 5
        found = [e for e in r.events if e.kind == "threshold" and e.threshold == 0.9]
        for crossing in crossings:
            later = [e for e in found if e.iccid == crossing.iccid and e.at >= crossing.at]
            assert later, crossing
        # No event before its crossing: every 0.9 event follows a crossing of the same eSIM,
        # or shows a package already past 90 % at its first reading.
        for event in found:
            if event.previous is None:
                continue
            assert any(c.iccid == event.iccid and c.at <= event.at for c in life.crossings), event
        assert r.rate_limited == 0

"""No fixed durations: a monitor whose client has every interval ten times longer (cache TTL,
limits), watching a fleet that lives ten times slower, does the same thing ten times slower.

Every interval the scheduler uses comes from the client and the readings, so the two runs read
the same eSIMs in the same order and report the same events; a duration written into the
policy would show as reads or events that differ."""

from __future__ import annotations

from collections import Counter

import pytest

from esim_async import Rate
from esim_async.testing import Fleet
from esim_async.testing.life import FleetLife

from .fleets import BURSTY
from .rig import rig


async def run(scale: float) -> tuple[list[tuple[float, str]], list[tuple[str, str, float | None]]]:
    """Reads (time / scale, ICCID) and events (ICCID, kind, threshold) of one run."""
    async with rig(
        fleet=Fleet.generate(30, seed=11),
        cache_ttl=1.0 * scale,
        company=Rate(20, 1.0 * scale),
        per_key=Rate(10, 3.0 * scale),
    ) as r:
        life = FleetLife(r.emu, profile=BURSTY, seed=5, clock=r.clock, time_scale=1.0 / scale)
        life.attach()
        monitor = r.monitor()
        await monitor.track(r.emu.fleet.iccids())
        async with r.running(monitor):
            await r.clock.run(60.0 * scale, 0.25 * scale)
        assert r.rate_limited == 0
        reads = [(t / scale, sim) for t, sim in r.arrivals]
        events: list[tuple[str, str, float | None]] = [
            (e.iccid, e.kind, e.threshold) for e in r.events
        ]
        return reads, events


@pytest.mark.timeout(120)
async def test_ten_times_slower_client_and_fleet_give_the_same_reads_and_events() -> None:
    fast_reads, fast_events = await run(1.0)
    slow_reads, slow_events = await run(10.0)
    assert len(fast_reads) > 100  # the run did something worth comparing
    assert Counter(sim for _, sim in fast_reads) == Counter(sim for _, sim in slow_reads)
    assert Counter(fast_events) == Counter(slow_events)
    # ... at the same scaled times (read times are on steps of the virtual clock).
    for (fast_t, fast_sim), (slow_t, slow_sim) in zip(
        sorted(fast_reads), sorted(slow_reads), strict=True
    ):
        assert (fast_sim, round(fast_t, 6)) == (slow_sim, round(slow_t, 6))

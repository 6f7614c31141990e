"""A monitor that resumes from a store written by a host whose wall clock was ahead (another
host taking the lease over, or a clock stepped back between runs) keeps its schedule: the
stored times are read relative to when the store was written, never as a wait for the skew."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from esim_async import AiraloClient, Rate
from esim_async.monitor import FleetMonitor

from .fleets import fleet, iccid, record
from .rig import Rig, VirtualClock, rig

UNIT = 10.0


class SkewedClock:
    """The rig's clock with a wall clock ``skew`` seconds off (monotonic time unchanged)."""

    def __init__(self, clock: VirtualClock, skew: float) -> None:
        self._clock = clock
        self._skew = skew

    def now(self) -> float:
        return self._clock.now()

    def wall(self) -> float:
        return self._clock.wall() + self._skew

    async def sleep(self, seconds: float) -> None:
        await self._clock.sleep(seconds)


def client(r: Rig, skew: float) -> AiraloClient:
    return AiraloClient(
        "id",
        "secret",
        base_url=r.emu.url,
        company_rate=Rate(5, 1.0),
        iccid_rate=Rate(10, 60.0),
        cache_ttl=UNIT,
        clock=SkewedClock(r.clock, skew),
    )


@pytest.mark.parametrize("skew", [-3600.0, 3600.0])
async def test_a_store_written_on_a_skewed_wall_clock_resumes_on_schedule(
    tmp_path: Path, skew: float
) -> None:
    path = tmp_path / "fleet.db"
    sims = [iccid(n) for n in range(1, 11)]
    async with rig(fleet=fleet(*(record(n, 900) for n in range(1, 11))), cache_ttl=UNIT) as r:
        async with client(r, 0.0) as first_client:
            first = FleetMonitor(first_client, store=path, expiring_within=0.0)
            await first.track(sims)
            async with r.running(first):
                await r.clock.run(35, 0.5)
        last_read = {s: r.reads(s)[-1] for s in sims}
        restarted_at = r.clock.now()
        r.events.clear()
        # The next run's wall clock is an hour behind (or ahead of) the one that wrote.
        async with client(r, skew) as second_client:
            second = FleetMonitor(second_client, store=path, expiring_within=0.0)
            async with r.running(second):
                r.emu.set_usage(sims[3], remaining=50)  # 95 %
                await r.clock.run(40, 0.5)
        # Found within the run, as without skew; behind, no eSIM is read sooner than the TTL.
        assert [(e.iccid, e.kind, e.threshold) for e in r.events] == [
            (sims[3], "threshold", 0.75),
            (sims[3], "threshold", 0.9),
        ]
        for s in sims:
            after = [t for t in r.reads(s) if t >= restarted_at]
            assert after, s  # every eSIM is read again within a few units
            if skew < 0:
                assert after[0] - last_read[s] >= UNIT - 1e-9
            assert all(b - a >= UNIT - 1e-9 for a, b in itertools.pairwise(after))
        # A wall clock ahead cannot be told from time that passed between the runs: each eSIM
        # may then be read once sooner than the TTL, never more.
        assert r.rate_limited == 0

"""Events nobody takes do not pile up without bound: past ``max_queued_events`` the oldest
go (counted, and still in the store), and a consumer that comes later gets the newest."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from esim_async.monitor import FleetMonitor
from esim_async.monitor.store import SqliteStore

from .fleets import fleet, iccid, record
from .rig import rig


async def test_a_full_queue_drops_its_oldest_events_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "fleet.db"
    sims = [iccid(n) for n in range(1, 7)]
    # Six eSIMs past 90 %: two threshold events each at their first reading, none taken.
    async with rig(fleet=fleet(*(record(n, 50) for n in range(1, 7))), cache_ttl=10.0) as r:
        monitor = r.monitor(store=path, max_queued_events=4)
        await monitor.track(sims)
        with caplog.at_level(logging.WARNING, logger="esim_async"):
            async with monitor:
                await r.clock.run(20, 0.5)
        taken = [(e.iccid, e.threshold) async for e in monitor.events()]
        assert monitor.stats.events["threshold"] == 12
        assert monitor.stats.events_dropped == 8
        assert len(taken) == 4  # the newest four, in order
        overflows = [m for m in caplog.messages if "dropping the oldest" in m]
        assert len(overflows) == 1  # logged once per overflow, not per event
    store = SqliteStore(path)
    await store.open()
    try:
        stored = await store.events()
    finally:
        await store.close()
    assert len(stored) == 12  # every event is still in the store


def test_max_queued_events_is_checked() -> None:
    with pytest.raises(ValueError, match="max_queued_events"):
        FleetMonitor(object(), max_queued_events=0)  # type: ignore[arg-type]

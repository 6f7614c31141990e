"""Stopping a monitor from two places at once (a shutdown hook and ``async with``): both
return once everything is written, and neither loses an event."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from esim_async.monitor.store import SqliteStore

from .fleets import fleet, iccid, record
from .rig import rig

UNIT = 10.0


async def test_two_concurrent_stops_write_every_event_before_either_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "fleet.db"
    sims = [iccid(n) for n in range(1, 7)]
    records = [record(n, 200 if n <= 3 else 900) for n in range(1, 7)]
    write = SqliteStore.save
    entered, gate = asyncio.Event(), asyncio.Event()

    async def slow_save(self: SqliteStore, rows: Any, events: Any, meta: Any) -> None:
        if events and not entered.is_set():
            entered.set()
            await gate.wait()  # the batch with the events is being written
        await write(self, rows, events, meta)

    monkeypatch.setattr(SqliteStore, "save", slow_save)
    async with rig(fleet=fleet(*records), cache_ttl=UNIT) as r:
        monitor = r.monitor(store=path)
        await monitor.track(sims)
        await monitor.start()
        collected: list[Any] = []

        async def collect() -> None:
            async for event in monitor.events():
                collected.append(event)

        consumer = asyncio.ensure_future(collect())
        while not entered.is_set():
            await r.clock.advance(0.5)
        # Reads go on while that batch is held: the other eSIMs' events come meanwhile.
        for _ in range(4):
            await r.clock.advance(0.5)
        first = asyncio.ensure_future(monitor.stop())
        second = asyncio.ensure_future(monitor.stop())
        await asyncio.sleep(0.05)
        # Neither stop may return while the batch is still on its way to the store.
        done_early = second.done() or first.done()
        gate.set()
        await asyncio.gather(first, second)
        await consumer
        assert not done_early
    store = SqliteStore(path)
    await store.open()
    try:
        logged = await store.events()
    finally:
        await store.close()
    assert len(collected) == 3
    assert len(logged) == len(collected)


async def test_an_event_fed_to_a_standby_is_in_the_store_after_it_stops(tmp_path: Path) -> None:
    """A standby (another monitor of the account holds the lease) reports a low-data webhook
    fed to it; once stopped, the event is in its store like every event it reported."""
    from esim_async.webhooks import LowDataEvent

    sims = [iccid(n) for n in range(1, 4)]
    async with rig(fleet=fleet(*(record(n, 900) for n in range(1, 4))), cache_ttl=UNIT) as r:
        holder = r.monitor(store=tmp_path / "holder.db")
        await holder.track(sims)
        standby = r.monitor(store=tmp_path / "standby.db")
        await standby.track(sims)
        async with holder:
            await r.clock.run(2, 0.5)
            await standby.start()
            await r.clock.run(2, 0.5)
            assert holder.active and not standby.active
            await standby.feed(LowDataEvent(iccid=sims[0], level="90%"))
            await r.clock.run(2, 0.5)
            await standby.stop()
    store = SqliteStore(tmp_path / "standby.db")
    await store.open()
    try:
        logged = [(e.iccid, e.kind) for e in await store.events()]
    finally:
        await store.close()
    assert logged == [(sims[0], "low_data")]

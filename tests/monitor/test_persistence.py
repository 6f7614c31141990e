"""The SQLite store: a restarted monitor resumes its schedule, re-emits nothing, and does not
re-read the fleet before it is useful; writes are batched."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from esim_async import AiraloClient, Rate
from esim_async.monitor import FleetMonitor
from esim_async.monitor.store import SqliteStore

from .fleets import fleet, iccid, record
from .rig import Rig, rig

UNIT = 10.0


def twenty() -> list[object]:
    # Ten eSIMs past 75 % (an event at their first read), ten fresh ones.
    return [record(n, 200 if n <= 10 else 900) for n in range(1, 21)]


def second_client(r: Rig) -> AiraloClient:
    """A new process's client: same account and emulator, an empty cache."""
    return AiraloClient(
        "id",
        "secret",
        base_url=r.emu.url,
        company_rate=Rate(5, 1.0),
        iccid_rate=Rate(10, 60.0),
        cache_ttl=UNIT,
        clock=r.clock,
    )


async def test_a_restart_resumes_the_schedule_and_re_emits_nothing(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    records = twenty()
    sims = [iccid(n) for n in range(1, 21)]
    async with rig(fleet=fleet(*records), cache_ttl=UNIT) as r:  # type: ignore[arg-type]
        first = r.monitor(store=path)
        assert await first.track(sims) == 20
        async with r.running(first):
            await r.clock.run(35, 0.5)
        emitted = list(r.events)
        assert sorted(e.iccid for e in emitted) == sims[:10]
        last_read = {s: r.reads(s)[-1] for s in sims}
        restarted_at = r.clock.now()
        before = len(r.arrivals)

        async with second_client(r) as client:
            second = FleetMonitor(client, store=path, expiring_within=0.0)
            assert await second.track(sims) == 0  # already tracked, from the store
            # Useful at once: every reading and estimate is back, without a request.
            assert len(r.arrivals) == before
            for s in sims:
                snap = second.snapshot(s)
                assert snap is not None and snap.usage is not None and snap.next_read is not None
            r.events.clear()
            async with r.running(second):
                await r.clock.run(4, 0.25)
                resumed = [i for t, i in r.arrivals[before:]]
                # The whole fleet could be read in 4 s: only the eSIMs due were.
                assert len(resumed) < len(sims) / 2
                r.emu.set_usage(sims[12], remaining=50)  # 95 %: new crossings still come
                await r.clock.run(30, 0.5)
            assert second.stats.loads == 1
        # Nothing was emitted again; the new crossings were, once each.
        assert [(e.iccid, e.kind, e.threshold) for e in r.events] == [
            (sims[12], "threshold", 0.75),
            (sims[12], "threshold", 0.9),
        ]
        # The schedule survived: no eSIM was read sooner than the TTL after its last read.
        for s in sims:
            after = [t for t in r.reads(s) if t >= restarted_at]
            assert not after or after[0] - last_read[s] >= UNIT - 1e-9
        assert r.rate_limited == 0

    store = SqliteStore(path)
    await store.open()
    try:
        logged = await store.events()
    finally:
        await store.close()
    assert [(e.iccid, e.kind) for e in logged] == [(e.iccid, e.kind) for e in emitted] + [
        (sims[12], "threshold"),
        (sims[12], "threshold"),
    ]


async def test_without_a_store_a_restart_reads_the_whole_fleet_again() -> None:
    """The contrast to the test above: the same restart, in memory."""
    sims = [iccid(n) for n in range(1, 21)]
    async with rig(fleet=fleet(*twenty()), cache_ttl=UNIT) as r:  # type: ignore[arg-type]
        first = r.monitor()
        await first.track(sims)
        async with r.running(first):
            await r.clock.run(35, 0.5)
        before = len(r.arrivals)
        async with second_client(r) as client:
            second = FleetMonitor(client, expiring_within=0.0)
            await second.track(sims)
            r.events.clear()
            async with r.running(second):
                await r.clock.run(4.5, 0.25)
        assert sorted(i for _, i in r.arrivals[before:]) == sims
        assert len(r.events) == 10  # everything past 75 % is reported again


async def test_writes_are_batched_and_untracked_eSIMs_leave_the_store(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    sims = [iccid(n) for n in range(1, 21)]
    async with rig(fleet=fleet(*twenty()), cache_ttl=UNIT) as r:  # type: ignore[arg-type]
        monitor = r.monitor(store=path)
        await monitor.track(sims)
        async with r.running(monitor):
            await r.clock.run(60, 0.5)
            assert await monitor.untrack(sims[:5]) == 5
            await r.clock.run(5, 0.5)
        reads = monitor.stats.reads
        assert reads >= 100
        # One write per unit of time, plus one soon after each batch of events, plus the last.
        assert monitor.stats.flushes <= 65 / UNIT + len(r.events) + 2 < reads / 4

        again = r.monitor(store=path)
        assert await again.track([]) == 0
        assert sorted(again.tracked()) == sims[5:]
        await again.stop()


async def test_stopping_while_a_batch_is_being_written_loses_no_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping (Ctrl-C in the command line) while the writer is in the middle of a batch:
    the batch is written whole before the store closes, so every event reported is stored."""
    path = tmp_path / "fleet.db"
    records = twenty()
    sims = [iccid(n) for n in range(1, 21)]
    entered, gate = asyncio.Event(), asyncio.Event()
    write = SqliteStore.save

    async def held_save(self: SqliteStore, rows: Any, events: Any, meta: Any) -> None:
        if events and not entered.is_set():
            entered.set()  # the first batch with events waits half-way
            await gate.wait()
        await write(self, rows, events, meta)

    monkeypatch.setattr(SqliteStore, "save", held_save)
    async with rig(fleet=fleet(*records), cache_ttl=UNIT) as r:  # type: ignore[arg-type]
        monitor = r.monitor(store=path)
        await monitor.track(sims)
        async with r.running(monitor):
            while not entered.is_set():
                await r.clock.run(0.5, 0.5)
            assert r.events  # reported, and on their way to the store
            # Stop while that batch is held; it is let through once the stop has begun.
            asyncio.get_running_loop().call_soon(gate.set)
        emitted = len(r.events)
    store = SqliteStore(path)
    await store.open()
    try:
        logged = await store.events()
    finally:
        await store.close()
    assert len(logged) == emitted


async def test_a_restart_keeps_each_eSIMs_measured_speed(tmp_path: Path) -> None:
    """An eSIM seen moving many times has its speed from its fastest interval; a restarted
    monitor assumes the same speed for it, without a request."""
    path = tmp_path / "fleet.db"
    watched = iccid(1)
    async with rig(fleet=fleet(record(1, 5000, 10_000)), cache_ttl=UNIT) as r:
        first = r.monitor(store=path)
        await first.track([watched])
        async with r.running(first):
            for step in range(1, 13):  # 10 MB per second, online all along
                r.emu.set_usage(watched, remaining=5000 - 100 * step)
                await r.clock.run(UNIT, 1.0)
        before = first.snapshot(watched)
        assert before is not None and before.upper_rate is not None
        reads = len(r.arrivals)

        async with second_client(r) as client:
            second = FleetMonitor(client, store=path, expiring_within=0.0)
            await second.track([watched])
            after = second.snapshot(watched)
            assert after is not None
            assert after.upper_rate == pytest.approx(before.upper_rate)
            assert len(r.arrivals) == reads

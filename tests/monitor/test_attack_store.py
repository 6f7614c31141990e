"""The SQLite store under faults: a batch that cannot be written (the file locked by another
process, a full disk) neither stops the monitor nor loses what it held."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from esim_async.monitor.store import SqliteStore

from .fleets import fleet, iccid, record
from .rig import rig

UNIT = 10.0


async def stored_events(path: Path) -> list[tuple[str, str, float | None]]:
    store = SqliteStore(path)
    await store.open()
    try:
        return [(e.iccid, e.kind, e.threshold) for e in await store.events()]
    finally:
        await store.close()


async def test_a_batch_that_cannot_be_written_is_kept_and_written_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "fleet.db"
    sims = [iccid(n) for n in range(1, 11)]
    # Five eSIMs past 75 % (an event at their first read), five fresh ones.
    records = [record(n, 200 if n <= 5 else 900) for n in range(1, 11)]
    write = SqliteStore.save
    failed: list[int] = []

    async def locked_once(self: SqliteStore, rows: Any, events: Any, meta: Any) -> None:
        if events and not failed:
            failed.append(len(events))
            raise sqlite3.OperationalError("database is locked")
        await write(self, rows, events, meta)

    monkeypatch.setattr(SqliteStore, "save", locked_once)
    async with rig(fleet=fleet(*records), cache_ttl=UNIT) as r:
        monitor = r.monitor(store=path)
        await monitor.track(sims)
        async with r.running(monitor):
            await r.clock.run(30, 0.5)
            assert failed, "no batch with events was written"
            assert monitor.active  # still reading after the failed write
            reads = monitor.stats.reads
            await r.clock.run(30, 0.5)
            assert monitor.stats.reads > reads
        emitted = [(e.iccid, e.kind, e.threshold) for e in r.events]
        assert sorted(e for e, _, _ in emitted) == sims[:5]
    # Every event reported is in the store, once.
    assert sorted(await stored_events(path)) == sorted(emitted)


async def test_an_unwritable_store_does_not_re_emit_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The eSIM rows of a failed batch are written with the next one: a restarted monitor
    knows what already fired and reports nothing again."""
    path = tmp_path / "fleet.db"
    sims = [iccid(n) for n in range(1, 7)]
    records = [record(n, 200 if n <= 3 else 900) for n in range(1, 7)]
    write = SqliteStore.save
    failed: list[int] = []

    async def locked_once(self: SqliteStore, rows: Any, events: Any, meta: Any) -> None:
        if rows and not failed:
            failed.append(len(rows))
            raise sqlite3.OperationalError("disk I/O error")
        await write(self, rows, events, meta)

    monkeypatch.setattr(SqliteStore, "save", locked_once)
    async with rig(fleet=fleet(*records), cache_ttl=UNIT) as r:
        first = r.monitor(store=path)
        await first.track(sims)
        async with r.running(first):
            await r.clock.run(30, 0.5)
        assert failed
        first_events = len(r.events)
        assert first_events >= 3
        second = r.monitor(store=path)
        async with r.running(second):
            await r.clock.run(30, 0.5)
        assert len(r.events) == first_events  # nothing reported twice
        assert r.rate_limited == 0


async def test_a_store_from_a_newer_version_is_refused_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    """A store written by a newer version (another layout of its rows) is neither read as
    this version's nor written over."""
    import msgspec

    path = tmp_path / "fleet.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE sims (iccid TEXT PRIMARY KEY, state BLOB NOT NULL)")
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB)")
        db.execute("INSERT INTO meta VALUES ('format', ?)", (msgspec.msgpack.encode(2),))
        db.execute(
            "INSERT INTO sims VALUES (?, ?)",
            (iccid(1), msgspec.msgpack.encode([None, None, None, None, 0.0])),
        )
    before = path.read_bytes()
    async with rig(fleet=fleet(record(1, 900)), cache_ttl=UNIT) as r:
        monitor = r.monitor(store=path)
        with pytest.raises(sqlite3.DatabaseError, match="newer version"):
            await monitor.track([iccid(1)])
        assert len(monitor) == 0
        assert r.arrivals == []
    assert path.read_bytes() == before


async def test_another_programs_database_is_not_taken_for_a_store(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    async with rig(fleet=fleet(record(1, 900)), cache_ttl=UNIT) as r:
        monitor = r.monitor(store=path)
        with pytest.raises(sqlite3.DatabaseError, match="not a fleet monitor"):
            await monitor.track([iccid(1)])
    with sqlite3.connect(path) as db:
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"users"}


async def test_a_track_the_store_refused_can_be_given_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``track`` whose rows the store refused (locked) tracks nothing, so that calling it
    again stores the eSIMs: a restarted monitor knows them."""
    path = tmp_path / "fleet.db"
    sims = [iccid(n) for n in range(1, 4)]
    add = SqliteStore.add
    refused: list[int] = []

    async def locked_once(self: SqliteStore, rows: Any) -> None:
        if not refused:
            refused.append(1)
            raise sqlite3.OperationalError("database is locked")
        await add(self, rows)

    monkeypatch.setattr(SqliteStore, "add", locked_once)
    async with rig(fleet=fleet(*(record(n, 900) for n in range(1, 4))), cache_ttl=UNIT) as r:
        monitor = r.monitor(store=path)
        with pytest.raises(sqlite3.OperationalError):
            await monitor.track(sims)
        assert await monitor.track(sims) == 3
        async with r.running(monitor):
            await r.clock.run(5, 0.5)
        restarted = r.monitor(store=path)
        assert await restarted.track([]) == 0
        assert sorted(restarted.tracked()) == sims


async def test_a_restart_with_other_thresholds_re_emits_no_threshold(tmp_path: Path) -> None:
    """What fired is kept by threshold value: a monitor restarted with a threshold added does
    not report again the thresholds already reported (and reports the new one once)."""
    path = tmp_path / "fleet.db"
    watched = iccid(1)
    async with rig(fleet=fleet(record(1, 200)), cache_ttl=UNIT) as r:  # 80 % used
        first = r.monitor(store=path, thresholds=(0.75, 0.9))
        await first.track([watched])
        async with r.running(first):
            await r.clock.run(15, 0.5)
        assert r.kinds(watched) == [("threshold", 0.75)]
        r.events.clear()
        second = r.monitor(store=path, thresholds=(0.5, 0.75, 0.9))
        async with r.running(second):
            await r.clock.run(30, 0.5)
            r.emu.set_usage(watched, remaining=50)  # 95 % used
            await r.clock.run(30, 0.5)
        assert r.kinds(watched) == [("threshold", 0.5), ("threshold", 0.9)]
        snapshot = second.snapshot(watched)
        assert snapshot is not None and snapshot.fired == (0.5, 0.75, 0.9)
        r.events.clear()
        # And back: fewer thresholds, nothing again.
        third = r.monitor(store=path, thresholds=(0.9,))
        async with r.running(third):
            await r.clock.run(30, 0.5)
        assert r.kinds(watched) == []


async def test_an_untrack_the_store_refused_can_be_given_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``untrack`` whose removal the store refused changes nothing, so that calling it again
    removes the eSIMs for good: a restarted monitor does not watch them again."""
    path = tmp_path / "fleet.db"
    sims = [iccid(n) for n in range(1, 4)]
    remove = SqliteStore.remove
    refused: list[int] = []

    async def locked_once(self: SqliteStore, iccids: Any) -> None:
        if not refused:
            refused.append(1)
            raise sqlite3.OperationalError("database is locked")
        await remove(self, iccids)

    monkeypatch.setattr(SqliteStore, "remove", locked_once)
    async with rig(fleet=fleet(*(record(n, 900) for n in range(1, 4))), cache_ttl=UNIT) as r:
        monitor = r.monitor(store=path)
        await monitor.track(sims)
        with pytest.raises(sqlite3.OperationalError):
            await monitor.untrack([sims[0]])
        assert sims[0] in monitor
        assert await monitor.untrack([sims[0]]) == 1
        restarted = r.monitor(store=path)
        assert await restarted.track([]) == 0
        assert sorted(restarted.tracked()) == sims[1:]

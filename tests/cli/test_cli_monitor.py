"""``esim-async monitor``: events as JSON Lines, resuming from the store, ``monitor status``,
and a clean stop on SIGINT."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from esim_async.cli import main
from esim_async.monitor.store import SqliteStore, StoredEvent, StoredSim

SMALL = ["--emulator", "--emulator-size", "60"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def key(record: dict[str, Any]) -> tuple[Any, ...]:
    """What tells one event from another (the same event emitted again has the same key)."""
    return tuple(record[k] for k in ("iccid", "kind", "threshold", "status", "remaining", "total"))


def stored(db: Path) -> tuple[list[tuple[str, StoredSim]], list[StoredEvent]]:
    async def load() -> tuple[list[tuple[str, StoredSim]], list[StoredEvent]]:
        store = SqliteStore(db)
        await store.open()
        try:
            rows, _ = await store.load()
            return rows, await store.events()
        finally:
            await store.close()

    return asyncio.run(load())


def test_emulator_run_writes_events_and_a_second_run_reemits_nothing(tmp_path: Path) -> None:
    db, events = tmp_path / "fleet.db", tmp_path / "events.jsonl"
    common = [*SMALL, "--db", str(db), "--events", str(events)]
    code, out, _ = run("monitor", *common, "--duration", "3")
    assert code == 0
    assert out == ""  # not a terminal: quiet
    first = records(events)
    assert first, "the draining fleet reports events within seconds"
    assert {"iccid", "kind", "threshold", "detected_at", "remaining", "total", "status"} <= set(
        first[0]
    )
    assert len({key(r) for r in first}) == len(first)
    code, _, _ = run("monitor", *common, "--duration", "3")
    assert code == 0
    both = records(events)
    assert both[: len(first)] == first
    # Nothing reported by the first run is reported again by the second.
    assert len({key(r) for r in both}) == len(both)
    _, stored_events = stored(db)
    assert len(stored_events) == len(both)
    assert Counter(e.kind for e in stored_events) == Counter(r["kind"] for r in both)


def test_status_prints_counts_matching_the_store(tmp_path: Path) -> None:
    db, events = tmp_path / "fleet.db", tmp_path / "events.jsonl"
    code, _, _ = run("monitor", *SMALL, "--db", str(db), "--events", str(events), "--duration", "2")
    assert code == 0
    code, out, _ = run("monitor", "status", "--db", str(db), "--json")
    assert code == 0
    status = json.loads(out)
    rows, stored_events = stored(db)
    assert status["tracked"] == len(rows) == 60
    expected = Counter(
        "missing" if row.missing else ("unread" if row.usage is None else str(row.usage.status))
        for _, row in rows
    )
    assert status["by_status"] == dict(expected)
    assert status["events"] == dict(Counter(e.kind for e in stored_events))
    assert set(status["last_event"]) == set(status["events"])
    assert 0 <= status["near_threshold"] <= status["tracked"]
    assert status["freshest_reading_age"] <= status["stalest_reading_age"]
    # The table shows the same counts.
    code, table, _ = run("monitor", "status", "--db", str(db))
    assert code == 0
    assert "tracked" in table and str(len(rows)) in table
    for kind, count in status["events"].items():
        assert f"events {kind}" in table and str(count) in table


def test_near_threshold_counts_readings_just_below_the_next_threshold(tmp_path: Path) -> None:
    from esim_async.metrics import is_near
    from esim_async.models.usage import Usage, UsageStatus

    def usage(remaining: int) -> Usage:
        return Usage(raw_remaining=remaining, raw_total=1000, status=UsageStatus.ACTIVE)

    marks = (0.75, 0.9)
    assert is_near(usage(260), (), marks)  # 74 % used, 0.75 next
    assert not is_near(usage(400), (), marks)  # 60 % used
    assert not is_near(usage(260), (0.75,), marks)  # 0.9 next, 74 % is far from it
    assert is_near(usage(120), (0.75,), marks)
    assert not is_near(usage(50), (0.75, 0.9), marks)  # nothing left to report
    assert not is_near(None, (), marks)


def test_monitor_needs_iccids_or_the_emulator() -> None:
    code, _, err = run("monitor", "--duration", "0")
    assert code == 2
    assert "--iccids" in err


def test_sigint_stops_cleanly_and_the_next_run_resumes(tmp_path: Path) -> None:
    db, events = tmp_path / "fleet.db", tmp_path / "events.jsonl"
    cmd = [sys.executable, "-m", "esim_async", "monitor", *SMALL, "--db", str(db)]
    cmd += ["--events", str(events)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 15
        while not records(events) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert records(events), "no event before the interruption"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, 130)
    assert b"Traceback" not in err
    first = records(events)
    _, stored_events = stored(db)
    # Every event reported before the stop is in the store, and written to the file.
    assert len(stored_events) == len(first)
    code, _, _ = run("monitor", *SMALL, "--db", str(db), "--events", str(events), "--duration", "2")
    assert code == 0
    both = records(events)
    assert len({key(r) for r in both}) == len(both)
    _, stored_events = stored(db)
    assert len(stored_events) == len(both)


def test_iccids_file_with_credentials_from_the_environment(tmp_path: Path) -> None:
    from esim_async.testing import Emulator, Fleet, ServerLimits

    fleet = Fleet.generate(20, seed=4)
    listed = list(fleet.iccids())[:12]
    (tmp_path / "fleet.txt").write_text("# tracked\n" + "\n".join(listed) + "\n")
    emu = Emulator(fleet=fleet, limits=ServerLimits.unlimited())
    import threading

    loop = asyncio.new_event_loop()
    started, stop = threading.Event(), asyncio.Event()

    async def serve() -> None:
        async with emu:
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert started.wait(10)
        events = tmp_path / "events.jsonl"
        result = CliRunner().invoke(
            main,
            [
                "monitor",
                "--iccids",
                str(tmp_path / "fleet.txt"),
                "--base-url",
                emu.url,
                "--events",
                str(events),
                "--duration",
                "2",
                "--company-rate",
                "40/1",
            ],
            env={"AIRALO_CLIENT_ID": "id", "AIRALO_CLIENT_SECRET": "secret"},
            catch_exceptions=False,
        )
        assert result.exit_code == 0
        got = records(events)
        # Every event is about a listed eSIM; the fleet has some beyond its thresholds.
        assert got and {r["iccid"] for r in got} <= set(listed)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()

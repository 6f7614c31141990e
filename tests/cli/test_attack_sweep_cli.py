"""``esim-async sweep`` and ``monitor status`` attacked from the outside: input files as editors
save them, output files that cannot be written, a sweep stopped by a signal, a slow pipe, and
the thresholds a store was written with."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from esim_async import Rate
from esim_async.cli import main
from esim_async.models.usage import Usage, UsageStatus
from esim_async.monitor.store import SqliteStore, StoredSim
from esim_async.testing import Emulator, Fleet, ServerLimits

FAST = ["--company-rate", "40/1", "--iccid-rate", "10/60"]
ENV = {"AIRALO_CLIENT_ID": "cli-id", "AIRALO_CLIENT_SECRET": "cli-secret"}


def run(*args: str, env: Mapping[str, str | None] | None = None, **kw: Any) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env, **kw)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.stdout, result.stderr


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class Served:
    """An emulator on its own loop in a thread, for commands that run their own loop."""

    def __init__(self, size: int, limits: ServerLimits) -> None:
        self.emu = Emulator(fleet=Fleet.generate(size, seed=2026), limits=limits)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),))
        self._started = threading.Event()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.emu:
            self._started.set()
            await self._stop.wait()

    def __enter__(self) -> Emulator:
        self._thread.start()
        assert self._started.wait(10)
        return self.emu

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def served() -> Iterator[Emulator]:
    with Served(12, ServerLimits.unlimited()) as emu:
        yield emu


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ----------------------------------------------------------------- input files


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda text: b"\xef\xbb\xbf" + text.encode(), id="utf-8 with BOM"),
        pytest.param(lambda text: text.encode("utf-16"), id="utf-16 with BOM"),
        pytest.param(
            lambda text: b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode(), id="BOM + CRLF"
        ),
    ],
)
def test_a_file_saved_with_a_byte_order_mark_is_read_whole(
    tmp_path: Path, encode: Callable[[str], bytes]
) -> None:
    fleet = Fleet.generate(6, seed=2026).iccids()
    source = tmp_path / "iccids.txt"
    source.write_bytes(encode("\n".join(fleet) + "\n"))
    out = tmp_path / "out.jsonl"
    code, _, _ = run(
        "sweep", "--emulator", "--emulator-size", "6", *FAST, "--iccids", str(source),
        "--out", str(out), "--quiet",
    )  # fmt: skip
    rows = records(out.read_text(encoding="utf-8"))
    assert [r["error"] for r in rows] == [None] * 6
    assert sorted(r["iccid"] for r in rows) == sorted(fleet)
    assert code == 0


def test_files_joined_with_their_byte_order_marks_are_read_whole(tmp_path: Path) -> None:
    # `cat a.txt b.txt > fleet.txt` keeps the second file's BOM in the middle.
    fleet = Fleet.generate(6, seed=2026).iccids()
    bom = b"\xef\xbb\xbf"
    raw = bom + "\n".join(fleet[:3]).encode() + b"\n" + bom + "\n".join(fleet[3:]).encode()
    code, out, _ = run(
        "sweep", "--emulator", "--emulator-size", "6", *FAST, "--iccids", "-", "--quiet",
        input=raw + b"\n",
    )  # fmt: skip
    rows = records(out)
    assert sorted(r["iccid"] for r in rows if r["error"] is None) == sorted(fleet)
    assert code == 0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_read_whole(tmp_path: Path, served: Emulator) -> None:
    # `--iccids <(command)` and named pipes: a pipe can be read once only.
    ids = served.fleet.iccids()
    fifo = tmp_path / "iccids.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("w") as f:
            f.write("\n".join(ids) + "\n")

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    code, out, err = run(
        "sweep", "--iccids", str(fifo), "--base-url", served.url, *FAST, "--quiet", env=ENV
    )  # fmt: skip
    writer.join(5)
    assert code == 0, err
    assert sorted(r["iccid"] for r in records(out)) == sorted(ids)


def test_monitor_reads_a_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    fleet = Fleet.generate(4, seed=2026).iccids()
    source = tmp_path / "iccids.txt"
    source.write_bytes(b"\xef\xbb\xbf# my fleet\n" + "\n".join(fleet).encode() + b"\n")
    db = tmp_path / "fleet.db"
    with Served(4, ServerLimits.unlimited()) as emu:
        code, _, err = run(
            "monitor", "--iccids", str(source), "--db", str(db), "--base-url", emu.url,
            "--duration", "0.5", "--quiet", env=ENV,
        )  # fmt: skip
    assert code == 0, err

    async def tracked() -> list[str]:
        store = SqliteStore(db)
        await store.open()
        try:
            rows, _ = await store.load()
            return sorted(iccid for iccid, _ in rows)
        finally:
            await store.close()

    assert asyncio.run(tracked()) == sorted(fleet)


# ----------------------------------------------------------------- output files


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("where", ["missing directory", "a directory"])
def test_an_output_that_cannot_be_opened_is_a_usage_error_before_any_request(
    tmp_path: Path, served: Emulator, where: str, resume: bool
) -> None:
    source = tmp_path / "iccids.txt"
    source.write_text("\n".join(served.fleet.iccids()) + "\n")
    out = tmp_path / "no-such-dir" / "out.jsonl" if where == "missing directory" else tmp_path
    args = ["sweep", "--iccids", str(source), "--base-url", served.url, "--out", str(out)]
    code, _, err = run(*args, *(["--resume"] if resume else []), env=ENV)
    assert code == 2
    assert "--out" in err and str(out) in err
    assert "Traceback" not in err
    assert served.stats.arrivals == Counter()  # not even a token was asked for


@pytest.mark.parametrize("resume", [False, True])
def test_an_output_that_is_the_input_file_is_refused_and_left_alone(
    tmp_path: Path, served: Emulator, resume: bool
) -> None:
    source = tmp_path / "fleet.txt"
    text = "\n".join(served.fleet.iccids()) + "\n"
    source.write_text(text)
    same = tmp_path / "." / "fleet.txt"  # the same file, spelt another way
    args = ["sweep", "--iccids", str(source), "--base-url", served.url, "--out", str(same)]
    code, _, err = run(*args, *(["--resume"] if resume else []), env=ENV)
    assert code == 2
    assert "--iccids" in err and "--out" in err
    assert source.read_text() == text  # the fleet list is not overwritten
    assert served.stats.arrivals == Counter()


@pytest.mark.parametrize(("first", "then"), [("csv", "jsonl"), ("jsonl", "csv")])
def test_resume_in_another_format_is_refused_before_any_request(
    tmp_path: Path, served: Emulator, first: str, then: str
) -> None:
    source = tmp_path / "iccids.txt"
    source.write_text("\n".join(served.fleet.iccids()) + "\n")
    out = tmp_path / "out.txt"
    args = ["sweep", "--iccids", str(source), "--base-url", served.url, *FAST, "--out", str(out)]
    code, _, _ = run(*args, "--format", first, "--quiet", env=ENV)
    assert code == 0
    before, arrivals = out.read_bytes(), served.stats.arrivals["usage"]
    code, _, err = run(*args, "--format", then, "--resume", "--quiet", env=ENV)
    assert code == 2
    assert f"--format {first}" in err
    assert out.read_bytes() == before  # nothing appended in the other format
    assert served.stats.arrivals["usage"] == arrivals  # nothing asked again


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_an_output_that_fails_mid_sweep_stops_the_sweep_with_a_clear_error(
    tmp_path: Path,
) -> None:
    source = tmp_path / "iccids.txt"
    source.write_text("\n".join(Fleet.generate(40, seed=2026).iccids()) + "\n")
    code, _, err = run(
        "sweep", "--emulator", "--emulator-size", "40", *FAST, "--iccids", str(source),
        "--out", "/dev/full", "--quiet",
    )  # fmt: skip
    assert code == 1
    assert "cannot write --out /dev/full" in err
    assert "Traceback" not in err


# ----------------------------------------------------------------- signals


def _sweep_process(
    emu: Emulator, source: str, out: Path, *extra: str, stdin: Any = None
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "esim_async", "sweep", "--iccids", source, "--out", str(out)]
    cmd += ["--base-url", emu.url, "--iccid-rate", "10/60", *extra]
    env = {**os.environ, **ENV}
    return subprocess.Popen(
        cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_keeps_every_answer_received_and_resume_finishes(
    tmp_path: Path, sig: signal.Signals
) -> None:
    limits = ServerLimits(usage_company=Rate(10, 1.0), usage_iccid=None, token=None)
    with Served(40, limits) as emu:
        ids = emu.fleet.iccids()
        source = tmp_path / "iccids.txt"
        source.write_text("\n".join(ids) + "\n")
        out = tmp_path / "out.jsonl"
        proc = _sweep_process(emu, str(source), out, "--company-rate", "10/1")
        try:
            assert wait_for(lambda: emu.stats.arrivals["usage"] >= 12), "the sweep never ran"
            answered = emu.stats.arrivals["usage"]
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130
        assert b"Traceback" not in err
        first = records(out.read_text())
        # Every answer that came back before the signal is in the file (the requests still
        # in flight when it came may be lost): nothing paid for is thrown away.
        assert len(first) >= answered - 10
        assert all(r["error"] is None for r in first)
        code, _, _ = run(
            "sweep", "--iccids", str(source), "--base-url", emu.url, *FAST,
            "--out", str(out), "--resume", "--quiet", env=ENV,
        )  # fmt: skip
        assert code == 0
        both = records(out.read_text())
    assert Counter(r["iccid"] for r in both) == Counter(ids)


def test_a_slow_pipe_does_not_hold_the_answers_back(tmp_path: Path) -> None:
    # A producer that writes ICCIDs as it finds them: each is asked for as soon as it comes,
    # not when the next line (or the end of the input) arrives.
    with Served(3, ServerLimits.unlimited()) as emu:
        ids = emu.fleet.iccids()
        out = tmp_path / "out.jsonl"
        proc = _sweep_process(emu, "-", out, "--quiet", stdin=subprocess.PIPE)
        assert proc.stdin is not None
        try:
            proc.stdin.write((ids[0] + "\n").encode())
            proc.stdin.flush()
            arrived = wait_for(lambda: emu.stats.arrivals["usage"] == 1)
            _, err = proc.communicate(("\n".join(ids[1:]) + "\n").encode(), timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert arrived, "the first ICCID waited for the next line"
        assert proc.returncode == 0, err
    assert sorted(r["iccid"] for r in records(out.read_text())) == sorted(ids)


# ----------------------------------------------------------------- monitor status


def _store_with(db: Path, thresholds: list[float] | None, remaining: int, fired: int = 0) -> None:
    """A store written by a monitor run with ``thresholds`` (``None``: a store that does not
    keep them): one eSIM with ``remaining`` of 1000 MB left and the ``fired`` bits set (none:
    nothing fired yet)."""

    async def write() -> None:
        store = SqliteStore(db)
        await store.open()
        try:
            usage = Usage(raw_remaining=remaining, raw_total=1000, status=UsageStatus.ACTIVE)
            row = StoredSim(usage=usage, read_at=time.time(), fired=fired)
            await store.add([("8944000000000000001", row)])
            if thresholds is not None:
                await store.save([], [], {"thresholds": thresholds})
        finally:
            await store.close()

    asyncio.run(write())


def test_status_uses_the_thresholds_the_store_was_written_with(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    # 48 % used: near the store's 0.5 threshold, far from the default 0.75 and 0.9.
    _store_with(db, [0.5], remaining=520)
    code, out, err = run("monitor", "status", "--db", str(db), "--json")
    assert code == 0, err
    assert json.loads(out)["near_threshold"] == 1
    # --thresholds still wins.
    code, out, _ = run("monitor", "status", "--db", str(db), "--json", "--thresholds", "0.9")
    assert code == 0
    assert json.loads(out)["near_threshold"] == 0


def test_status_of_a_store_without_thresholds_uses_the_default(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    _store_with(db, None, remaining=260)  # 74 % used: near the default 0.75
    code, out, err = run("monitor", "status", "--db", str(db), "--json")
    assert code == 0, err
    assert json.loads(out)["near_threshold"] == 1


def test_status_with_other_thresholds_reads_what_fired_by_value(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    # 88 % used; the store's 0.5 has fired (bit 0), its 0.9 has not.
    _store_with(db, [0.5, 0.9], remaining=120, fired=0b01)
    code, out, _ = run("monitor", "status", "--db", str(db), "--json", "--thresholds", "0.9")
    assert code == 0
    assert json.loads(out)["near_threshold"] == 1  # 0.9 is next, and near

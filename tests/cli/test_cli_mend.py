"""``esim-async sweep`` around its edges: an existing ``--out`` survives every usage error, stdin
redirected from the output file is refused, repeated signals still exit 130, stdin is left
blocking, and a failure to close the output is reported."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest

from esim_async import Rate
from esim_async import cli as cli_module
from esim_async.testing import Fleet, ServerLimits
from tests.cli.test_attack_sweep_cli import FAST, Served, _sweep_process, records, run, wait_for

NO_CREDENTIALS: dict[str, str | None] = {
    "AIRALO_CLIENT_ID": None,
    "AIRALO_CLIENT_SECRET": None,
    "ESIM_PROVIDER": None,
}
EARLIER = '{"iccid":"8944000000000000001","error":null}\n'


# ----------------------------------------------------------------- nothing truncated early


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("mistake", ["missing --iccids file", "missing credentials"])
def test_a_usage_error_leaves_an_existing_out_untouched(
    tmp_path: Path, mistake: str, resume: bool
) -> None:
    out = tmp_path / "r.jsonl"
    out.write_text(EARLIER)
    listing = tmp_path / "fleet.txt"
    listing.write_text("\n".join(Fleet.generate(3, seed=2026).iccids()) + "\n")
    if mistake == "missing --iccids file":
        args = ["--emulator", "--emulator-size", "3", "--iccids", str(tmp_path / "typo.txt")]
        env: dict[str, str | None] = {}
    else:  # a real provider without credentials: nothing can be asked
        args = ["--iccids", str(listing), "--base-url", "http://127.0.0.1:9"]
        env = NO_CREDENTIALS
    code, _, err = run(
        "sweep", *args, "--out", str(out), "--quiet", *(["--resume"] if resume else []), env=env
    )
    assert code == 2, err
    assert "Traceback" not in err
    assert out.read_text() == EARLIER


def test_a_usage_error_creates_no_output_file(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    code, _, _ = run(
        "sweep", "--emulator", "--iccids", str(tmp_path / "typo.txt"), "--out", str(out)
    )
    assert code == 2
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_sweep_that_starts_replaces_an_earlier_out(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "r.out"
    out.write_text("an earlier, longer run\n" * 50)
    fleet = Fleet.generate(3, seed=2026).iccids()
    code, _, err = run(
        "sweep", "--emulator", "--emulator-size", "3", *FAST, "--format", fmt,
        "--out", str(out), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    text = out.read_text()
    assert "earlier" not in text
    if fmt == "jsonl":
        assert sorted(r["iccid"] for r in records(text)) == sorted(fleet)
    else:
        assert text.splitlines()[0] == ",".join(cli_module.RECORD_FIELDS)
        assert len(text.splitlines()) == 4


# ----------------------------------------------------------------- stdin is the output


def test_stdin_redirected_from_the_out_file_is_refused(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.txt"
    text = "\n".join(Fleet.generate(6, seed=2026).iccids()) + "\n"
    fleet.write_text(text)
    with fleet.open("rb") as stdin:
        proc = subprocess.run(
            [sys.executable, "-m", "esim_async", "sweep", "--emulator", "--emulator-size", "6",
             *FAST, "--iccids", "-", "--out", str(fleet), "--quiet"],
            stdin=stdin, capture_output=True, timeout=30, check=False,
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert b"--iccids" in proc.stderr and b"--out" in proc.stderr
    assert fleet.read_text() == text


def test_stdin_redirected_from_another_file_is_swept(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.txt"
    ids = Fleet.generate(4, seed=2026).iccids()
    fleet.write_text("\n".join(ids) + "\n")
    out = tmp_path / "out.jsonl"
    with fleet.open("rb") as stdin:
        proc = subprocess.run(
            [sys.executable, "-m", "esim_async", "sweep", "--emulator", "--emulator-size", "4",
             *FAST, "--iccids", "-", "--out", str(out), "--quiet"],
            stdin=stdin, capture_output=True, timeout=30, check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["iccid"] for r in records(out.read_text())) == sorted(ids)


# ----------------------------------------------------------------- repeated signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_repeated_signals_still_exit_130(tmp_path: Path, sig: signal.Signals) -> None:
    limits = ServerLimits(usage_company=Rate(10, 1.0), usage_iccid=None, token=None)
    with Served(40, limits) as emu:
        source = tmp_path / "iccids.txt"
        source.write_text("\n".join(emu.fleet.iccids()) + "\n")
        out = tmp_path / "out.jsonl"
        proc = _sweep_process(emu, str(source), out, "--company-rate", "10/1", "--quiet")
        try:
            assert wait_for(lambda: emu.stats.arrivals["usage"] >= 3), "the sweep never ran"
            # Signals ~10 ms apart until the process is gone: whichever of them comes while
            # it is finishing, it ends with 130.
            deadline = time.monotonic() + 15
            while proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(ProcessLookupError):  # it has just ended
                    proc.send_signal(sig)
                time.sleep(0.01)
            _, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, err
    assert all(r["error"] is None for r in records(out.read_text()))


def test_restoring_a_handler_not_installed_from_python_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = signal.getsignal(signal.SIGTERM)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        real = signal.signal

        def fake(sig: int, handler: Any) -> Any:
            previous = real(sig, handler)
            return None if sig == signal.SIGTERM else previous

        monkeypatch.setattr(signal, "signal", fake)
        restore = cli_module._interrupt_on_signals(task, [])
        restore()  # no TypeError for the handler Python does not know

    try:
        asyncio.run(main())
    finally:
        monkeypatch.undo()
        signal.signal(signal.SIGTERM, original)


# ----------------------------------------------------------------- stdin pipes


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
@pytest.mark.parametrize("stop", ["end of input", "signal"])
def test_a_piped_stdin_is_left_blocking(tmp_path: Path, stop: str) -> None:
    # The pipe's read end is shared with this process, as a shell's stdin is shared with the
    # commands that follow: the sweep must not leave it non-blocking.
    limits = ServerLimits(usage_company=Rate(10, 1.0), usage_iccid=None, token=None)
    with Served(6, limits) as emu:
        ids = emu.fleet.iccids()
        read_end, write_end = os.pipe()
        out = tmp_path / "out.jsonl"
        try:
            proc = _sweep_process(emu, "-", out, "--quiet", stdin=read_end)
            try:
                os.write(write_end, ("\n".join(ids[:3]) + "\n").encode())
                assert wait_for(lambda: emu.stats.arrivals["usage"] >= 3)
                if stop == "end of input":
                    os.write(write_end, ("\n".join(ids[3:]) + "\n").encode())
                    os.close(write_end)
                    write_end = -1
                else:  # the feeder is waiting for the next line
                    proc.send_signal(signal.SIGTERM)
                _, err = proc.communicate(timeout=15)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert proc.returncode == (0 if stop == "end of input" else 130), err
            assert os.get_blocking(read_end)
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
def test_a_pipe_closed_mid_stream_is_released_at_once() -> None:
    async def main() -> tuple[list[str], bool]:
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, b"8944000000000000001\n8944000000000000002\n")
            with open(read_end, closefd=False) as stream:
                got: list[str] = []
                gen = cli_module._piped_iccids(stream, set())
                async for iccid in gen:
                    got.append(iccid)
                    break  # the consumer stops, the writer has not finished
                await gen.aclose()
                return got, os.get_blocking(read_end)
        finally:
            os.close(read_end)
            os.close(write_end)

    got, blocking = asyncio.run(main())
    assert got == ["8944000000000000001"]
    assert blocking


# ----------------------------------------------------------------- closing the output


class _FailsOnClose(io.TextIOWrapper):
    """A file whose data reaches the disk but whose ``close`` fails, as on a full quota."""

    failed = False

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if not type(self).failed:
            type(self).failed = True
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))


def test_a_failure_to_close_the_output_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _FailsOnClose.failed = False

    def open_results(path: Path, resume: bool) -> IO[str]:
        return _FailsOnClose(path.open("ab"), encoding="utf-8", newline="")

    monkeypatch.setattr(cli_module, "_open_results", open_results)
    out = tmp_path / "out.jsonl"
    code, _, err = run(
        "sweep", "--emulator", "--emulator-size", "3", *FAST, "--out", str(out), "--quiet"
    )
    assert code == 1
    assert _FailsOnClose.failed
    assert f"cannot write --out {out}" in err
    assert os.strerror(errno.EDQUOT) in err
    assert "Traceback" not in err


def test_help_says_where_utf16_is_recognised() -> None:
    code, out, _ = run("sweep", "--help")
    assert code == 0
    assert "UTF-16" in " ".join(out.split())

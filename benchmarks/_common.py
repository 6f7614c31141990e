"""Shared helpers for the benchmark scripts: machine facts, an emulator in another process, and
appending figures to RESULTS.md with the command that produced them."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a small, fast run (CI smoke test)")
    p.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    return p


def versions(*extra: str) -> str:
    names = ["esim-async", "aiohttp", "msgspec", "cachetools", *extra]
    parts = []
    for name in names:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(parts)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"
    )


def command() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], Path.cwd()), *sys.argv[1:]])


def record(
    title: str, table: list[tuple[str, ...]], notes: str = "", *, enabled: bool = True
) -> None:
    """Print the table and append it to RESULTS.md."""
    header, *rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    block = "\n".join(lines)
    print(f"\n{title}\n{block}\n{notes}".rstrip())
    if not enabled:
        return
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"\n### {title}\n\n"
        f"- when: {stamp}\n- machine: {machine()}\n- versions: {versions()}\n"
        f"- command: `{command()}`\n\n{block}\n"
    )
    if notes:
        text += f"\n{notes}\n"
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by the scripts in this folder.\n")
    with RESULTS.open("a") as f:
        f.write(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def emulator_process(*args: str, fleet: int = 1000) -> Iterator[str]:
    """``esim-async emulator`` in another process; yields its URL; stops it afterwards."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "esim_async",
            "emulator",
            "--port",
            str(port),
            "--fleet",
            str(fleet),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the emulator did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"

"""Prometheus metrics of ``esim-async monitor`` and ``esim-async webhooks serve``, scraped over
HTTP and parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from esim_async.webhooks import sign

parser = pytest.importorskip("prometheus_client.parser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape by (name, sorted labels)."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(session: aiohttp.ClientSession, port: int) -> str | None:
    try:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            return await resp.text()
    except aiohttp.ClientConnectionError:
        return None


def by_kind(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> Counter[str]:
    return Counter(
        {
            dict(labels)["kind"]: int(value)
            for (name, labels), value in found.items()
            if name == "esim_monitor_events_total"
        }
    )


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "esim_async", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


def finish(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def test_monitor_metrics_show_reads_and_events_matching_the_jsonl(tmp_path: Path) -> None:
    port, events = free_port(), tmp_path / "events.jsonl"
    proc = spawn(
        "monitor",
        "--emulator",
        "--emulator-size",
        "60",
        "--db",
        str(tmp_path / "fleet.db"),
        "--events",
        str(events),
        "--metrics-port",
        str(port),
        "--duration",
        "15",
    )
    matched: dict[tuple[str, tuple[tuple[str, str], ...]], float] | None = None
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 15
            while matched is None and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                text = await scrape(session, port)
                if text is None:
                    continue
                written = (
                    Counter(json.loads(line)["kind"] for line in events.read_text().splitlines())
                    if events.exists()
                    else Counter()
                )
                again = await scrape(session, port)
                if again is None:
                    continue
                found, after = samples(text), samples(again)
                # Between two scrapes that agree, the file holds exactly what they count.
                if by_kind(found) == by_kind(after) == written and sum(written.values()) > 0:
                    matched = after
    finally:
        _, err = finish(proc)
    assert b"Traceback" not in err
    assert matched is not None, "the events by kind never matched the JSONL file"
    assert matched[("esim_monitor_reads_total", ())] > 0
    assert matched[("esim_monitor_near_threshold_esims", ())] >= 0
    tracked = sum(v for (n, _), v in matched.items() if n == "esim_monitor_tracked_esims")
    assert tracked == 60
    assert ("esim_rate_limited_responses_total", ()) in matched
    assert matched[("esim_rate_limit_waiters", (("endpoint", "usage"),))] >= 0
    assert matched[("esim_rate_limit_effective_per_second", (("endpoint", "usage"),))] > 0
    fresh = matched[("esim_monitor_freshest_reading_age_seconds", ())]
    assert 0 <= fresh <= matched[("esim_monitor_stalest_reading_age_seconds", ())]


async def test_webhooks_serve_metrics_count_events_duplicates_and_refusals() -> None:
    port, metrics_port = free_port(), free_port()
    proc = spawn(
        "webhooks",
        "serve",
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        "--duration",
        "15",
        env={"AIRALO_CLIENT_SECRET": "hook-secret"},
    )
    body = json.dumps(
        {
            "level": "75%",
            "package_name": "p",
            "remaining_percentage": 25,
            "iccid": "87123123456889019",
        }
    ).encode()
    statuses: list[int] = []
    found: dict[Any, float] = {}
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 10
            text = None
            while text is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                text = await scrape(session, metrics_port)
            assert text is not None, "no metrics endpoint"
            for signature, payload in (
                (sign(body, "hook-secret"), body),
                (sign(body, "hook-secret"), body),  # redelivered
                ("bad", body),
                (sign(b"{not json", "hook-secret"), b"{not json"),
            ):
                async with session.post(
                    f"http://127.0.0.1:{port}/",
                    data=payload,
                    headers={"airalo-signature": signature, "Content-Type": "application/json"},
                ) as resp:
                    statuses.append(resp.status)
            for _ in range(50):  # the handler runs in the background after the answer
                found = samples(await scrape(session, metrics_port) or "")
                if found.get(("esim_webhook_events_total", (("type", "LowDataEvent"),))):
                    break
                await asyncio.sleep(0.05)
    finally:
        finish(proc)
    assert statuses == [200, 200, 401, 400]
    assert found[("esim_webhook_requests_total", ())] == 4
    assert found[("esim_webhook_events_total", (("type", "LowDataEvent"),))] == 1
    assert found[("esim_webhook_duplicates_total", ())] == 1
    assert found[("esim_webhook_refusals_total", (("status", "401"),))] == 1
    assert found[("esim_webhook_refusals_total", (("status", "400"),))] == 1
    assert found[("esim_webhook_refusals_total", (("status", "413"),))] == 0

"""Every reading of time goes through the client's :class:`Clock`, wall time included."""

from __future__ import annotations

import ast
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web

from esim_async import (
    AiraloClient,
    Clock,
    InvalidRequestError,
    LoopClock,
    ManualClock,
    MonotonicClock,
    SweepProgress,
)
from esim_async.errors import error_from_response

PACKAGE = Path(__file__).resolve().parents[2] / "esim_async"
PAYLOADS = Path(__file__).resolve().parents[1] / "fixtures" / "payloads"
ICCID = "8944465400000267221"
#: 2030-01-01 00:00:00 UTC
WALL = datetime(2030, 1, 1, tzinfo=UTC).timestamp()

#: ``module.function`` calls that read the system's clocks.
_TIME_CALLS = {
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "monotonic_ns"),
    ("time", "perf_counter"),
    ("time", "perf_counter_ns"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
}
_TIME_NAMES = {name for module, name in _TIME_CALLS if module == "time"}


def direct_time_reads(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of each place ``source`` reads a system clock itself."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            # time.time(), datetime.now(), and datetime.datetime.now() alike
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
            if (name, node.func.attr) in _TIME_CALLS:
                found.append((node.lineno, f"{name}.{node.func.attr}()"))
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            for alias in node.names:
                if alias.name in _TIME_NAMES:
                    found.append((node.lineno, f"from time import {alias.name}"))
    return sorted(found)


def test_the_scan_finds_every_spelling() -> None:
    source = (
        "import time, datetime\n"
        "from datetime import datetime as dt, UTC\n"
        "from time import monotonic\n"
        "a = time.time()\n"
        "b = time.monotonic()\n"
        "c = datetime.datetime.now(UTC)\n"
        "d = datetime.utcnow()\n"
        "e = time.sleep(0)\n"
        "f = loop.time()\n"
    )
    assert [line for line, _ in direct_time_reads(source)] == [3, 4, 5, 6, 7]


def test_no_module_reads_the_system_clocks_itself() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {text}"
        for path in sorted(PACKAGE.rglob("*.py"))
        # esim_async/clock.py is the client's clock; the emulator, an independent program,
        # keeps its own in esim_async/testing/clock.py.
        if path not in (PACKAGE / "clock.py", PACKAGE / "testing" / "clock.py")
        for line, text in direct_time_reads(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "read time through esim_async.clock instead:\n" + "\n".join(offenders)


# ---------------------------------------------------------------------- the clocks


def test_manual_clock_wall_time_moves_with_it() -> None:
    clock = ManualClock(5.0, wall=WALL)
    assert clock.wall() == WALL
    clock.advance(90.0)
    assert clock.wall() == WALL + 90.0
    assert clock.now() == 95.0


async def test_manual_clock_sleep_moves_wall_time_too() -> None:
    clock = ManualClock(wall=WALL)
    await clock.sleep(12.5)
    assert clock.wall() == WALL + 12.5


def test_manual_clock_wall_time_starts_at_the_present_by_default() -> None:
    clock = ManualClock()
    clock.advance(3600.0)
    # An hour ahead of the system clock: a real wall time, moved by the clock alone.
    assert 3590.0 < clock.wall() - time.time() < 3610.0


async def test_system_clocks_read_posix_wall_time() -> None:
    for clock in (MonotonicClock(), LoopClock()):
        assert isinstance(clock, Clock)
        assert abs(clock.wall() - time.time()) < 60.0
    assert isinstance(ManualClock(), Clock)


# ---------------------------------------------------------------------- the client's wall time


@pytest.fixture
async def usage_url() -> AsyncIterator[str]:
    async def token(request: web.Request) -> web.StreamResponse:
        return web.json_response({"data": {"access_token": "tok", "expires_in": 3600}})

    async def usage(request: web.Request) -> web.StreamResponse:
        body = (PAYLOADS / "airalo" / "usage_200.json").read_bytes()
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v2/token", token)
    app.router.add_get("/v2/sims/{iccid}/usage", usage)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_usage_is_stamped_with_the_clocks_wall_time(usage_url: str) -> None:
    clock = ManualClock(wall=WALL)
    async with AiraloClient("id", "secret", base_url=usage_url, clock=clock) as client:
        usage = await client.sims.usage(ICCID)
        clock.advance(60.0)
        cached = await client.sims.usage(ICCID)
        async with client.sims.usage_many([ICCID]) as results:
            (swept,) = [r async for r in results]
    assert usage.fetched_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert cached.fetched_at == usage.fetched_at
    assert swept.from_cache and swept.fetched_at == usage.fetched_at


async def test_a_clock_without_wall_time_still_drives_a_client(usage_url: str) -> None:
    class OldClock:
        """A clock written against the protocol before it had ``wall``."""

        def __init__(self) -> None:
            self.t = 0.0

        def now(self) -> float:
            return self.t

        async def sleep(self, seconds: float) -> None:
            self.t += max(0.0, seconds)

    old = OldClock()
    async with AiraloClient("id", "secret", base_url=usage_url, clock=old) as client:  # type: ignore[arg-type]
        first = await client.sims.usage(ICCID)
        old.t += 600.0
        later = await client.sims.usage(ICCID, refresh=True)
    assert first.fetched_at is not None and later.fetched_at is not None
    # Wall time anchored when the client was built, moving with the clock from there.
    assert later.fetched_at - first.fetched_at == timedelta(seconds=600)


async def test_future_order_dates_are_checked_against_the_clocks_wall_time() -> None:
    clock = ManualClock(wall=WALL)
    async with AiraloClient("id", "secret", clock=clock) as client:
        with pytest.raises(InvalidRequestError, match="day after tomorrow"):
            await client.future_orders.create("change-7days-1gb", 1, "2030-01-02 00:00")
        with pytest.raises(InvalidRequestError, match="one year ahead"):
            await client.future_orders.create("change-7days-1gb", 1, "2031-06-01 00:00")


async def test_sweep_time_is_measured_on_the_clock() -> None:
    clock = ManualClock()
    seen: list[float] = []

    def progress(p: SweepProgress) -> None:
        seen.append(p.elapsed)
        clock.advance(5.0)

    async with (
        AiraloClient("id", "secret", clock=clock) as client,
        client.sims.usage_many(["bad-1", "bad-2", "bad-3"], progress=progress) as results,
    ):
        outcomes = [r async for r in results]
    assert [r.ok for r in outcomes] == [False, False, False]  # invalid: answered locally
    assert seen == [0.0, 5.0, 10.0]
    assert results.summary.elapsed == 15.0


def test_retry_after_dates_are_read_against_the_given_wall_time() -> None:
    when = datetime.fromtimestamp(WALL + 10.0, UTC)
    error = error_from_response(
        429, b"{}", {"Retry-After": format_datetime(when, usegmt=True)}, now=WALL
    )
    assert getattr(error, "retry_after", None) == 10.0

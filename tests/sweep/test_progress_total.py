"""A sweep's progress knows its total from the start when the input is sized (a list, a file
read by the CLI), and its ETA follows the company budget on the client's clock.

Time is virtual (``ManualClock``): requests land in aioresponses callbacks that record the
clock; nothing here measures real durations.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aioresponses import aioresponses
from click.testing import CliRunner
from yarl import URL

from esim_async import AiraloClient, ManualClock, Rate, RateLimitedError, SweepProgress
from esim_async.cli import main
from esim_async.testing import Fleet

BASE = "https://partners-api.airalo.com"
TOKEN_URL = f"{BASE}/v2/token"
USAGE_RE = re.compile(r"^https://partners-api\.airalo\.com/v2/sims/(\d+)/usage$")
USAGE_OK = {
    "data": {"remaining": 512, "total": 1024, "status": "ACTIVE"},
    "meta": {"message": "api.succes"},
}
TOKEN_OK = {
    "data": {"token_type": "Bearer", "expires_in": 86400, "access_token": "tok-1"},
    "meta": {"message": "success"},
}
ICCIDS = [f"8944465400000{i:06d}" for i in range(80)]
COMPANY = Rate(5, 1.0)


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


class Seen:
    """What the progress hook saw: (done, total, eta, virtual time) per call."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.calls: list[tuple[int, int | None, float | None, float]] = []

    def __call__(self, p: SweepProgress) -> None:
        self.calls.append((p.done, p.total, p.eta, self.clock.now()))


def serve_usage(mocked: aioresponses, clock: ManualClock) -> list[float]:
    """Answer every token and usage request; return the list of usage arrival times."""
    arrivals: list[float] = []

    def record(url: URL, **_: Any) -> None:
        arrivals.append(clock.now())

    mocked.post(TOKEN_URL, payload=TOKEN_OK, repeat=True)
    mocked.get(USAGE_RE, payload=USAGE_OK, repeat=True, callback=record)
    return arrivals


def client_on(clock: ManualClock) -> AiraloClient:
    return AiraloClient(
        "id", "secret", clock=clock, company_rate=COMPANY, iccid_rate=None, token_rate=None
    )


async def test_a_list_reports_its_total_from_the_first_progress_call(
    mocked: aioresponses,
) -> None:
    clock = ManualClock()
    serve_usage(mocked, clock)
    seen = Seen(clock)
    async with client_on(clock) as client:
        sweep = client.sims.usage_many(ICCIDS[:50], progress=seen)
        assert sweep.progress.total == 50  # known before the first result
        async with sweep as results:
            got = [r async for r in results]
    assert len(got) == 50
    assert [done for done, *_ in seen.calls] == list(range(1, 51))
    assert all(total == 50 for _, total, _, _ in seen.calls)


async def test_a_sized_iterable_that_is_not_a_list_reports_its_total(
    mocked: aioresponses,
) -> None:
    clock = ManualClock()
    serve_usage(mocked, clock)
    seen = Seen(clock)
    given = dict.fromkeys(ICCIDS[:30]).keys()
    async with client_on(clock) as client, client.sims.usage_many(given, progress=seen) as results:
        assert len([r async for r in results]) == 30
    assert all(total == 30 for _, total, _, _ in seen.calls)


async def test_an_async_generator_reports_no_total_until_it_is_exhausted(
    mocked: aioresponses,
) -> None:
    clock = ManualClock()
    serve_usage(mocked, clock)
    seen = Seen(clock)
    more = asyncio.Event()

    async def source() -> AsyncIterator[str]:
        for iccid in ICCIDS[:5]:
            yield iccid
        await more.wait()  # the rest comes once the first five are answered
        for iccid in ICCIDS[5:12]:
            yield iccid

    def hook(p: SweepProgress) -> None:
        seen(p)
        if p.done == 5:
            more.set()

    async with client_on(clock) as client:
        sweep = client.sims.usage_many(source(), progress=hook)
        assert sweep.progress.total is None
        async with sweep as results:
            got = [r async for r in results]
    assert len(got) == 12
    first = seen.calls[:5]
    assert all(total is None and eta is None for _, total, eta, _ in first)
    assert seen.calls[-1][1] == 12
    assert sweep.progress.total == 12


async def test_eta_follows_the_company_budget(mocked: aioresponses) -> None:
    """Every third ICCID is cached: answered at once, it costs no budget. From the first
    progress call on, now + ETA predicts when the last request goes out within two windows
    of the company limit (one for the burst a free window allows, one because the virtual
    clock has already moved to the next admission when a result is reported)."""
    clock = ManualClock()
    arrivals = serve_usage(mocked, clock)
    given = ICCIDS[:60]
    cached = [iccid for n, iccid in enumerate(given) if n % 3 == 2]
    seen = Seen(clock)
    async with client_on(clock) as client:
        for iccid in cached:
            await client.sims.usage(iccid)
        warm = len(arrivals)
        state = client.rate_limit_state()["usage"]
        assert state.effective_per_second is not None
        window = COMPANY.count / state.effective_per_second  # one window, margin included
        sweep = client.sims.usage_many(given, progress=seen)
        before = sweep.progress.eta
        start = clock.now()
        async with sweep as results:
            got = [r async for r in results]
    assert len(got) == 60
    assert len(arrivals) - warm == 40  # the cached third made no request
    last = arrivals[-1]
    # Before the sweep starts, the ETA counts every ICCID given as a request (none is known
    # to be cached yet): an upper bound.
    assert before is not None
    assert before == pytest.approx(60 / state.effective_per_second)
    assert start + before >= last
    for done, total, eta, now in seen.calls:
        assert total == 60
        assert eta is not None, f"no ETA after {done} results"
        assert abs(now + eta - last) <= 2 * window + 1e-6, (done, now, eta, last)


async def test_eta_follows_the_rate_a_429_lowered(mocked: aioresponses) -> None:
    """A 429 that fills the company window halves the company rate: the ETA follows the rate
    the limiter applies now, not the configured one (which would promise half the time)."""
    clock = ManualClock()
    company = Rate(10, 60.0)
    mocked.post(TOKEN_URL, payload=TOKEN_OK, repeat=True)
    for _ in range(company.count - 1):
        mocked.get(USAGE_RE, payload=USAGE_OK)
    mocked.get(USAGE_RE, status=429, headers={"Retry-After": "60"})
    arrivals = serve_usage(mocked, clock)
    client = AiraloClient(
        "id", "secret", clock=clock, company_rate=company, iccid_rate=None, token_rate=None
    )
    async with client:
        configured = client.rate_limit_state()["usage"].effective_per_second
        for iccid in ICCIDS[: company.count - 1]:
            await client.sims.usage(iccid)
        with pytest.raises(RateLimitedError):
            await client.sims.usage(ICCIDS[company.count], max_retries=0)
        sweep = client.sims.usage_many(ICCIDS[20:40])
        start, eta = clock.now(), sweep.progress.eta
        async with sweep as results:
            got = [r async for r in results]
    assert all(r.ok for r in got)
    assert len(arrivals) == 20
    assert configured is not None and eta is not None
    took = arrivals[-1] - start
    assert abs(eta - took) <= 0.1 * took
    assert abs(20 / configured - took) > 0.1 * took  # the configured rate would be wrong


# --------------------------------------------------------------------------- the CLI


def cli(*args: str) -> tuple[int, str]:
    """Run the CLI as on a terminal (rich renders the progress bar into stderr)."""
    env = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "160", "TERM": "xterm"}
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stderr


FAST = ["--company-rate", "40/1", "--iccid-rate", "10/60"]


def test_cli_file_input_shows_its_total_before_the_first_result(tmp_path: Path) -> None:
    fleet = Fleet.generate(12, seed=2026).iccids()
    source = tmp_path / "iccids.txt"
    source.write_text("# fleet\n" + "\n".join(fleet) + "\n\n")
    code, err = cli(
        "sweep", "--emulator", "--emulator-size", "12", *FAST, "--iccids", str(source),
        "--out", str(tmp_path / "out.jsonl"),
    )  # fmt: skip
    assert code == 0
    assert "0/12" in err  # the first frame, drawn before any result
    assert "/?" not in err


def test_cli_resume_counts_only_what_is_left(tmp_path: Path) -> None:
    fleet = Fleet.generate(10, seed=2026).iccids()
    source = tmp_path / "iccids.txt"
    source.write_text("\n".join(fleet) + "\n")
    out = tmp_path / "out.jsonl"
    out.write_text("".join(f'{{"iccid": "{i}", "error": null}}\n' for i in fleet[:4]))
    code, err = cli(
        "sweep", "--emulator", "--emulator-size", "10", *FAST, "--iccids", str(source),
        "--out", str(out), "--resume",
    )  # fmt: skip
    assert code == 0
    assert "0/6" in err
    assert "/?" not in err


def test_cli_emulator_fleet_shows_its_total_before_the_first_result(tmp_path: Path) -> None:
    code, err = cli(
        "sweep", "--emulator", "--emulator-size", "25", *FAST,
        "--out", str(tmp_path / "out.jsonl"),
    )  # fmt: skip
    assert code == 0
    assert "0/25" in err
    assert "/?" not in err


def test_cli_stdin_from_a_file_is_counted_a_pipe_is_streamed(tmp_path: Path) -> None:
    fleet = Fleet.generate(8, seed=2026).iccids()
    text = "\n".join(fleet) + "\n"
    env = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "160", "TERM": "xterm"}
    args = ["sweep", "--emulator", "--emulator-size", "8", *FAST, "--iccids", "-", "--out"]
    # stdin redirected from a file can be read twice: counted before the sweep.
    result = CliRunner().invoke(
        main, [*args, str(tmp_path / "a.jsonl")], input=text, env=env, catch_exceptions=False
    )
    assert result.exit_code == 0
    assert "0/8" in result.stderr
    # A pipe cannot: streamed, its total known once it is read.
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as w:
        w.write(text)
    with os.fdopen(read_end, "rb") as pipe:
        result = CliRunner().invoke(
            main, [*args, str(tmp_path / "b.jsonl")], input=pipe, env=env, catch_exceptions=False
        )
    assert result.exit_code == 0
    assert "8/8" in result.stderr
    lines = (tmp_path / "b.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["iccid"] for line in lines) == sorted(fleet)

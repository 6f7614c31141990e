"""usage_many attacked from the outside: progress figures that are true, a sweep used after its
close, arguments refused before any request, and a sweep that never hangs when an answer or
the input fails in an unexpected way.

Counts and results are asserted, never durations.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest
from aiohttp import web

from esim_async import AiraloClient, InvalidRequestError, SweepProgress, UsageResult
from esim_async.models.usage import Usage
from esim_async.testing import Emulator, Fleet, ServerLimits

UNKNOWN = "8999999999999999990"


def fast_client(emu: Emulator, **kw: object) -> AiraloClient:
    """A client without client-side limits against an emulator without server limits."""
    options: dict[str, object] = {"iccid_rate": None, "company_rate": None}
    options.update(kw)
    return AiraloClient("id", "secret", base_url=emu.url, **options)  # type: ignore[arg-type]


def fast_emulator(fleet: Fleet) -> Emulator:
    return Emulator(fleet=fleet, limits=ServerLimits.unlimited())


def sweep_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("esim_async sweep")]


async def outcome(consume: Coroutine[Any, Any, None]) -> BaseException | None:
    """Run ``consume`` to its end and return what it raised; a hang fails the test."""
    task = asyncio.create_task(consume)
    done, _ = await asyncio.wait({task}, timeout=4)
    if not done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        pytest.fail("the sweep hung")
    return task.exception()


def throttle(emu: Emulator, iccids: set[str], retry_after: str) -> Counter[str]:
    """Answer the first request for each of ``iccids`` with a 429 (``Retry-After``
    ``retry_after``); returns the 429s sent, by ICCID."""
    sent: Counter[str] = Counter()

    def hook(kind: str, request: web.Request) -> None:
        iccid = request.match_info.get("iccid", "")
        if kind == "usage" and iccid in iccids and not sent[iccid]:
            sent[iccid] += 1
            raise web.HTTPTooManyRequests(
                text=json.dumps({"message": "Too Many Attempts."}),
                content_type="application/json",
                headers={"Retry-After": retry_after},
            )

    emu.on_request = hook
    return sent


# ----------------------------------------------------------------- SweepProgress.requests


@pytest.mark.parametrize("refresh", [False, True])
async def test_progress_requests_counts_the_requests_the_sweep_sent(refresh: bool) -> None:
    fleet = Fleet.generate(24, seed=51)
    ids = fleet.iccids()
    given = [*ids, *ids[:6], "not-an-iccid", UNKNOWN, UNKNOWN]
    seen: list[int] = []
    async with fast_emulator(fleet) as emu, fast_client(emu) as client:
        for iccid in ids[:5]:
            await client.sims.usage(iccid)  # answered from the cache unless refresh
        before = emu.stats.arrivals["usage"]
        throttled = throttle(emu, set(ids[10:13]), "0")  # each of these is asked twice

        def hook(p: SweepProgress) -> None:
            seen.append(p.requests)

        async with client.sims.usage_many(given, refresh=refresh, progress=hook) as results:
            got = [r async for r in results]
        sent = emu.stats.arrivals["usage"] - before
    assert sum(throttled.values()) == 3
    assert len(got) == len(given)
    assert all(r.ok for r in got if r.iccid in ids)
    # Every usage request that reached the provider for this sweep, and only those.
    assert results.progress.requests == sent == (len(ids) + 1 + 3 - (0 if refresh else 5))
    assert seen == sorted(seen)  # it only grows
    assert seen[-1] == sent


async def test_progress_requests_leaves_out_refusals_made_without_a_request() -> None:
    # A cool-down beyond retry_after_cap: the ICCID is re-queued, each time refused by the
    # client's own limiter without a request, until its 429 becomes its result.
    fleet = Fleet.generate(12, seed=58)
    ids = fleet.iccids()
    async with fast_emulator(fleet) as emu, fast_client(emu) as client:
        throttled = throttle(emu, {ids[4]}, "3600")
        async with client.sims.usage_many(ids, concurrency=3) as results:
            got = [r async for r in results]
        sent = emu.stats.arrivals["usage"]
    assert throttled == Counter({ids[4]: 1})
    assert [type(r.error).__name__ for r in got if not r.ok] == ["RateLimitedError"]
    assert results.progress.requests == sent == len(ids)


# ----------------------------------------------------------------- use after close


async def test_a_sweep_closed_before_it_started_sends_nothing_when_iterated() -> None:
    fleet = Fleet.generate(8, seed=52)
    async with fast_emulator(fleet) as emu, fast_client(emu) as client:
        swept = client.sims.usage_many(fleet.iccids())
        await swept.aclose()
        got = [r async for r in swept]
        assert sweep_tasks() == []
        await asyncio.sleep(0.05)  # a request started anyway would have arrived by now
        assert emu.stats.arrivals["usage"] == 0
    assert got == []


async def test_a_sweep_left_unused_inside_async_with_sends_nothing_afterwards() -> None:
    fleet = Fleet.generate(8, seed=53)
    async with fast_emulator(fleet) as emu, fast_client(emu) as client:
        async with client.sims.usage_many(fleet.iccids()) as swept:
            pass
        assert [r async for r in swept] == []
        assert sweep_tasks() == []
        await asyncio.sleep(0.05)
        assert emu.stats.arrivals["usage"] == 0


# ----------------------------------------------------------------- arguments refused at once


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"iccids": "8944000000000000001"}, "iccids"),
        ({"iccids": b"8944000000000000001"}, "iccids"),
        ({"low_data_fraction": None}, "low_data_fraction"),
        ({"low_data_fraction": "0.1"}, "low_data_fraction"),
        ({"low_data_fraction": float("nan")}, "low_data_fraction"),
        ({"low_data_fraction": -0.5}, "low_data_fraction"),
        ({"low_data_fraction": 1.5}, "low_data_fraction"),
        ({"progress": 5}, "progress"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 2.5}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
    ],
)
async def test_bad_arguments_are_refused_before_any_request(
    options: dict[str, Any], field: str
) -> None:
    fleet = Fleet.generate(6, seed=54)
    async with fast_emulator(fleet) as emu, fast_client(emu) as client:
        arguments: dict[str, Any] = {"iccids": fleet.iccids(), **options}
        with pytest.raises(InvalidRequestError) as caught:
            client.sims.usage_many(**arguments)
        assert caught.value.field == field
        assert field in str(caught.value)
        await asyncio.sleep(0.05)
        assert emu.stats.arrivals["usage"] == 0
        assert sweep_tasks() == []


async def test_the_documented_arguments_are_still_accepted() -> None:
    fleet = Fleet.generate(4, seed=55)
    async with fast_emulator(fleet) as emu, fast_client(emu) as client:
        options: dict[str, Any]
        for options in (
            {"low_data_fraction": 0},
            {"low_data_fraction": 1},
            {"concurrency": 1},
            {"progress": None},
        ):
            async with client.sims.usage_many(tuple(fleet.iccids()), **options) as results:
                assert len([r async for r in results]) == 4


async def test_a_large_concurrency_starts_no_more_workers_than_there_is_work() -> None:
    # concurrency is a bound on requests in flight, not a number of tasks to start up front.
    fleet = Fleet.generate(3, seed=59)
    running: list[int] = []
    async with fast_emulator(fleet) as emu, fast_client(emu) as client:
        async with client.sims.usage_many(
            fleet.iccids(),
            concurrency=100_000,
            progress=lambda p: running.append(len(sweep_tasks())),
        ) as results:
            got = [r async for r in results]
        assert sweep_tasks() == []
    assert [r.ok for r in got] == [True] * 3
    assert max(running) <= 1 + 3  # the feeder, and one worker per ICCID at most


# ----------------------------------------------------------------- never a hang


async def test_an_answer_that_cannot_be_counted_ends_the_sweep_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet = Fleet.generate(10, seed=56)
    boom = ArithmeticError("cannot rate this package")
    original = Usage.is_low
    calls: list[int] = []

    def is_low(self: Usage, **kw: Any) -> bool:
        calls.append(1)
        if len(calls) == 4:
            raise boom
        return original(self, **kw)

    monkeypatch.setattr(Usage, "is_low", is_low)
    got: list[UsageResult] = []
    async with fast_emulator(fleet) as emu, fast_client(emu) as client:

        async def consume() -> None:
            async with client.sims.usage_many(fleet.iccids(), concurrency=2) as results:
                async for r in results:
                    got.append(r)

        assert await outcome(consume()) is boom
        assert sweep_tasks() == []
    assert len({r.index for r in got}) == len(got) <= 3


async def test_an_input_that_raises_cancelled_error_ends_the_sweep_loudly() -> None:
    fleet = Fleet.generate(6, seed=57)
    stop = asyncio.CancelledError("the source was cancelled")

    async def source() -> AsyncIterator[str]:
        for iccid in fleet.iccids()[:3]:
            yield iccid
        raise stop

    async with fast_emulator(fleet) as emu, fast_client(emu) as client:

        async def consume() -> None:
            async with client.sims.usage_many(source()) as results:
                async for _ in results:
                    pass

        error = await outcome(consume())
        assert isinstance(error, RuntimeError)
        assert error.__cause__ is stop
        assert sweep_tasks() == []

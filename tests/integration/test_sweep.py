"""usage_many against the emulator: exactly one result per ICCID, at the limit, no 429s.

Counts are asserted, never durations.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from esim_async import (
    AiraloClient,
    InvalidIccidError,
    NotFoundError,
    Rate,
    RateLimitedError,
    SweepProgress,
    UsageResult,
)
from esim_async.testing import Emulator, Faults, Fleet, ServerLimits

STRICT = ServerLimits(usage_iccid=Rate(3, 2.0), usage_company=Rate(25, 0.5), token=None)


def client_for(emu: Emulator, **kw: object) -> AiraloClient:
    options: dict[str, object] = {
        "iccid_rate": STRICT.usage_iccid,
        "company_rate": STRICT.usage_company,
        "rate_margin": 0.3,
    }
    options.update(kw)
    return AiraloClient("id", "secret", base_url=emu.url, **options)  # type: ignore[arg-type]


def sweep_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("esim_async sweep")]


async def test_every_iccid_answered_exactly_once_without_429s() -> None:
    fleet = Fleet.generate(150, seed=21)
    ids = fleet.iccids()
    unknown = "8999999999999999990"
    given = [*ids, *ids[:20], "not-an-iccid", unknown, unknown]
    progress: list[SweepProgress] = []
    done: list[int] = []

    def hook(p: SweepProgress) -> None:
        progress.append(p)
        done.append(p.done)

    async with Emulator(fleet=fleet, limits=STRICT) as emu, client_for(emu) as client:
        async with client.sims.usage_many(given, progress=hook) as results:
            got = [r async for r in results]
        assert emu.stats.rate_limited == 0
        assert len(got) == len(given)
        assert sorted(r.index for r in got) == list(range(len(given)))
        assert Counter(r.iccid for r in got) == Counter(given)
        for r in got:
            assert (r.usage is None) != (r.error is None)
        # Duplicates and the unknown ICCID were fetched once each.
        assert all(n == 1 for n in emu.stats.usage_by_iccid.values())
        assert emu.stats.usage_requests == 151
        errors = Counter(type(r.error).__name__ for r in got if r.error)
        assert errors == {"InvalidIccidError": 1, "NotFoundError": 2}
        summary = results.summary
        assert summary.total == len(given)
        assert summary.ok == len(given) - 3
        assert summary.from_cache == 21  # 20 duplicates + the second unknown
        assert sum(summary.by_status.values()) == summary.ok
        assert summary.by_status["RECYCLED"] == len(fleet.by_kind("recycled")) + sum(
            1 for i in ids[:20] if fleet.sims[i].kind == "recycled"
        )
        assert progress[-1].done == len(given)
        assert progress[-1].total == len(given)
        assert done == list(range(1, len(given) + 1))
        assert all(p is progress[0] for p in progress)  # one object, updated in place
        # A second sweep is answered from the cache without a request.
        async with client.sims.usage_many(ids) as again:
            second = [r async for r in again]
        assert all(r.from_cache for r in second)
        assert emu.stats.usage_requests == 151


async def test_invalid_iccids_spend_nothing() -> None:
    async with Emulator(fleet=Fleet.generate(3)) as emu, client_for(emu) as client:
        async with client.sims.usage_many(["12", "x" * 19, "8944/../token"]) as results:
            got = [r async for r in results]
        assert all(isinstance(r.error, InvalidIccidError) for r in got)
        assert emu.stats.arrivals == Counter()


async def test_ordered_keeps_input_order() -> None:
    fleet = Fleet.generate(30, seed=4)
    given = list(reversed(fleet.iccids()))
    orders: dict[bool, list[UsageResult]] = {}
    async with Emulator(
        fleet=fleet, limits=ServerLimits.unlimited(), faults=Faults(slow_seconds=0.5)
    ) as emu:
        for ordered in (False, True):
            emu.inject("usage", "slow")  # the first request of each sweep is answered late
            async with (
                client_for(emu, iccid_rate=None, company_rate=None) as client,
                client.sims.usage_many(given, ordered=ordered, concurrency=7) as results,
            ):
                orders[ordered] = [r async for r in results]
        assert emu.stats.faults["slow"] == 2
    # Completion order is not input order: the late answer comes after later ICCIDs...
    assert [r.iccid for r in orders[False]] != given
    assert Counter(r.iccid for r in orders[False]) == Counter(given)
    # ...yet ordered=True holds those back and yields the input order.
    assert [r.iccid for r in orders[True]] == given
    assert [r.index for r in orders[True]] == list(range(len(given)))


async def test_input_is_streamed_not_read_ahead() -> None:
    fleet = Fleet.generate(20, seed=5)
    read = 0

    async def endless() -> AsyncIterator[str]:
        nonlocal read
        while True:
            for iccid in fleet.iccids():
                read += 1
                yield iccid

    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu,
        client_for(emu, iccid_rate=None, company_rate=None) as client,
    ):
        taken = 0
        async with client.sims.usage_many(endless(), concurrency=4) as results:
            async for _ in results:
                taken += 1
                if taken == 500:
                    break
        # The window bounds what is read ahead: 4 workers x 4 results.
        assert read <= taken + 4 * 4 + 1
        assert sweep_tasks() == []


async def test_leaving_early_cancels_in_flight_work() -> None:
    fleet = Fleet.generate(40, seed=6)
    slow = ServerLimits(usage_iccid=None, usage_company=Rate(2, 1.0), token=None)
    async with (
        Emulator(fleet=fleet, limits=slow) as emu,
        client_for(emu, company_rate=Rate(2, 1.0), iccid_rate=None) as client,
    ):
        async with client.sims.usage_many(fleet.iccids()) as results:
            async for _ in results:
                break
        assert sweep_tasks() == []
        sent = client.stats.attempts
        await asyncio.sleep(1.2)  # past the next limiter slot: nothing more is sent
        assert client.stats.attempts == sent
        assert emu.stats.usage_requests <= sent - 1  # minus the token request
        assert emu.stats.usage_requests < 40


async def test_cancelling_the_consumer_cancels_the_sweep() -> None:
    fleet = Fleet.generate(40, seed=7)
    slow = ServerLimits(usage_iccid=None, usage_company=Rate(2, 1.0), token=None)
    async with (
        Emulator(fleet=fleet, limits=slow) as emu,
        client_for(emu, company_rate=Rate(2, 1.0), iccid_rate=None) as client,
    ):
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in client.sims.usage_many(fleet.iccids()):  # no context manager
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert sweep_tasks() == []


async def test_faults_still_answer_every_iccid() -> None:
    fleet = Fleet.generate(120, seed=8)
    faults = Faults(server_error=0.1, html=0.05, drop=0.03, seed=3)
    async with (
        Emulator(fleet=fleet, limits=STRICT, faults=faults) as emu,
        client_for(emu, max_retries=3) as client,
    ):
        async with client.sims.usage_many(fleet.iccids()) as results:
            got = [r async for r in results]
        assert Counter(r.iccid for r in got) == Counter(fleet.iccids())
        assert sum(emu.stats.faults.values()) > 0
        assert sum(r.ok for r in got) >= 0.97 * len(got)
        assert emu.stats.rate_limited == 0


async def test_throttled_iccids_go_back_in_the_queue() -> None:
    server = ServerLimits(usage_iccid=None, usage_company=Rate(3, 0.5), token=None)
    fleet = Fleet.generate(24, seed=9)
    async with (
        Emulator(fleet=fleet, limits=server) as emu,
        client_for(emu, company_rate=Rate(12, 0.5), iccid_rate=None, max_retries=0) as client,
    ):
        async with client.sims.usage_many(fleet.iccids()) as results:
            got = [r async for r in results]
        assert emu.stats.rate_limited >= 1
        # max_retries=0: a 429 is final for a single call; in a sweep it is re-queued.
        assert all(r.ok for r in got), Counter(type(r.error).__name__ for r in got)
        assert len(got) == 24
        emu.inject("usage", "429")
        with pytest.raises(RateLimitedError):
            await client.sims.usage(fleet.iccids()[0], refresh=True)


async def test_interactive_calls_jump_the_sweep_queue() -> None:
    fleet = Fleet.generate(30, seed=10)
    limits = ServerLimits(usage_iccid=None, usage_company=Rate(4, 0.5), token=None)
    order: list[str] = []
    async with (
        Emulator(fleet=fleet, limits=limits) as emu,
        client_for(emu, company_rate=Rate(4, 0.5), iccid_rate=None) as client,
    ):
        emu.on_request = lambda kind, req: order.append(req.match_info.get("iccid", "token"))
        sweep_ids, special = fleet.iccids()[:-1], fleet.iccids()[-1]
        results: list[UsageResult] = []

        async def run_sweep() -> None:
            async with client.sims.usage_many(sweep_ids) as res:
                async for r in res:
                    results.append(r)

        sweeping = asyncio.create_task(run_sweep())
        while len(order) < 6:
            await asyncio.sleep(0.01)
        position = len(order)
        await client.sims.usage(special)
        await sweeping
        # The sweep had ~20 requests queued; the interactive call went out within one slot.
        assert order.index(special) <= position + 4
        assert len(results) == len(sweep_ids)
        assert emu.stats.rate_limited == 0


async def test_errors_in_the_input_iterable_surface() -> None:
    def broken() -> object:
        yield "8944000000000000001"
        raise RuntimeError("input broke")

    async def drain(client: AiraloClient) -> None:
        async with client.sims.usage_many(broken()) as results:  # type: ignore[arg-type]
            async for _ in results:
                pass

    async with Emulator(fleet=Fleet.generate(3)) as emu, client_for(emu) as client:
        with pytest.raises(RuntimeError, match="input broke"):
            await drain(client)
        assert sweep_tasks() == []


async def test_negative_entries_answer_without_requests() -> None:
    unknown = "8999999999999999991"
    async with Emulator(fleet=Fleet.generate(2)) as emu, client_for(emu) as client:
        with pytest.raises(NotFoundError):
            await client.sims.usage(unknown)
        async with client.sims.usage_many([unknown] * 3) as results:
            got = [r async for r in results]
        assert all(isinstance(r.error, NotFoundError) and r.from_cache for r in got)
        assert emu.stats.usage_by_iccid[unknown] == 1

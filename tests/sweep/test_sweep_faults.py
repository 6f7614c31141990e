"""usage_many against the emulator: a failing progress hook, duplicates under ``refresh=True``,
``refresh=True`` over a warm cache, and the summary's low-data list.

Counts and results are asserted, never durations.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any

import pytest

from esim_async import AiraloClient, EsimError, NotFoundError, SweepProgress, UsageResult
from esim_async.testing import Emulator, Fleet, ServerLimits, SimRecord

UNKNOWN = "8999999999999999990"


class HookError(Exception):
    """What the test's progress hook raises."""


def fast_client(emu: Emulator, **kw: object) -> AiraloClient:
    """A client without client-side limits against an emulator without server limits."""
    options: dict[str, object] = {"iccid_rate": None, "company_rate": None}
    options.update(kw)
    return AiraloClient("id", "secret", base_url=emu.url, **options)  # type: ignore[arg-type]


def fast_emulator(fleet: Fleet, **kw: object) -> Emulator:
    return Emulator(fleet=fleet, limits=ServerLimits.unlimited(), **kw)  # type: ignore[arg-type]


def sweep_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("esim_async sweep")]


def library_tasks() -> list[asyncio.Task[object]]:
    current = asyncio.current_task()
    return [
        t
        for t in asyncio.all_tasks()
        if t is not current and "esim_async" in (t.get_name() + repr(t.get_coro()))
    ]


async def outcome(consume: Coroutine[Any, Any, None]) -> BaseException | None:
    """Run ``consume`` to its end and return what it raised; a hang fails the test.

    The consumer runs in a task that is never cancelled while it runs, so an exception can
    only come from the sweep itself, not from cancelling a stuck consumer.
    """
    task = asyncio.create_task(consume)
    done, _ = await asyncio.wait({task}, timeout=10)
    if not done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        pytest.fail("the sweep hung")
    return task.exception()


async def stepwise(iccids: Iterable[str], answered: asyncio.Event) -> AsyncIterator[str]:
    """Yield each ICCID only once the consumer has received the result of the previous one."""
    for iccid in iccids:
        answered.clear()
        yield iccid
        await answered.wait()


# ----------------------------------------------------------------- a progress hook that raises


def mixed_input(fleet: Fleet) -> list[str]:
    """Fetched ICCIDs, duplicates, an invalid ICCID and an unknown one (twice)."""
    ids = fleet.iccids()
    return [*ids, "not-an-iccid", *ids[:5], UNKNOWN, UNKNOWN]


@pytest.mark.parametrize("k", [1, 2, 17, 38])
@pytest.mark.parametrize("concurrency", [1, 6])
async def test_a_hook_raising_on_the_kth_call_is_reraised_unchanged(
    k: int, concurrency: int
) -> None:
    fleet = Fleet.generate(30, seed=31)
    given = mixed_input(fleet)
    assert k <= len(given) == 38  # k == 38: the hook fails on the very last result
    boom = HookError(f"hook failed on call {k}")
    calls: list[int] = []

    def hook(p: SweepProgress) -> None:
        calls.append(p.done)
        if len(calls) == k:
            raise boom

    got: list[UsageResult] = []
    async with fast_emulator(fleet) as emu, fast_client(emu) as client:

        async def consume() -> None:
            async with client.sims.usage_many(
                given, progress=hook, concurrency=concurrency
            ) as results:
                async for r in results:
                    got.append(r)

        assert await outcome(consume()) is boom
        assert sweep_tasks() == []
        # The hook is not called again once it has failed.
        assert len(calls) == k
        # Whatever was delivered before the failure was delivered once.
        assert len({r.index for r in got}) == len(got) <= k - 1
        assert all(given[r.index] == r.iccid for r in got)
    assert library_tasks() == []


@pytest.mark.parametrize("mixed", [False, True])
@pytest.mark.parametrize("concurrency", [1, 3, None])
async def test_a_hook_raising_on_every_call_is_reraised_unchanged(
    mixed: bool, concurrency: int | None
) -> None:
    fleet = Fleet.generate(20, seed=32)
    given = mixed_input(fleet) if mixed else [*fleet.iccids(), *fleet.iccids()[:4]]
    raised_errors: list[HookError] = []

    def hook(p: SweepProgress) -> None:
        error = HookError(f"call {p.done}")
        raised_errors.append(error)
        raise error

    async with fast_emulator(fleet) as emu, fast_client(emu) as client:

        async def consume() -> None:
            async with client.sims.usage_many(
                given, progress=hook, concurrency=concurrency
            ) as results:
                async for _ in results:
                    pass

        raised = await outcome(consume())
        assert raised_errors == [raised]  # the first failure, and the hook stopped there
        assert sweep_tasks() == []
    assert library_tasks() == []


async def test_a_hook_failing_on_a_cached_answer_is_reraised_unchanged() -> None:
    fleet = Fleet.generate(12, seed=33)
    ids = fleet.iccids()
    boom = HookError("cached")

    def hook(p: SweepProgress) -> None:
        if p.done == 3:
            raise boom

    async with fast_emulator(fleet) as emu, fast_client(emu) as client:
        for iccid in ids:
            await client.sims.usage(iccid)  # every answer below comes from the cache

        async def consume() -> None:
            async for _ in client.sims.usage_many(ids, progress=hook):  # no context manager
                pass

        assert await outcome(consume()) is boom
        assert sweep_tasks() == []
        assert emu.stats.usage_requests == len(ids)


async def test_a_hook_failure_is_raised_at_the_consumers_next_step() -> None:
    fleet = Fleet.generate(10, seed=34)
    boom = HookError("second result")
    calls = 0

    def hook(p: SweepProgress) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise boom

    answered = asyncio.Event()
    async with fast_emulator(fleet) as emu, fast_client(emu) as client:
        got: list[UsageResult] = []

        async def consume() -> None:
            async with client.sims.usage_many(
                stepwise(fleet.iccids(), answered), progress=hook
            ) as results:
                async for r in results:
                    got.append(r)
                    answered.set()

        assert await outcome(consume()) is boom
        assert [r.iccid for r in got] == fleet.iccids()[:1]
        assert sweep_tasks() == []


@pytest.mark.parametrize("kind", [StopIteration, StopAsyncIteration])
async def test_a_hook_raising_a_stop_exception_ends_the_sweep_loudly(
    kind: type[Exception],
) -> None:
    # Raised as they are, these would end `async for` silently or become a bare RuntimeError.
    fleet = Fleet.generate(6, seed=35)
    stop = kind("hook")

    def hook(p: SweepProgress) -> None:
        if p.done == 3:
            raise stop

    async with fast_emulator(fleet) as emu, fast_client(emu) as client:
        got: list[UsageResult] = []

        async def consume() -> None:
            async with client.sims.usage_many(fleet.iccids(), progress=hook) as results:
                async for r in results:
                    got.append(r)

        error = await outcome(consume())
        assert isinstance(error, RuntimeError)
        assert error.__cause__ is stop
        assert len(got) < len(fleet)
        assert sweep_tasks() == []


# ----------------------------------------------------------------- duplicates under refresh


@pytest.mark.parametrize("refresh", [True, False])
async def test_a_duplicate_after_the_fetch_finished_is_not_fetched_again(refresh: bool) -> None:
    fleet = Fleet.generate(6, seed=35)
    a, b, c = fleet.iccids()[:3]
    given = [a, b, a, c, a, b]
    answered = asyncio.Event()
    got: list[UsageResult] = []
    async with fast_emulator(fleet) as emu, fast_client(emu) as client:
        async with client.sims.usage_many(stepwise(given, answered), refresh=refresh) as results:
            async for r in results:
                got.append(r)
                answered.set()
        assert emu.stats.usage_by_iccid == Counter({a: 1, b: 1, c: 1})
    assert [r.iccid for r in got] == given
    assert [r.from_cache for r in got] == [False, False, True, False, True, True]
    first = {r.iccid: r for r in got if not r.from_cache}
    for r in got:
        assert r.usage == first[r.iccid].usage
        assert r.fetched_at == first[r.iccid].fetched_at
    assert results.summary.from_cache == 3


async def test_duplicates_are_merged_without_a_client_cache() -> None:
    fleet = Fleet.generate(4, seed=36)
    a, b = fleet.iccids()[:2]
    answered = asyncio.Event()
    async with fast_emulator(fleet) as emu, fast_client(emu, cache_ttl=0) as client:
        async with client.sims.usage_many(stepwise([a, b, a, b, a], answered)) as results:
            got = []
            async for r in results:
                got.append(r)
                answered.set()
        assert emu.stats.usage_by_iccid == Counter({a: 1, b: 1})
    assert all(r.ok for r in got)


@pytest.mark.parametrize("refresh", [True, False])
async def test_a_duplicate_of_an_unknown_iccid_is_not_fetched_again(refresh: bool) -> None:
    fleet = Fleet.generate(3, seed=37)
    a = fleet.iccids()[0]
    answered = asyncio.Event()
    async with fast_emulator(fleet) as emu, fast_client(emu) as client:
        async with client.sims.usage_many(
            stepwise([UNKNOWN, a, UNKNOWN, UNKNOWN], answered), refresh=refresh
        ) as results:
            got = []
            async for r in results:
                got.append(r)
                answered.set()
        assert emu.stats.usage_by_iccid == Counter({UNKNOWN: 1, a: 1})
    errors = [type(r.error) for r in got if r.iccid == UNKNOWN]
    assert errors == [NotFoundError] * 3


@pytest.mark.parametrize("refresh", [True, False])
async def test_a_duplicate_of_a_failed_fetch_gets_the_same_error(refresh: bool) -> None:
    fleet = Fleet.generate(3, seed=38)
    a, b = fleet.iccids()[:2]
    answered = asyncio.Event()
    async with fast_emulator(fleet) as emu, fast_client(emu, max_retries=0) as client:
        emu.inject("usage", "500")  # the first request, for a, fails for good
        async with client.sims.usage_many(
            stepwise([a, b, a], answered), refresh=refresh
        ) as results:
            got = []
            async for r in results:
                got.append(r)
                answered.set()
        assert emu.stats.usage_by_iccid == Counter({a: 1, b: 1})
    assert [r.iccid for r in got] == [a, b, a]
    assert isinstance(got[0].error, EsimError)
    assert got[2].error is got[0].error
    assert got[1].ok


async def test_refresh_duplicates_in_flight_and_after_share_one_request() -> None:
    fleet = Fleet.generate(40, seed=39)
    ids = fleet.iccids()
    given = [*ids, *ids, *ids[:10]]  # in flight, then long after: every one is a duplicate
    async with fast_emulator(fleet) as emu, fast_client(emu) as client:
        async with client.sims.usage_many(given, refresh=True, concurrency=4) as results:
            got = [r async for r in results]
        assert emu.stats.usage_by_iccid == Counter(dict.fromkeys(ids, 1))
    assert Counter(r.iccid for r in got) == Counter(given)
    assert sorted(r.index for r in got) == list(range(len(given)))
    assert sum(not r.from_cache for r in got) == len(ids)


# ----------------------------------------------------------------- refresh over a warm cache


async def test_refresh_goes_to_the_server_for_cached_esims() -> None:
    fleet = Fleet.generate(12, seed=40)
    ids = fleet.iccids()
    # cache_ttl=0 on the emulator: a changed eSIM reports its new figures at once.
    async with fast_emulator(fleet, cache_ttl=0.0) as emu, fast_client(emu) as client:
        async with client.sims.usage_many(ids) as warm:
            before = {r.iccid: r.usage for r in [r async for r in warm]}
        assert emu.stats.usage_requests == len(ids)
        for n, iccid in enumerate(ids):
            emu.set_usage(iccid, remaining=n + 1, total=5000, is_unlimited=False)
        # Without refresh the sweep answers from the cache.
        async with client.sims.usage_many(ids) as cached:
            assert all([r.from_cache async for r in cached])
        assert emu.stats.usage_requests == len(ids)
        async with client.sims.usage_many([*ids, *ids[:4]], refresh=True) as results:
            got = [r async for r in results]
        assert emu.stats.usage_by_iccid == Counter(dict.fromkeys(ids, 2))
        # The new values are what the cache now holds.
        assert [(await client.sims.usage(i)).remaining for i in ids] == [
            n + 1 for n in range(len(ids))
        ]
        assert emu.stats.usage_requests == 2 * len(ids)
    assert sum(not r.from_cache for r in got) == len(ids)
    for r in got:
        assert r.usage is not None
        assert r.usage.remaining == ids.index(r.iccid) + 1
        assert r.usage.total == 5000
        assert r.usage != before[r.iccid]


# ----------------------------------------------------------------- low data


def sim(n: int, remaining: int, total: int, *, unlimited: bool = False) -> SimRecord:
    return SimRecord(
        Fleet.make_iccid(n),
        "custom",
        remaining,
        total,
        "ACTIVE",
        "2026-02-01 00:00:00",
        unlimited,
    )


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [
        (0.1, {"r99", "r100"}),
        (0.2, {"r99", "r100", "r101", "r199", "r200"}),
        (0.05, set()),
        (0.5, {"r99", "r100", "r101", "r199", "r200", "r201"}),
    ],
)
async def test_low_data_follows_the_fraction(fraction: float, expected: set[str]) -> None:
    fleet = Fleet()
    names: dict[str, str] = {}
    for n, remaining in enumerate([99, 100, 101, 199, 200, 201, 999]):
        record = sim(n, remaining, 1000)
        fleet.add(record)
        names[record.iccid] = f"r{remaining}"
    unlimited = sim(50, 0, 0, unlimited=True)  # no total: never low
    fleet.add(unlimited)
    async with (
        fast_emulator(fleet) as emu,
        fast_client(emu) as client,
        client.sims.usage_many(fleet.iccids(), low_data_fraction=fraction) as results,
    ):
        got = [r async for r in results]
    assert all(r.ok for r in got)
    summary = results.summary
    assert {names[i] for i in summary.low_data} == expected
    assert len(summary.low_data) == summary.low_data_count == len(expected)


async def test_two_fractions_give_two_lists_in_one_client() -> None:
    fleet = Fleet()
    for n, remaining in enumerate([50, 150, 250, 900]):
        fleet.add(sim(n, remaining, 1000))
    ids = fleet.iccids()
    async with fast_emulator(fleet) as emu, fast_client(emu) as client:
        lists = []
        for fraction in (0.1, 0.3):
            async with client.sims.usage_many(ids, low_data_fraction=fraction) as results:
                async for _ in results:
                    pass
            lists.append(sorted(results.summary.low_data))
        assert emu.stats.usage_requests == len(ids)  # the second sweep came from the cache
    assert lists == [sorted(ids[:1]), sorted(ids[:3])]

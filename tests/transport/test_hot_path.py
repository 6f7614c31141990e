"""The work an uncached ``usage()`` call costs the client, counted (not timed).

The overhead target (client CPU per request within 1.3x a bare aiohttp GET plus msgspec decode,
``benchmarks/bench_overhead.py``) is met by doing little per request. These tests hold the
count of Python calls into the client per request under a budget, so that work creeping back
onto the hot path fails a test instead of a benchmark run.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections import Counter
from inspect import CO_COROUTINE
from types import FrameType
from typing import Any

import pytest
import yarl

import esim_async
from esim_async import AiraloClient, Rate
from esim_async.limits import QueueTicket
from esim_async.testing import Emulator, Fleet, ServerLimits
from esim_async.transport import Request

ROOT = os.path.dirname(esim_async.__file__)
#: Not counted: the emulator, and the limiter and its stores (budgeted with their own tests).
SKIPPED = tuple(os.path.join(ROOT, name) for name in ("testing", "limits.py", "backends"))

#: Python calls into the client per uncached usage() (a coroutine counts once per resume).
BUDGET_UNLIMITED = 29
BUDGET_LIMITED = 33
#: Python calls into the limiter per uncached usage() with the limits lifted (``None``): the
#: queue ticket of the shared call is made, and one check that no cool-down, hold or queue
#: holds the request back admits it at once (no wait, so the ticket is never bound).
BUDGET_LIFTED_LIMITER = 2
LIMITER = os.path.join(ROOT, "limits.py")
#: Coroutines of the client started per uncached usage() (each one more to create, start and
#: pass every resume through): the call, its cached endpoint, its single flight (which runs
#: the call in the caller's own task), its load, the request loop and its HTTP exchange. (The
#: token in use is read, and the request built and its answer unwrapped, without one.)
BUDGET_COROUTINES = 6


def _rates(limited: bool) -> dict[str, Any]:
    """Both windows wide open, or both limits lifted."""
    if limited:
        return {"company_rate": Rate(1000, 1.0), "iccid_rate": Rate(1000, 60.0)}
    return {"company_rate": None, "iccid_rate": None}


async def calls_per_request(
    *, limited: bool, only: str | None = None, coroutines: bool = False
) -> tuple[float, Counter[str]]:
    """Python calls into the client per uncached usage() (``coroutines``: the coroutines of
    the client started, each counted once however often it resumes)."""
    fleet = Fleet.generate(3, seed=7)
    iccid = fleet.iccids()[0]
    rates = _rates(limited)
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu,
        AiraloClient("id", "secret", base_url=emu.url, token_rate=None, **rates) as client,
    ):
        for _ in range(3):  # token, session and connection set up
            await client.sims.usage(iccid, refresh=True)
        calls: Counter[str] = Counter()
        started: set[FrameType] = set()  # (each frame is held: no id is reused meanwhile)

        def profile(frame: FrameType, event: str, _arg: object) -> None:
            if event == "call":
                code = frame.f_code
                name = code.co_filename
                if coroutines and (not code.co_flags & CO_COROUTINE or frame in started):
                    return
                if (
                    (name == only)
                    if only is not None
                    else (name.startswith(ROOT) and not name.startswith(SKIPPED))
                ):
                    calls[f"{os.path.relpath(name, ROOT)}:{code.co_name}"] += 1
                    if coroutines:
                        started.add(frame)

        n = 10
        sys.setprofile(profile)
        try:
            for _ in range(n):
                await client.sims.usage(iccid, refresh=True)
        finally:
            sys.setprofile(None)
        assert client.stats.requests >= n + 3
    return sum(calls.values()) / n, calls


async def test_an_uncached_usage_call_stays_within_its_call_budget() -> None:
    per_request, calls = await calls_per_request(limited=False)
    assert per_request <= BUDGET_UNLIMITED, calls.most_common()


async def test_an_uncached_usage_call_through_both_windows_stays_within_its_call_budget() -> None:
    per_request, calls = await calls_per_request(limited=True)
    assert per_request <= BUDGET_LIMITED, calls.most_common()


async def test_lifted_limits_cost_an_uncached_usage_call_almost_nothing_in_the_limiter() -> None:
    per_request, calls = await calls_per_request(limited=False, only=LIMITER)
    assert per_request <= BUDGET_LIFTED_LIMITER, calls.most_common()


async def test_an_uncached_usage_call_starts_few_coroutines() -> None:
    per_request, calls = await calls_per_request(limited=False, coroutines=True)
    assert per_request <= BUDGET_COROUTINES, calls.most_common()


#: Tasks of the client created per uncached usage(): none (the call's first caller runs it in
#: its own task; a task is started only to hand the call over to the callers still waiting
#: when that first caller is cancelled).
BUDGET_TASKS = 0


async def test_an_uncached_usage_call_creates_no_task() -> None:
    fleet = Fleet.generate(3, seed=7)
    iccid = fleet.iccids()[0]
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu,
        AiraloClient("id", "secret", base_url=emu.url, token_rate=None, **_rates(False)) as client,
    ):
        for _ in range(3):  # token, session and connection set up
            await client.sims.usage(iccid, refresh=True)
        loop = asyncio.get_running_loop()
        created: Counter[str] = Counter()

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            code = getattr(coro, "cr_code", None)
            name = code.co_filename if code is not None else ""
            if name.startswith(ROOT) and not name.startswith(SKIPPED):
                created[f"{os.path.relpath(name, ROOT)}:{code.co_name}"] += 1
            return asyncio.Task(coro, loop=loop, **kwargs)

        n = 10
        loop.set_task_factory(factory)
        try:
            for _ in range(n):
                await client.sims.usage(iccid, refresh=True)
        finally:
            loop.set_task_factory(None)
        assert client.stats.requests >= n + 3
    assert sum(created.values()) / n <= BUDGET_TASKS, created.most_common()


@pytest.mark.parametrize("limited", [False, True], ids=["limits lifted", "both windows"])
async def test_a_finished_usage_call_leaves_nothing_of_itself_alive(limited: bool) -> None:
    """Nothing of a call outlives it (timers the event loop still holds included), so the
    objects each request makes die young instead of feeding the garbage collector."""
    fleet = Fleet.generate(3, seed=7)
    iccid = fleet.iccids()[0]
    rates = _rates(limited)
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu,
        AiraloClient("id", "secret", base_url=emu.url, token_rate=None, **rates) as client,
    ):
        gc.collect()
        before = {id(o) for o in gc.get_objects() if isinstance(o, (Request, QueueTicket))}
        gc.disable()  # no cycle either: each dies as its call ends, not at a collection
        try:
            for _ in range(5):
                await client.sims.usage(iccid, refresh=True)
            await asyncio.sleep(0)  # (the shared task's last step)
            alive = [
                o
                for o in gc.get_objects()
                if isinstance(o, (Request, QueueTicket)) and id(o) not in before
            ]
        finally:
            gc.enable()
        assert alive == []
        gc.collect()
        alive = [
            o
            for o in gc.get_objects()
            if isinstance(o, (Request, QueueTicket)) and id(o) not in before
        ]
        assert alive == []


async def test_an_uncached_usage_call_parses_no_url_string() -> None:
    """The base URL is parsed once; each request's path is put into it as it is (its ICCID is
    plain digits), instead of yarl splitting and encoding the whole URL string every time."""
    fleet = Fleet.generate(12, seed=7)
    iccids = fleet.iccids()  # distinct URLs: none of them is in yarl's own cache
    transport = os.path.join(ROOT, "transport.py")
    library = os.path.dirname(yarl.__file__)
    parses: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        code = frame.f_code
        if event != "call" or not code.co_filename.startswith(library):
            return
        if code.co_name not in ("split_url", "encode_url"):
            return
        caller: FrameType | None = frame
        while caller is not None and caller.f_code.co_filename != transport:
            caller = caller.f_back
        if caller is not None:  # the client's request, not the emulator serving it
            parses[code.co_name] += 1

    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu,
        AiraloClient("id", "secret", base_url=emu.url, token_rate=None, **_rates(False)) as client,
    ):
        await client.sims.usage(iccids[0], refresh=True)  # token, session and connection
        sys.setprofile(profile)
        try:
            for iccid in iccids[1:]:
                await client.sims.usage(iccid, refresh=True)
        finally:
            sys.setprofile(None)
        assert client.stats.requests - client.stats.token_requests == len(iccids)
    assert parses == Counter()

"""Entries read from the shared Redis cache keep their true age in another process.

An entry is written to the shared cache as if fetched some minutes ago (a past ``fetched_at``
and a ``stored`` time on the writer's own clock, meaningless to anyone else); a second client
with its own manual clock reads it. Real redis-server on 127.0.0.1, skipped without one."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from esim_async import AiraloClient, ManualClock, Usage, UsageStatus
from esim_async.backends.redis import RedisBackend, RedisCache
from esim_async.cache import CacheEntry
from esim_async.testing import Emulator, Fleet, ServerLimits

from ..conftest import RedisServer

TTL = 1200.0
#: The writer's monotonic clock: nothing like the reader's.
WRITER_CLOCK = 7_654_321.0


@dataclass
class Setup:
    emu: Emulator
    redis: RedisServer
    backend: RedisBackend
    #: The name a client of account "acct" on the emulator's host gives its usage cache.
    name: str
    writer: RedisCache
    iccid: str


@pytest.fixture
async def setup(redis_server: RedisServer) -> AsyncIterator[Setup]:
    fleet = Fleet.generate(3, seed=35)
    backend = RedisBackend.from_url(redis_server.url, prefix="age")
    async with Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu:
        name = f"airalo:acct@{emu.url}:usage"
        writer = backend.shared_cache(name, Usage, ttl=TTL, long_ttl=86400.0)
        yield Setup(emu, redis_server, backend, name, writer, fleet.iccids()[0])
    await backend.aclose()


def reader(setup: Setup, clock: ManualClock) -> AiraloClient:
    return AiraloClient(
        "acct",
        "s",
        base_url=setup.emu.url,
        backend=RedisBackend.from_url(setup.redis.url, prefix="age"),
        clock=clock,
        cache_ttl=TTL,
        iccid_rate=None,
        company_rate=None,
    )


async def write_aged(
    setup: Setup, age: float, writer: RedisCache | None = None, wall: float | None = None
) -> datetime:
    """Put an answer fetched ``age`` seconds ago into the shared cache (by ``writer``, whose
    wall clock reads ``wall`` now); its fetch time."""
    fetched = (time.time() if wall is None else wall) - age
    when = datetime.fromtimestamp(fetched, UTC)
    usage = Usage(raw_remaining=512, raw_total=1024, status=UsageStatus.ACTIVE, fetched_at=when)
    entry = CacheEntry(usage, fetched, WRITER_CLOCK, False)
    await (writer or setup.writer).set(setup.iccid, entry)
    return when


def requests(setup: Setup) -> int:
    return setup.emu.stats.usage_by_iccid[setup.iccid]


async def test_shared_entry_keeps_its_fetch_time(setup: Setup) -> None:
    fetched = await write_aged(setup, 600.0)
    async with reader(setup, ManualClock(50.0)) as client:
        usage = await client.sims.usage(setup.iccid)
        assert requests(setup) == 0  # answered from the shared cache
        assert usage.remaining == 512
        assert usage.fetched_at == fetched
        # Read again from this process's own cache: still the same fetch time.
        again = await client.sims.usage(setup.iccid)
        assert again.fetched_at == fetched
        assert requests(setup) == 0


async def test_max_age_is_decided_on_the_true_age(setup: Setup) -> None:
    await write_aged(setup, 600.0)
    async with reader(setup, ManualClock(50.0)) as lenient:
        await lenient.sims.usage(setup.iccid, max_age=900.0)
        assert requests(setup) == 0  # 600 s old is young enough
    async with reader(setup, ManualClock(50.0)) as strict:
        fresh = await strict.sims.usage(setup.iccid, max_age=300.0)
        assert requests(setup) == 1  # 600 s old is too old: asked the provider
        assert fresh.fetched_at is not None
        assert (datetime.now(UTC) - fresh.fetched_at).total_seconds() < 60


async def test_local_copy_of_a_shared_entry_is_as_old_as_the_entry(setup: Setup) -> None:
    """Once copied into this process's cache, the entry's age still counts from its fetch."""
    await write_aged(setup, 600.0)
    clock = ManualClock(50.0)
    async with reader(setup, clock) as client:
        await client.sims.usage(setup.iccid)
        assert requests(setup) == 0
        await setup.writer.invalidate(setup.iccid)  # only the local copy is left
        await client.sims.usage(setup.iccid, max_age=650.0)
        assert requests(setup) == 0  # 600 s old
        clock.advance(100.0)
        await client.sims.usage(setup.iccid, max_age=650.0)
        assert requests(setup) == 1  # 700 s old now, not 100


async def test_local_copy_expires_with_the_entrys_true_age(setup: Setup) -> None:
    """A shared entry 1100 s old lives 100 s more in this process, not another full TTL."""
    await write_aged(setup, 1100.0)
    clock = ManualClock(50.0)
    async with reader(setup, clock) as client:
        await client.sims.usage(setup.iccid)
        assert requests(setup) == 0
        await setup.writer.invalidate(setup.iccid)  # only the local copy is left
        clock.advance(60.0)
        await client.sims.usage(setup.iccid)
        assert requests(setup) == 0  # 1160 s old: still within the TTL
        clock.advance(60.0)
        await client.sims.usage(setup.iccid)
        assert requests(setup) == 1  # 1220 s old: past the TTL


async def test_shared_entry_older_than_the_ttl_is_not_served(setup: Setup) -> None:
    await write_aged(setup, TTL + 30.0)
    async with reader(setup, ManualClock(50.0)) as client:
        usage = await client.sims.usage(setup.iccid)
        assert requests(setup) == 1
        assert usage.fetched_at is not None
        assert (datetime.now(UTC) - usage.fetched_at).total_seconds() < 60


async def write_aged_by_a_fast_clock(setup: Setup, age: float) -> None:
    """Written by a process whose clock runs an hour fast: fetched ``age`` seconds ago by that
    clock, which puts its ``fetched_at`` an hour minus ``age`` into everyone else's future."""
    fast = ManualClock(wall=time.time() + 3600.0)
    writer = setup.backend.shared_cache(setup.name, Usage, ttl=TTL, long_ttl=86400.0, clock=fast)
    await write_aged(setup, age, writer, fast.wall())


async def test_a_fast_writer_clock_does_not_make_an_old_entry_young(
    setup: Setup,
) -> None:
    await write_aged_by_a_fast_clock(setup, 600.0)
    async with reader(setup, ManualClock(50.0)) as lenient:
        await lenient.sims.usage(setup.iccid, max_age=900.0)
        assert requests(setup) == 0  # 600 s old on Redis' clock: young enough
    async with reader(setup, ManualClock(50.0)) as strict:
        await strict.sims.usage(setup.iccid, max_age=300.0)
        assert requests(setup) == 1  # 600 s old is too old, whatever the writer's clock said


async def test_a_fast_writer_clock_does_not_defeat_refresh(
    setup: Setup,
) -> None:
    await write_aged_by_a_fast_clock(setup, 600.0)
    async with reader(setup, ManualClock(50.0)) as client:
        await client.sims.usage(setup.iccid, refresh=True)
        assert requests(setup) == 1  # fetched before this call began: not an answer to it


async def test_a_local_copy_of_a_fast_writers_entry_expires_with_its_true_age(
    setup: Setup,
) -> None:
    await write_aged_by_a_fast_clock(setup, 1100.0)
    clock = ManualClock(50.0)
    async with reader(setup, clock) as client:
        await client.sims.usage(setup.iccid)
        assert requests(setup) == 0
        await setup.writer.invalidate(setup.iccid)  # only the local copy is left
        clock.advance(120.0)
        await client.sims.usage(setup.iccid)
        assert requests(setup) == 1  # 1220 s old: past the TTL

"""One cached endpoint: local cache, shared level, single flight, negative entries and stats.

:class:`~esim_async.cache.CachedEndpoint` is the one path behind ``sims.usage``,
``usage_many`` and ``sims.package_history``; these tests drive it directly (in-memory cache and
single flight, a dict standing in for the shared Redis level) and then through the client.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Hashable
from typing import Any

import pytest
from aioresponses import aioresponses

from esim_async import AiraloClient, ManualClock, NotFoundError, TransportError
from esim_async.cache import CachedEndpoint, CacheEntry, SingleFlight, TTLStore
from esim_async.stats import ClientStats

KEY = "8944465400000267221"
TTL = 1200.0
LONG_TTL = 86400.0
BASE = "https://partners-api.airalo.com"
TOKEN = {"data": {"access_token": "tok", "expires_in": 3600}, "meta": {"message": "success"}}


class DictShared:
    """The shared level in a dict: entries keep their ``fetched_at`` on the reader's wall
    clock (as the Redis level gives them back)."""

    def __init__(self) -> None:
        self.data: dict[Hashable, CacheEntry[Any]] = {}
        self.gets = 0

    async def get(self, key: Hashable) -> CacheEntry[Any] | None:
        self.gets += 1
        return self.data.get(key)

    async def set(self, key: Hashable, entry: CacheEntry[Any]) -> None:
        self.data[key] = entry

    async def invalidate(self, key: Hashable) -> None:
        await asyncio.sleep(0)
        self.data.pop(key, None)


class Options:
    """Flight options that record what joined them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.joined: list[str] = []

    def join(self, other: Options) -> None:
        self.joined.append(other.name)


def endpoint(
    clock: ManualClock, shared: DictShared | None = None, **kw: Any
) -> tuple[CachedEndpoint[str], ClientStats]:
    stats = ClientStats()
    cache: TTLStore[str, str] = TTLStore(ttl=TTL, long_ttl=LONG_TTL, clock=clock)
    ep: CachedEndpoint[str] = CachedEndpoint(
        cache=cache, flight=SingleFlight(), shared=shared, clock=clock, stats=stats, **kw
    )
    return ep, stats


class Source:
    """The provider: counts calls, answers ``value`` (or raises), optionally after a delay on
    the manual clock (a wait for budget)."""

    def __init__(self, clock: ManualClock, value: str = "v1", *, delay: float = 0.0) -> None:
        self.clock = clock
        self.value = value
        self.delay = delay
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.error: Exception | None = None

    async def __call__(self) -> str:
        self.calls += 1
        n = self.calls
        if self.gate is not None:
            await self.gate.wait()
        self.clock.advance(self.delay)
        if self.error is not None:
            raise self.error
        return f"{self.value}#{n}"


# ------------------------------------------------------------------ the local level


async def test_a_local_hit_answers_without_a_call_and_counts_a_hit() -> None:
    clock = ManualClock()
    ep, stats = endpoint(clock)
    src = Source(clock)
    first, cached = await ep.fetch(KEY, src)
    assert (first.value, cached) == ("v1#1", False)
    again, cached = await ep.fetch(KEY, src)
    assert (again.value, cached) == ("v1#1", True)
    assert ep.get(KEY) is again
    assert src.calls == 1
    assert stats.cache_hits == 2
    assert stats.negative_cache_hits == 0


async def test_max_age_and_refresh_skip_the_local_entry() -> None:
    clock = ManualClock()
    ep, _ = endpoint(clock)
    src = Source(clock)
    await ep.fetch(KEY, src)
    clock.advance(300.0)
    assert (await ep.fetch(KEY, src, max_age=600.0))[0].value == "v1#1"
    assert (await ep.fetch(KEY, src, max_age=299.0))[0].value == "v1#2"
    assert (await ep.fetch(KEY, src, refresh=True))[0].value == "v1#3"
    assert src.calls == 3


async def test_an_entry_is_stored_at_the_answer_time() -> None:
    clock = ManualClock()
    stamps: list[tuple[str, float]] = []
    ep, _ = endpoint(clock, on_answer=lambda value, wall: stamps.append((value, wall)))
    src = Source(clock, delay=100.0)  # the call waited 100 s for budget before its answer
    entry, _ = await ep.fetch(KEY, src)
    assert entry.fetched_at == clock.wall()
    assert stamps == [("v1#1", clock.wall())]
    clock.advance(TTL - 1.0)
    assert ep.get(KEY) is not None  # its age counts from the answer, not from the call
    clock.advance(1.0)
    assert ep.get(KEY) is None


async def test_a_not_found_answer_is_kept_as_a_negative_entry_in_both_levels() -> None:
    clock = ManualClock()
    shared = DictShared()
    ep, stats = endpoint(clock, shared)
    src = Source(clock)
    src.error = NotFoundError("no such eSIM", status=404)
    with pytest.raises(NotFoundError):
        await ep.fetch(KEY, src)
    entry, cached = await ep.fetch(KEY, src)
    assert entry.value is None and entry.long_lived and cached
    assert src.calls == 1
    assert stats.negative_cache_hits == 1 and stats.cache_hits == 0
    assert shared.data[KEY].value is None and shared.data[KEY].long_lived
    clock.advance(TTL + 1.0)
    assert ep.get(KEY) is not None  # kept for the negative TTL, not the normal one
    clock.advance(LONG_TTL)
    assert ep.get(KEY) is None


async def test_a_long_lived_answer_is_kept_for_the_long_ttl() -> None:
    clock = ManualClock()
    ep, _ = endpoint(clock, long_lived=lambda value: value.startswith("recycled"))
    await ep.fetch(KEY, Source(clock, "recycled"))
    await ep.fetch("other", Source(clock, "active"))
    clock.advance(TTL + 1.0)
    assert ep.get(KEY) is not None
    assert ep.get("other") is None


# ------------------------------------------------------------------ single flight


async def test_concurrent_fetches_share_one_call_and_join_their_options() -> None:
    clock = ManualClock()
    ep, stats = endpoint(clock)
    src = Source(clock)
    src.gate = asyncio.Event()
    first_options, second_options = Options("first"), Options("second")
    first = asyncio.create_task(ep.fetch(KEY, src, options=first_options))
    await asyncio.sleep(0)
    second = asyncio.create_task(ep.fetch(KEY, src, options=second_options))
    await asyncio.sleep(0)
    src.gate.set()
    (a, a_cached), (b, b_cached) = await asyncio.gather(first, second)
    assert a is b and src.calls == 1
    assert (a_cached, b_cached) == (False, True)  # the joiner made no request of its own
    assert first_options.joined == ["second"]
    assert stats.coalesced == 1


async def test_refresh_never_joins_a_call_already_in_flight() -> None:
    clock = ManualClock()
    ep, stats = endpoint(clock)
    src = Source(clock)
    src.gate = asyncio.Event()
    first = asyncio.create_task(ep.fetch(KEY, src))
    await asyncio.sleep(0)
    refreshed = asyncio.create_task(ep.fetch(KEY, src, refresh=True))
    await asyncio.sleep(0)
    later = asyncio.create_task(ep.fetch(KEY, src))  # joins the newest call
    await asyncio.sleep(0)
    src.gate.set()
    got = await asyncio.gather(first, refreshed, later)
    assert [e.value for e, _ in got] == ["v1#1", "v1#2", "v1#2"]
    assert stats.coalesced == 1


async def test_aclose_fails_callers_in_flight_and_refuses_later_ones() -> None:
    clock = ManualClock()
    ep, _ = endpoint(clock)
    src = Source(clock)
    src.gate = asyncio.Event()
    waiting = asyncio.create_task(ep.fetch(KEY, src))
    await asyncio.sleep(0)
    await ep.aclose()
    with pytest.raises(TransportError):
        await waiting
    with pytest.raises(TransportError):
        await ep.fetch("other", src)


# ------------------------------------------------------------------ the shared level


async def test_a_shared_entry_answers_with_its_true_age() -> None:
    clock = ManualClock(50.0)
    shared = DictShared()
    shared.data[KEY] = CacheEntry("theirs", clock.wall() - 600.0, 7_654_321.0, False)
    ep, stats = endpoint(clock, shared)
    src = Source(clock)
    entry, cached = await ep.fetch(KEY, src)
    assert (entry.value, cached, src.calls) == ("theirs", True, 0)
    assert stats.cache_hits == 1
    # The local copy is 600 s old, not new.
    assert ep.get(KEY, max_age=650.0) is not None
    clock.advance(100.0)
    assert ep.get(KEY, max_age=650.0) is None
    clock.advance(TTL - 700.0)
    assert ep.get(KEY) is None  # it lives out the rest of its TTL here, not another TTL


async def test_a_shared_entry_too_old_for_max_age_is_fetched_again() -> None:
    clock = ManualClock()
    shared = DictShared()
    shared.data[KEY] = CacheEntry("theirs", clock.wall() - 600.0, 0.0, False)
    ep, _ = endpoint(clock, shared)
    src = Source(clock)
    entry, cached = await ep.fetch(KEY, src, max_age=300.0)
    assert (entry.value, cached) == ("v1#1", False)
    assert shared.data[KEY].value == "v1#1"  # shared with the other processes


async def test_refresh_takes_a_shared_entry_only_if_answered_after_the_call_started() -> None:
    clock = ManualClock()
    shared = DictShared()
    shared.data[KEY] = CacheEntry("old", clock.wall() - 1.0, 0.0, False)
    ep, _ = endpoint(clock, shared)
    src = Source(clock)
    assert (await ep.fetch(KEY, src, refresh=True))[0].value == "v1#1"
    # Another process answered while this call waited for its lock: fresh enough.
    shared.data[KEY] = CacheEntry("theirs", clock.wall(), 0.0, False)
    entry, cached = await ep.fetch(KEY, src, refresh=True)
    assert (entry.value, cached, src.calls) == ("theirs", True, 1)


async def test_a_negative_shared_entry_counts_as_a_negative_hit() -> None:
    clock = ManualClock()
    shared = DictShared()
    shared.data[KEY] = CacheEntry(None, clock.wall() - 10.0, 0.0, True)
    ep, stats = endpoint(clock, shared)
    entry, cached = await ep.fetch(KEY, Source(clock))
    assert entry.value is None and cached
    assert (stats.negative_cache_hits, stats.cache_hits) == (1, 0)


async def test_invalidate_forgets_the_entry_in_both_levels() -> None:
    clock = ManualClock()
    shared = DictShared()
    ep, _ = endpoint(clock, shared)
    src = Source(clock)
    await ep.fetch(KEY, src)
    assert KEY in shared.data
    ep.invalidate(KEY)
    assert ep.get(KEY) is None
    await ep.aclose()  # waits for the shared deletion on its way
    assert KEY not in shared.data


# ------------------------------------------------------------------ through the client


async def test_a_negative_package_history_hit_counts_as_a_negative_hit() -> None:
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/v2/token", payload=TOKEN, repeat=True)
        mocked.get(
            re.compile(r".*/v2/sims/\d+/packages$"),
            status=404,
            payload={"data": [], "meta": {"message": "The selected iccid is invalid."}},
        )
        async with AiraloClient("id", "secret", clock=ManualClock()) as client:
            with pytest.raises(NotFoundError):
                await client.sims.package_history(KEY)
            with pytest.raises(NotFoundError):
                await client.sims.package_history(KEY)  # answered by the negative entry
            assert client.stats.negative_cache_hits == 1
            assert client.stats.cache_hits == 0
            assert client.stats.requests - client.stats.token_requests == 1


async def test_wait_async_after_aclose_is_refused() -> None:
    client = AiraloClient("id", "secret")
    await client.aclose()
    with pytest.raises(TransportError):
        await asyncio.wait_for(client.orders.wait_async("REQ-1", timeout=0.2), 2)

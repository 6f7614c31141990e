"""What storing and reading the usage cache costs, counted (not timed): the Python calls into
the cache library per operation, with long-lived entries held beside the normal ones."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable
from types import FrameType

import cachetools

from esim_async import ManualClock
from esim_async.cache import CacheEntry, TTLStore

LIBRARY = os.path.dirname(cachetools.__file__)

#: Python calls into the cache library to store one answer (cachetools' own bookkeeping).
BUDGET_SET = 3
#: ... and to read one live entry.
BUDGET_GET = 2


def library_calls(fn: Callable[[], object], n: int) -> tuple[float, Counter[str]]:
    calls: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(LIBRARY):
            calls[frame.f_code.co_name] += 1

    sys.setprofile(profile)
    try:
        for _ in range(n):
            fn()
    finally:
        sys.setprofile(None)
    return sum(calls.values()) / n, calls


def filled_store(clock: ManualClock) -> TTLStore[str, str]:
    store: TTLStore[str, str] = TTLStore(ttl=1200, long_ttl=86400, maxsize=1000, clock=clock)
    for i in range(100):
        store.set(f"k{i}", CacheEntry("usage", 1.7e9, clock.now()))
    store.set("recycled", CacheEntry("usage", 1.7e9, clock.now(), long_lived=True))
    return store


def test_storing_an_answer_costs_few_calls_into_the_cache_library() -> None:
    clock = ManualClock()
    store = filled_store(clock)
    keys = iter([f"k{i % 150}" for i in range(300)])  # replaced entries and new ones

    def store_one() -> None:
        clock.advance(0.5)
        store.set(next(keys), CacheEntry("usage", 1.7e9, clock.now()))

    per_set, calls = library_calls(store_one, 300)
    assert per_set <= BUDGET_SET, calls.most_common()
    assert len(store) == 151


def test_reading_a_live_entry_costs_few_calls_into_the_cache_library() -> None:
    clock = ManualClock()
    store = filled_store(clock)
    per_get, calls = library_calls(lambda: store.get("k7"), 100)
    assert per_get <= BUDGET_GET, calls.most_common()
    assert store.get("k7") is not None


def test_when_full_an_expired_entry_goes_before_a_live_one_used_less_recently() -> None:
    clock = ManualClock()
    store: TTLStore[str, str] = TTLStore(ttl=100, long_ttl=1000, maxsize=2, clock=clock)
    store.set("a", CacheEntry("x", 1.7e9, clock.now()))
    clock.advance(80)
    store.set("b", CacheEntry("x", 1.7e9, clock.now()))
    clock.advance(10)
    assert store.get("a") is not None  # "a" is now the more recently used ...
    clock.advance(60)  # ... but expired, and "b" is not
    store.set("c", CacheEntry("x", 1.7e9, clock.now()))
    assert store.get("b") is not None
    assert store.get("c") is not None
    assert len(store) == 2


def test_expired_entries_are_not_counted() -> None:
    clock = ManualClock()
    store: TTLStore[str, str] = TTLStore(ttl=100, long_ttl=1000, maxsize=10, clock=clock)
    store.set("a", CacheEntry("x", 1.7e9, clock.now()))
    store.set("aged", CacheEntry("x", 1.7e9, clock.now() - 60))  # a shared copy, 60 s old
    store.set("n", CacheEntry(None, 1.7e9, clock.now(), long_lived=True))
    assert len(store) == 3
    clock.advance(50)
    assert len(store) == 2  # the aged copy lived only the rest of its TTL
    clock.advance(60)
    assert len(store) == 1
    clock.advance(1000)
    assert len(store) == 0


def test_an_entry_moves_between_the_normal_and_the_long_lived_store() -> None:
    clock = ManualClock()
    store: TTLStore[str, str] = TTLStore(ttl=100, long_ttl=1000, maxsize=10, clock=clock)
    store.set("k", CacheEntry("x", 1.7e9, clock.now()))
    store.set("k", CacheEntry(None, 1.7e9, clock.now(), long_lived=True))
    assert len(store) == 1
    clock.advance(500)
    entry = store.get("k")
    assert entry is not None and entry.value is None
    store.set("k", CacheEntry("back", 1.7e9, clock.now()))
    assert len(store) == 1
    clock.advance(200)
    assert store.get("k") is None  # the normal TTL again
    assert len(store) == 0

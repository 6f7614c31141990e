"""Window stores in a real Redis, for the contract tests."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from esim_async.backends.redis import RedisBackend
from esim_async.backends.redis_store import RedisWindowStore
from esim_async.clock import Clock


def redis_store(
    url: str, name: str, clock: Clock, *, wait: float = 2.0, **options: Any
) -> tuple[RedisWindowStore, Callable[[], Awaitable[None]]]:
    """A store for limiter ``name`` through its own backend (a "process") on ``url``, and the
    coroutine function that closes them."""
    backend = RedisBackend.from_url(url, prefix="t", wait=wait, socket_timeout=0.5)
    store = RedisWindowStore(
        backend.redis,
        functools.partial(backend.key, name),
        call=backend.call,
        clock=clock,
        **options,
    )

    async def close() -> None:
        await store.aclose()
        await backend.aclose()

    return store, close

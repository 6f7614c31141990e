"""Token lifetime, sharing and refresh."""

from __future__ import annotations

import asyncio

import pytest

from esim_async import ManualClock, Token
from esim_async.auth import TokenManager


class FakeTokenEndpoint:
    def __init__(self, expires_in: float | None = 3600) -> None:
        self.calls = 0
        self.expires_in = expires_in
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> Token:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return Token(access_token=f"token-{self.calls:04d}", expires_in=self.expires_in)


async def test_concurrent_callers_share_one_token_request() -> None:
    endpoint = FakeTokenEndpoint()
    endpoint.gate = asyncio.Event()
    auth = TokenManager(endpoint, clock=ManualClock())
    tasks = [asyncio.create_task(auth.get()) for _ in range(10)]
    await asyncio.sleep(0)
    endpoint.gate.set()
    assert set(await asyncio.gather(*tasks)) == {"token-0001"}
    assert endpoint.calls == 1


async def test_refreshed_before_expiry_with_a_margin() -> None:
    clock = ManualClock()
    endpoint = FakeTokenEndpoint(expires_in=3600)
    auth = TokenManager(endpoint, clock=clock)
    assert await auth.get() == "token-0001"
    clock.advance(3600 - 300 - 1)  # margin: min(300 s, 10 % of life)
    assert await auth.get() == "token-0001"
    clock.advance(2)
    assert await auth.get() == "token-0002"


async def test_never_trusted_longer_than_24_hours() -> None:
    clock = ManualClock()
    endpoint = FakeTokenEndpoint(expires_in=31622400)  # the docs' example: 366 days
    auth = TokenManager(endpoint, clock=clock)
    await auth.get()
    assert auth.valid_until == pytest.approx(86400 - 300)
    clock.advance(86400)
    assert await auth.get() == "token-0002"


async def test_missing_expires_in_means_24_hours() -> None:
    clock = ManualClock()
    auth = TokenManager(FakeTokenEndpoint(expires_in=None), clock=clock)
    await auth.get()
    assert auth.valid_until == pytest.approx(86400 - 300)


async def test_invalidate_only_drops_the_refused_token() -> None:
    endpoint = FakeTokenEndpoint()
    auth = TokenManager(endpoint, clock=ManualClock())
    first = await auth.get()
    auth.invalidate("some-older-token")
    assert await auth.get() == first
    auth.invalidate(first)
    assert not auth.has_token()
    assert await auth.get() == "token-0002"


def test_token_repr_hides_the_secret() -> None:
    assert "abc-secret" not in repr(Token(access_token="abc-secret", expires_in=1))

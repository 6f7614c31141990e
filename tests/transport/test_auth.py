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


@pytest.mark.parametrize(
    ("expires_in", "renewed_at"),
    [(3600, 3600 - 300), (1000, 1000 - 100)],  # margin: min(300 s, 10 % of life)
    ids=["300-s-margin", "10-percent-margin"],
)
async def test_refreshed_before_expiry_with_a_margin(expires_in: int, renewed_at: int) -> None:
    clock = ManualClock()
    endpoint = FakeTokenEndpoint(expires_in=expires_in)
    auth = TokenManager(endpoint, clock=clock)
    assert await auth.get() == "token-0001"
    clock.advance(renewed_at - 1)
    assert await auth.get() == "token-0001"
    clock.advance(1)
    assert await auth.get() == "token-0002"
    assert endpoint.calls == 2


@pytest.mark.parametrize(
    "expires_in",
    [31622400, None],  # the docs' example (366 days), and no expires_in at all
    ids=["a-year", "missing"],
)
async def test_trusted_for_24_hours_at_most(expires_in: float | None) -> None:
    """Used until 5 minutes before 24 hours have passed, then replaced."""
    clock = ManualClock()
    endpoint = FakeTokenEndpoint(expires_in=expires_in)
    auth = TokenManager(endpoint, clock=clock)
    assert await auth.get() == "token-0001"
    clock.advance(86400 - 300 - 1)
    assert await auth.get() == "token-0001"
    assert endpoint.calls == 1
    clock.advance(1)
    assert await auth.get() == "token-0002"
    assert endpoint.calls == 2


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

"""Fixtures of the resource tests: an aioresponses mock that answers the token, a manual clock
and an Airalo client on it that does not retry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from aioresponses import aioresponses

from esim_async import AiraloClient, ManualClock

from .helpers import BASE, NOW, TOKEN


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with aioresponses() as m:
        m.post(f"{BASE}/v2/token", payload=TOKEN, repeat=True)
        yield m


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall=NOW.timestamp())


@pytest.fixture
async def client(clock: ManualClock) -> AsyncIterator[AiraloClient]:
    async with AiraloClient("id", "secret", clock=clock, max_retries=0) as c:
        yield c

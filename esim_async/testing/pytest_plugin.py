"""pytest plugin (registered automatically): the ``esim_emulator`` fixture.

The fixture needs pytest-asyncio; without it, the plugin defines nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from .server import Emulator

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the fixture needs pytest-asyncio
    pytest_asyncio = None  # type: ignore[assignment]

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def esim_emulator() -> AsyncIterator[Emulator]:
        """A started :class:`~esim_async.testing.Emulator` on 127.0.0.1 with Airalo's limits and
        a fleet of 50 eSIMs; stopped after the test."""
        async with Emulator() as emulator:
            yield emulator

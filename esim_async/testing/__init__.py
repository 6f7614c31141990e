"""Test helpers: a loopback emulator of both providers, a deterministic fleet, a pytest fixture.

Use them to test your own services against realistic provider behaviour without credentials::

    from esim_async.testing import Emulator, Fleet

    async with Emulator(fleet=Fleet.generate(100)) as emu:
        async with AiraloClient("id", "secret", base_url=emu.url) as client:
            ...

With pytest-asyncio installed, the ``esim_emulator`` fixture yields a started :class:`Emulator`.
"""

from .fleet import Fleet, SimRecord
from .path import PathDelay
from .server import Emulator, EmulatorStats, Faults, ServerLimits

__all__ = [
    "Emulator",
    "EmulatorStats",
    "Faults",
    "Fleet",
    "PathDelay",
    "ServerLimits",
    "SimRecord",
]

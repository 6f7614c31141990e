"""What the resource tests share: the provider's address, one eSIM, a token answer, and ways to
read what reached an aioresponses mock or the emulator."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aioresponses import aioresponses
from yarl import URL

from esim_async import ManualClock
from esim_async.testing import Emulator, Fleet, ServerLimits

from ..arrivals import ArrivalLog

__all__ = [
    "BASE",
    "ICCID",
    "NOW",
    "TOKEN",
    "Payload",
    "emulated",
    "sent",
]

BASE = "https://partners-api.airalo.com"
ICCID = "8944465400000267221"
TOKEN = {"data": {"access_token": "tok", "expires_in": 3600}, "meta": {"message": "success"}}
#: The wall time of the tests' clock (date rules such as a future order's due date read it).
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
#: The ``payload`` fixture: reads a documented example body by name.
Payload = Callable[[str], bytes]


def sent(m: aioresponses, method: str, url: str | re.Pattern[str]) -> list[Any]:
    """Every request ``m`` received for ``method`` at ``url`` (exact) or matching a pattern."""
    out = []
    for (meth, u), calls in m.requests.items():
        if meth == method and (u == URL(url) if isinstance(url, str) else url.match(str(u))):
            out.extend(calls)
    return out


def emulated(
    clock: ManualClock | None = None,
    *,
    fleet: Fleet | None = None,
    limits: ServerLimits | None = None,
    log: ArrivalLog | None = None,
) -> Emulator:
    """An emulator on 127.0.0.1, on ``clock`` when given (share it with the client to see
    limits as virtual arrival times), with ``log`` recording every arrival independently."""
    return Emulator(
        fleet=fleet if fleet is not None else Fleet.generate(6, seed=14),
        limits=limits,
        clock=clock,
        middlewares=[log.middleware] if log is not None else (),
    )

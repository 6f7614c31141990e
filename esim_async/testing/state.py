"""Everything the emulator knows, in one object the route modules share.

:class:`EmulatorState` holds the fleet, the limits and their windows, the faults, the issued
tokens, the usage cache, what was ordered, opted in and delivered, and the counters tests assert
on. Route modules receive it explicitly; none of them keeps state of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .clock import Clock
from .faults import FaultPlan, Faults
from .fleet import Fleet
from .limits import ServerLimits, Windows

__all__ = ["EmulatorState", "EmulatorStats"]


@dataclass
class EmulatorStats:
    """What reached the emulator."""

    arrivals: Counter[str] = field(default_factory=Counter)
    usage_by_iccid: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    #: 429s by the limit that answered them (``usage_company``, ``usage_iccid``...).
    rate_limited_by: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    tokens_issued: int = 0
    unauthorized: int = 0
    #: Arrival times (the emulator's clock) of every usage request, in order.
    usage_arrivals: list[float] = field(default_factory=list)

    @property
    def usage_requests(self) -> int:
        """Usage requests received, answered or not."""
        return sum(self.usage_by_iccid.values())


@dataclass(eq=False, repr=False)
class EmulatorState:
    """The emulator's state: what it serves, enforces, records and has delivered."""

    fleet: Fleet
    limits: ServerLimits
    faults: Faults
    clock: Clock
    #: Seconds a usage answer is served from the server's cache.
    cache_ttl: float = 1200.0
    #: Seconds an issued token stays valid.
    token_ttl: int = 86400
    #: client_id -> client_secret accepted; ``None`` accepts any non-empty pair.
    credentials: dict[str, str] | None = None
    stats: EmulatorStats = field(default_factory=EmulatorStats)
    #: Called with (endpoint, request) on every arrival, before anything else.
    on_request: Callable[[str, web.Request], None] | None = None

    # ---------------------------------------------------------------- served and enforced
    #: Issued tokens and when they expire (the emulator's clock).
    tokens: dict[str, float] = field(default_factory=dict)
    #: Issued tokens and the (client_id, client_secret) that obtained them.
    token_owners: dict[str, tuple[str, str]] = field(default_factory=dict)
    windows: Windows = field(default_factory=Windows)
    #: ICCID -> (expiry, encoded usage answer).
    usage_cache: dict[str, tuple[float, bytes]] = field(default_factory=dict)
    #: Seeded from ``faults.seed`` when the state is made.
    fault_plan: FaultPlan = field(init=False)

    # ---------------------------------------------------------------- recorded
    #: Orders created (by id), async order requests (by request_id), write bodies received.
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    async_requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    write_log: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: Answer catalogue pages >= 2 with ``data`` keyed by index (a documented quirk).
    packages_page_as_object: bool = False
    future_orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Notification opt-ins by type.
    notifications: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: list[dict[str, Any]] = field(default_factory=list)
    #: Webhook simulator requests accepted.
    simulated: list[dict[str, Any]] = field(default_factory=list)
    #: PressOne voice users by e-mail; ``voice_api_key`` None accepts any key.
    voice_users: dict[str, dict[str, Any]] = field(default_factory=dict)
    voice_api_key: str | None = None
    #: The account balance ``GET /balance`` reports (USD).
    balance: float = 1000.0

    # ---------------------------------------------------------------- outgoing webhooks
    #: Signed with this secret (default: the secret of the client whose token made the
    #: request); async orders are delivered ``async_order_delay`` s later.
    webhook_secret: str | None = None
    #: Sign the compact, slash-escaped re-encoding instead of the bytes sent (the other
    #: reading of the docs), to exercise receivers' fallback.
    sign_canonical: bool = False
    deliver_async_orders: bool = True
    async_order_delay: float = 0.05
    #: Every webhook POST attempted: url, payload and the status (``None``: not sent).
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    #: Webhook deliveries still pending (cancelled when the emulator stops).
    background: set[asyncio.Task[None]] = field(default_factory=set)

    order_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(100_001))
    iccid_numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.fault_plan = FaultPlan(self.faults.seed)

    # ---------------------------------------------------------------- tokens

    def issue_token(self, client_id: str, client_secret: str) -> str:
        """A new bearer token for this client, valid ``token_ttl`` seconds from now."""
        token = secrets.token_urlsafe(32)
        self.tokens[token] = self.clock.now() + self.token_ttl
        self.token_owners[token] = (client_id, client_secret)
        self.stats.tokens_issued += 1
        return token

    def token_valid(self, token: str) -> bool:
        """Whether ``token`` was issued and has not expired."""
        expires = self.tokens.get(token)
        return expires is not None and self.clock.now() < expires

    def token_secret(self, token: str) -> str | None:
        """The client secret that obtained ``token`` (``None``: unknown token)."""
        owner = self.token_owners.get(token)
        return owner[1] if owner is not None else None

    # ---------------------------------------------------------------- notifications

    def opted_in_url(self, kind: str) -> str | None:
        """The contact point opted in for notification ``kind``, if any."""
        opted = self.notifications.get(kind)
        return str(opted["contact_point"]) if opted else None

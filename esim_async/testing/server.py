"""A loopback emulator of the Airalo (``/v2``) and PressOne (``/customer/v2``) APIs.

It enforces rate limits at arrival time (strict sliding window by default, Laravel-style fixed
window as an option) and answers 429 with ``Retry-After`` and ``X-RateLimit-*``; caches usage
for 20 minutes like the real servers; issues expiring tokens; injects faults on demand (5xx,
slow responses, HTML instead of JSON, dropped connections); and counts every arrival so tests
can assert what reached the server.

Example::

    async with Emulator(fleet=Fleet.generate(100)) as emu:
        async with AiraloClient("id", "secret", base_url=emu.url) as client:
            await client.sims.usage(emu.fleet.iccids()[0])
        assert emu.stats.rate_limited == 0

The emulator binds to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import secrets
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from aiohttp import web
from aiohttp.typedefs import Middleware

from ..clock import Clock, MonotonicClock
from ..limits import Rate
from .api import ApiRoutes
from .api2 import MoreApiRoutes
from .fleet import Fleet
from .webhook_sim import WebhookSender

__all__ = ["Emulator", "EmulatorStats", "Faults", "ServerLimits"]

Algorithm = Literal["sliding", "fixed"]
FaultKind = Literal["500", "502", "503", "html", "drop", "slow", "429", "401"]

_json = msgspec.json.Encoder()
_AIRALO = "/v2"
_PRESSONE = "/customer/v2"
_PRESSONE_TYPO = "/cusomter/v2"


@dataclass
class ServerLimits:
    """Limits the emulator enforces (``None``: not limited)."""

    usage_iccid: Rate | None = field(default_factory=lambda: Rate(10, 60.0))
    usage_company: Rate | None = field(default_factory=lambda: Rate(5, 1.0))
    token: Rate | None = field(default_factory=lambda: Rate(3, 60.0))
    packages: Rate | None = field(default_factory=lambda: Rate(80, 60.0))
    #: Per package.
    product_information: Rate | None = field(default_factory=lambda: Rate(60, 60.0))
    #: Per ICCID.
    package_history: Rate | None = field(default_factory=lambda: Rate(10, 60.0))
    refund: Rate | None = field(default_factory=lambda: Rate(1, 300.0))
    simulator: Rate | None = field(default_factory=lambda: Rate(1, 900.0))
    algorithm: Algorithm = "sliding"

    @classmethod
    def airalo(cls) -> ServerLimits:
        return cls()

    @classmethod
    def pressone(cls) -> ServerLimits:
        return cls(
            usage_iccid=Rate(100, 60.0),
            usage_company=None,
            packages=None,
            product_information=None,
            package_history=Rate(1, 900.0),
        )

    @classmethod
    def unlimited(cls) -> ServerLimits:
        return cls(
            usage_iccid=None,
            usage_company=None,
            token=None,
            packages=None,
            product_information=None,
            package_history=None,
        )


@dataclass
class Faults:
    """Random faults, each a probability per usage request (seeded, so runs repeat)."""

    server_error: float = 0.0
    html: float = 0.0
    drop: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 2.0
    seed: int = 0


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
        return sum(self.usage_by_iccid.values())


def _wait_until(deadline: float, now: float) -> float:
    """Seconds from ``now`` to ``deadline``, rounded up so that ``now + wait >= deadline``."""
    wait = deadline - now
    while now + wait < deadline:
        wait = math.nextafter(wait, math.inf)
    return wait


class _Window:
    """Server-side limit for one key: sliding log or Laravel fixed window.

    ``sliding``: an arrival is admitted iff fewer than ``count`` admissions lie in
    ``(now - period, now]``, so no half-open window ``[t, t + period)`` ever holds more than
    ``count``. ``fixed`` (Laravel's limiter): the first admitted hit opens a window
    ``[start, start + period)`` that admits ``count`` hits; the first hit at or after its end
    opens the next one (so up to ``2 * count - 1`` can fall inside one period across a
    boundary). Refused arrivals count in neither. The wait returned with a refusal is exact:
    an arrival at ``now + wait`` is admitted.
    """

    __slots__ = ("algorithm", "hits", "rate", "start")

    def __init__(self, rate: Rate, algorithm: Algorithm) -> None:
        self.rate = rate
        self.algorithm = algorithm
        self.hits: deque[float] = deque()
        self.start = -math.inf

    def hit(self, now: float) -> float | None:
        """Count an arrival; return ``None`` if allowed, else seconds until allowed."""
        rate = self.rate
        if self.algorithm == "fixed":
            if now >= self.start + rate.period:
                self.start = now
                self.hits.clear()
            if len(self.hits) >= rate.count:
                return _wait_until(self.start + rate.period, now)
            self.hits.append(now)
            return None
        hits = self.hits
        # (compared as ``hit + period <= now``, the same sum the announced wait is built from)
        while hits and hits[0] + rate.period <= now:
            hits.popleft()
        if len(hits) >= rate.count:
            return _wait_until(hits[0] + rate.period, now)
        hits.append(now)
        return None

    def remaining(self) -> int:
        return max(0, self.rate.count - len(self.hits))


class Emulator(ApiRoutes, MoreApiRoutes, WebhookSender):
    """The emulator server. Use ``async with Emulator(...) as emu`` or ``start()``/``stop()``.

    Besides token and usage it answers the catalogue, order and eSIM endpoints with the
    documented payload shapes; ``orders``, ``async_requests`` and ``write_log`` record what was
    ordered.
    """

    def __init__(
        self,
        *,
        fleet: Fleet | None = None,
        limits: ServerLimits | None = None,
        faults: Faults | None = None,
        cache_ttl: float = 1200.0,
        token_ttl: int = 86400,
        credentials: dict[str, str] | None = None,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        middlewares: Iterable[Middleware] = (),
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the emulator binds to loopback only")
        self.fleet = fleet if fleet is not None else Fleet.generate(50)
        self.limits = limits if limits is not None else ServerLimits()
        self.faults = faults if faults is not None else Faults()
        self.cache_ttl = cache_ttl
        self.token_ttl = token_ttl
        #: client_id -> client_secret accepted; ``None`` accepts any non-empty pair.
        self.credentials = credentials
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.stats = EmulatorStats()
        self._host = host
        self._port = port
        #: aiohttp middlewares around every handler, outermost first (an independent request
        #: log, say); they see each request before the emulator counts or limits it.
        self.middlewares: list[Middleware] = list(middlewares)
        self._rng = random.Random(self.faults.seed)
        self._tokens: dict[str, float] = {}
        self._windows: dict[str, _Window] = {}
        self._cache: dict[str, tuple[float, bytes]] = {}
        self._queued: dict[str, deque[FaultKind]] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""
        #: Called with (endpoint, request) on every arrival, before anything else.
        self.on_request: Callable[[str, web.Request], None] | None = None
        #: Orders created (by id), async order requests (by request_id), write bodies received.
        self.orders: dict[int, dict[str, Any]] = {}
        self.async_requests: dict[str, dict[str, Any]] = {}
        self.write_log: list[tuple[str, dict[str, Any]]] = []
        #: Answer catalogue pages >= 2 with ``data`` keyed by index (a documented quirk).
        self.packages_page_as_object = False
        self.future_orders: dict[str, dict[str, Any]] = {}
        self.notifications: dict[str, dict[str, Any]] = {}
        self.refunds: list[dict[str, Any]] = []
        #: Webhook simulator requests accepted.
        self.simulated: list[dict[str, Any]] = []
        #: PressOne voice users by e-mail; ``voice_api_key`` None accepts any key.
        self.voice_users: dict[str, dict[str, Any]] = {}
        self.voice_api_key: str | None = None
        #: The account balance ``GET /balance`` reports (USD).
        self.balance = 1000.0
        #: Outgoing webhooks: signed with this secret (default: the secret of the client whose
        #: token made the request); async orders are delivered ``async_order_delay`` s later.
        self.webhook_secret: str | None = None
        self.sign_canonical = False
        self.deliver_async_orders = True
        self.async_order_delay = 0.05
        self.deliveries: list[dict[str, Any]] = []
        self._token_owner: dict[str, tuple[str, str]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._order_ids = itertools.count(100_001)
        self._iccid_numbers = itertools.count(1)

    # ------------------------------------------------------------------ control

    def app(self) -> web.Application:
        """The aiohttp application (mount it or run it yourself)."""
        app = web.Application(middlewares=self.middlewares)
        for prefix in (_AIRALO, _PRESSONE):
            app.router.add_post(prefix + "/token", self._token)
        for prefix in (_AIRALO, _PRESSONE, _PRESSONE_TYPO):
            app.router.add_get(prefix + "/sims/{iccid}/usage", self._usage)
        for prefix in (_AIRALO, _PRESSONE):
            app.router.add_routes(self.api_routes(prefix))
            app.router.add_routes(self.more_routes(prefix))
        app.router.add_routes(self.voice_routes())
        return app

    async def start(self) -> str:
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        addresses = runner.addresses
        port = addresses[0][1] if addresses else self._port
        self.url = f"http://{self._host}:{port}"
        return self.url

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def inject(self, endpoint: str, *kinds: FaultKind) -> None:
        """Queue faults for the next requests to ``endpoint`` (``"usage"`` or ``"token"``)."""
        self._queued.setdefault(endpoint, deque()).extend(kinds)

    def expire_tokens(self) -> None:
        """Make every issued token invalid (as if it expired)."""
        self._tokens.clear()

    def set_limit(self, name: str, rate: Rate | None) -> None:
        """Change a server limit mid-run (``usage_iccid``, ``usage_company`` or ``token``)."""
        setattr(self.limits, name, rate)
        prefix = f"{name}:"
        for key in [k for k in self._windows if k.startswith(prefix)]:
            del self._windows[key]

    def set_usage(self, iccid: str, **fields: Any) -> None:
        """Change what an eSIM reports (the server cache still answers until it expires)."""
        sim = self.fleet.get(iccid)
        if sim is None:
            raise KeyError(iccid)
        for name, value in fields.items():
            setattr(sim, name, value)

    # ------------------------------------------------------------------ helpers

    def _check_limit(self, name: str, key: str, rate: Rate | None) -> web.Response | None:
        if rate is None:
            return None
        wkey = f"{name}:{key}"
        window = self._windows.get(wkey)
        if window is None:
            window = self._windows[wkey] = _Window(rate, self.limits.algorithm)
        wait = window.hit(self.clock.now())
        if wait is None:
            return None
        self.stats.rate_limited += 1
        self.stats.rate_limited_by[name] += 1
        retry = max(1, math.ceil(wait))
        return web.json_response(
            {"message": "Too Many Attempts."},
            status=429,
            headers={
                "Retry-After": str(retry),
                "X-RateLimit-Limit": str(rate.count),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(retry),
            },
        )

    def _next_fault(self, endpoint: str) -> FaultKind | None:
        queued = self._queued.get(endpoint)
        if queued:
            return queued.popleft()
        if endpoint != "usage":
            return None
        f = self.faults
        roll = self._rng.random()
        for kind, p in (
            ("500", f.server_error),
            ("html", f.html),
            ("drop", f.drop),
            ("slow", f.slow),
        ):
            if roll < p:
                return kind  # type: ignore[return-value]
            roll -= p
        return None

    async def _apply_fault(
        self, kind: FaultKind | None, request: web.Request
    ) -> web.StreamResponse | None:
        if kind is None:
            return None
        self.stats.faults[kind] += 1
        if kind in ("500", "502", "503"):
            return web.json_response({"message": "Server Error"}, status=int(kind))
        if kind == "html":
            return web.Response(
                text="<html><body><h1>502 Bad Gateway</h1></body></html>",
                status=200,
                content_type="text/html",
            )
        if kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # the handler ends without a response
        if kind == "slow":
            await self.clock.sleep(self.faults.slow_seconds)
            return None
        if kind == "429":
            self.stats.rate_limited += 1
            return web.json_response(
                {"message": "Too Many Attempts."}, status=429, headers={"Retry-After": "1"}
            )
        if kind == "401":
            self.stats.unauthorized += 1
            return web.json_response({"message": "Unauthenticated."}, status=401)
        return None

    def _limit(self, name: str) -> Rate | None:
        rate: Rate | None = getattr(self.limits, name, None)
        return rate

    async def _guard(
        self,
        request: web.Request,
        endpoint: str,
        limits: tuple[tuple[str, str, Rate | None], ...] = (),
    ) -> web.StreamResponse | None:
        """Count the arrival, then check the token, the limits and any fault, in that order."""
        self.stats.arrivals[endpoint] += 1
        if self.on_request is not None:
            self.on_request(endpoint, request)
        if not self._authorized(request):
            self.stats.unauthorized += 1
            return web.json_response({"message": "Unauthenticated."}, status=401)
        for name, key, rate in limits:
            limited = self._check_limit(name, key, rate)
            if limited is not None:
                return limited
        return await self._apply_fault(self._next_fault(endpoint), request)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        expires = self._tokens.get(header[7:])
        return expires is not None and self.clock.now() < expires

    # ------------------------------------------------------------------ handlers

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.stats.arrivals["token"] += 1
        if self.on_request is not None:
            self.on_request("token", request)
        limited = self._check_limit("token", "all", self.limits.token)
        if limited is not None:
            return limited
        fault = await self._apply_fault(self._next_fault("token"), request)
        if fault is not None:
            return fault
        form = await request.post()
        client_id = str(form.get("client_id", ""))
        client_secret = str(form.get("client_secret", ""))
        if not client_id:
            return web.json_response(
                {
                    "data": {"client_id": "The client id field is required."},
                    "meta": {"message": "the parameter is invalid"},
                },
                status=422,
            )
        if self.credentials is not None and client_id not in self.credentials:
            return web.json_response(
                {
                    "data": {"client_id": "The selected client id is invalid."},
                    "meta": {"message": "the parameter is invalid"},
                },
                status=422,
            )
        expected = self.credentials.get(client_id) if self.credentials is not None else None
        if (
            not client_secret
            or (expected is not None and client_secret != expected)
            or (form.get("grant_type") != "client_credentials")
        ):
            return web.json_response(
                {"data": [], "meta": {"message": "Client authentication failed"}}, status=401
            )
        token = secrets.token_urlsafe(32)
        self._tokens[token] = self.clock.now() + self.token_ttl
        self._token_owner[token] = (client_id, client_secret)
        self.stats.tokens_issued += 1
        return web.json_response(
            {
                "data": {
                    "token_type": "Bearer",
                    "expires_in": self.token_ttl,
                    "access_token": token,
                },
                "meta": {"message": "success"},
            }
        )

    async def _usage(self, request: web.Request) -> web.StreamResponse:
        iccid = request.match_info["iccid"]
        self.stats.usage_by_iccid[iccid] += 1
        self.stats.usage_arrivals.append(self.clock.now())
        limits = self.limits
        guard = await self._guard(
            request,
            "usage",
            (
                ("usage_company", "all", limits.usage_company),
                ("usage_iccid", iccid, limits.usage_iccid),
            ),
        )
        if guard is not None:
            return guard
        now = self.clock.now()
        cached = self._cache.get(iccid)
        if cached is not None and cached[0] > now:
            body = cached[1]
        else:
            sim = self.fleet.get(iccid)
            if sim is None:
                return web.json_response(
                    {"data": [], "meta": {"message": "messages.resource_not_found"}}, status=404
                )
            body = _json.encode({"data": sim.usage(), "meta": {"message": "api.succes"}})
            self._cache[iccid] = (now + self.cache_ttl, body)
        headers = {}
        if limits.usage_company is not None:
            window = self._windows.get("usage_company:all")
            headers["X-RateLimit-Limit"] = str(limits.usage_company.count)
            headers["X-RateLimit-Remaining"] = str(window.remaining() if window else 0)
        return web.Response(body=body, content_type="application/json", headers=headers)


def iccids_of(fleet: Fleet, kinds: Iterable[str]) -> list[str]:
    """ICCIDs of the given kinds, in fleet order."""
    wanted = set(kinds)
    return [s.iccid for s in fleet.sims.values() if s.kind in wanted]

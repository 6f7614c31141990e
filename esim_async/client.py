"""``AiraloClient`` and ``PressOneClient``: session lifecycle, settings and resource namespaces."""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypedDict, Unpack
from urllib.parse import urlsplit

import aiohttp
import msgspec

from . import _constants as C
from ._secrets import register_secret
from .auth import TokenManager
from .backends.base import Backend, Cache, Flight, RateLimiter, SharedCache
from .backends.memory import MemoryBackend
from .cache import CallScope
from .clock import Clock, MonotonicClock
from .errors import InvalidRequestError, TransportError
from .limits import LimiterState, Rate
from .models._base import Envelope
from .models.auth import Token
from .models.usage import Usage
from .providers import AIRALO, KEYED_LIMITS, PRESSONE, ProviderProfile
from .resources.account import AccountResource, AiraloAccountResource, DevicesResource
from .resources.future_orders import FutureOrdersResource
from .resources.notifications import NotificationsResource
from .resources.orders import AiraloOrdersResource, OrdersResource
from .resources.packages import AiraloPackagesResource, PackagesResource
from .resources.refunds import RefundsResource
from .resources.sims import AiraloSimsResource, SimsResource
from .resources.voice import VoiceResource
from .resources.vouchers import VouchersResource
from .stats import ClientStats
from .transport import Request, Transport
from .validation import validate_iccid

if TYPE_CHECKING:
    from .webhooks import AsyncOrderEvent

__all__ = ["AiraloClient", "BaseClient", "ClientOptions", "PressOneClient"]

_token_decoder = msgspec.json.Decoder(Envelope[Token], strict=False)
_UNSET: Any = object()


class ClientOptions(TypedDict, total=False):
    """Options every client accepts (see :class:`AiraloClient` for what each means)."""

    prefix: str | None
    negative_cache_ttl: float
    cache_maxsize: int
    rate_margin: float
    usage_path: str | None
    timeout: float
    connect_timeout: float
    max_retries: int
    retry_after_cap: float
    max_body_size: int
    connection_limit: int
    iccid_length: tuple[int, int]
    session: aiohttp.ClientSession | None
    connector: aiohttp.BaseConnector | None
    proxy: str | None
    ssl: ssl_module.SSLContext | None
    backend: Backend | None
    clock: Clock | None
    limits: Mapping[str, Rate | None] | None


def _check_base_url(base_url: object) -> str:
    if not isinstance(base_url, str) or not base_url:
        raise InvalidRequestError("base_url must be a non-empty str", field="base_url")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(
            f"base_url must be http(s)://host[:port], got {base_url!r}", field="base_url"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidRequestError(
            "base_url must not carry credentials, a query or a fragment", field="base_url"
        )
    if parts.path not in ("", "/"):
        raise InvalidRequestError(
            f"base_url is scheme + host only, got path {parts.path!r}: the version prefix "
            "belongs to the provider profile (pass prefix=... to change it)",
            field="base_url",
        )
    return f"{parts.scheme}://{parts.netloc}"


def _check_credential(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"{name} is missing or empty", field=name)
    return value


class BaseClient:
    """The pipeline shared by every provider; use :class:`AiraloClient` or
    :class:`PressOneClient`.

    Use it as an async context manager (or call :meth:`aclose`): the aiohttp session is created
    inside the running loop on first use and closed on exit.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        profile: ProviderProfile,
        base_url: str,
        prefix: str | None = None,
        iccid_rate: Rate | None,
        company_rate: Rate | None,
        token_rate: Rate | None,
        cache_ttl: float,
        negative_cache_ttl: float = C.DEFAULT_NEGATIVE_CACHE_TTL,
        cache_maxsize: int = C.DEFAULT_CACHE_MAXSIZE,
        rate_margin: float = C.DEFAULT_RATE_MARGIN,
        usage_path: str | None = None,
        timeout: float = C.DEFAULT_TIMEOUT,
        connect_timeout: float = C.DEFAULT_CONNECT_TIMEOUT,
        max_retries: int = C.DEFAULT_MAX_RETRIES,
        retry_after_cap: float = C.DEFAULT_RETRY_AFTER_CAP,
        max_body_size: int = C.DEFAULT_MAX_BODY_SIZE,
        connection_limit: int = C.DEFAULT_CONNECTION_LIMIT,
        iccid_length: tuple[int, int] = (C.ICCID_MIN_LENGTH, C.ICCID_MAX_LENGTH),
        session: aiohttp.ClientSession | None = None,
        connector: aiohttp.BaseConnector | None = None,
        proxy: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        backend: Backend | None = None,
        clock: Clock | None = None,
        limits: Mapping[str, Rate | None] | None = None,
        account_rate: Rate | None = None,
    ) -> None:
        self._client_id = _check_credential("client_id", client_id)
        self.__secret = _check_credential("client_secret", client_secret)
        register_secret(self.__secret)
        if prefix is not None:
            if not prefix.startswith("/") or prefix.endswith("/"):
                raise InvalidRequestError(
                    "prefix must start with '/' and not end with '/'", field="prefix"
                )
            from dataclasses import replace

            profile = replace(profile, prefix=prefix)
        if usage_path is not None:
            if "{iccid}" not in usage_path or not usage_path.startswith("/"):
                raise InvalidRequestError(
                    "usage_path must be an absolute path template containing '{iccid}'",
                    field="usage_path",
                )
            profile = profile.with_paths(usage="/" + usage_path)
        if cache_ttl < 0 or negative_cache_ttl < 0:
            raise InvalidRequestError("cache TTLs must be >= 0", field="cache_ttl")
        lo, hi = iccid_length
        if not (1 <= lo <= hi <= 64):
            raise InvalidRequestError(
                "iccid_length must be (min, max) with 1 <= min <= max <= 64", field="iccid_length"
            )
        self.profile = profile
        self._iccid_length = (lo, hi)
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self.stats = ClientStats()
        self._backend: Backend = backend if backend is not None else MemoryBackend()
        self._transport = Transport(
            _check_base_url(base_url),
            clock=self._clock,
            stats=self.stats,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_retries=max_retries,
            retry_after_cap=retry_after_cap,
            max_body_size=max_body_size,
            connection_limit=connection_limit,
            session=session,
            connector=connector,
            proxy=proxy,
            ssl=ssl,
        )
        ns = f"{profile.name}:{self._client_id}"
        self._namespace = ns
        self._limiters: dict[str, RateLimiter] = {}
        self._token_limiter = self._limiter(
            "token", shared=token_rate, per_key=None, margin=rate_margin
        )
        self._usage_limiter = self._limiter(
            "usage", shared=company_rate, per_key=iccid_rate, margin=rate_margin
        )
        token_store = getattr(self._backend, "token_store", None)
        self._auth = TokenManager(
            self._fetch_token,
            clock=self._clock,
            store=token_store(ns) if token_store is not None else None,
        )
        self._transport.auth = self._auth
        self._usage_cache: Cache = self._backend.cache(
            f"{ns}:usage",
            ttl=cache_ttl,
            long_ttl=negative_cache_ttl,
            maxsize=cache_maxsize,
            clock=self._clock,
        )
        self._usage_flight: Flight = self._backend.flight(f"{ns}:usage")
        shared_cache = getattr(self._backend, "shared_cache", None)
        #: The second-level cache shared across processes (Redis backend), or None.
        self._usage_l2: SharedCache | None = (
            shared_cache(f"{ns}:usage", Usage, ttl=cache_ttl, long_ttl=negative_cache_ttl)
            if shared_cache is not None
            else None
        )
        self._usage_path = profile.path("usage")
        head, _, tail = self._usage_path.partition("{iccid}")
        self._usage_path_parts = (head, tail)
        self._token_path = profile.path("token")
        unknown = set(limits or ()) - set(profile.paths)
        if unknown:
            raise InvalidRequestError(
                f"limits for unknown endpoints: {', '.join(sorted(unknown))}", field="limits"
            )
        self._endpoint_rates: dict[str, Rate | None] = {**profile.limits, **(limits or {})}
        self._rate_margin = rate_margin
        #: Sandbox mode: one more limit over every endpoint of the account.
        self._account_limiter = (
            self._limiter("account", shared=account_rate, per_key=None, margin=rate_margin)
            if account_rate is not None
            else None
        )
        # ... applied by the transport to every request (usage included).
        self._transport.account_limiter = self._account_limiter
        self._history_cache: Cache = self._backend.cache(
            f"{ns}:package_history",
            ttl=profile.package_history_ttl,
            long_ttl=negative_cache_ttl,
            maxsize=cache_maxsize,
            clock=self._clock,
        )
        self._history_flight: Flight = self._backend.flight(f"{ns}:package_history")
        #: Calls in progress outside the flights: closing the client ends their waits.
        self._calls = CallScope()
        self._background: set[asyncio.Task[Any]] = set()
        #: Called with the ICCID after each successful top-up (a webhook receiver re-arms).
        self._topup_listeners: list[Callable[[str], None]] = []
        self._async_waiters: dict[str, asyncio.Future[AsyncOrderEvent]] = {}
        self._async_early: OrderedDict[str, AsyncOrderEvent] = OrderedDict()

    def _deliver_async_order(self, event: AsyncOrderEvent) -> None:
        """An async order's webhook arrived: wake whoever awaits it, or keep it for later."""
        waiter = self._async_waiters.pop(event.request_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(event)
            return
        self._async_early[event.request_id] = event
        while len(self._async_early) > 1000:
            self._async_early.popitem(last=False)

    def _endpoint_limiter(self, endpoint: str) -> RateLimiter:
        """The limiter of ``endpoint`` (created on first use; cool-downs apply even unlimited)."""
        limiter = self._limiters.get(endpoint)
        if limiter is None:
            rate = self._endpoint_rates.get(endpoint)
            keyed = endpoint in KEYED_LIMITS
            limiter = self._limiter(
                endpoint,
                shared=None if keyed else rate,
                per_key=rate if keyed else None,
                margin=self._rate_margin,
            )
        return limiter

    def _path(self, endpoint: str, **params: str) -> str:
        template = self.profile.path(endpoint)
        return template.format(**params) if params else template

    def _limiter(
        self, endpoint: str, *, shared: Rate | None, per_key: Rate | None, margin: float
    ) -> RateLimiter:
        limiter = self._backend.limiter(
            f"{self._namespace}:{endpoint}",
            shared=shared,
            per_key=per_key,
            margin=margin,
            clock=self._clock,
        )
        self._limiters[endpoint] = limiter
        return limiter

    # ------------------------------------------------------------------ pipeline pieces

    async def _fetch_token(self) -> Token:
        request = Request(
            "POST",
            self._token_path,
            _token_decoder,
            limiter=self._token_limiter,
            account_limiter=self._account_limiter,
            authenticated=False,
            token_request=True,
            # Asking for a token spends nothing, so it is safe to retry like a read.
            idempotent=True,
            form={
                "client_id": self._client_id,
                "client_secret": self.__secret,
                "grant_type": "client_credentials",
            },
        )
        self.stats.token_requests += 1
        return (await self._transport.request(request)).data

    def _utcnow(self) -> datetime:
        """The current UTC time (for date rules such as a future order's due date)."""
        return datetime.now(UTC)

    def _validate_iccid(self, iccid: object) -> str:
        lo, hi = self._iccid_length
        return validate_iccid(iccid, min_length=lo, max_length=hi)

    # ------------------------------------------------------------------ public surface

    @property
    def base_url(self) -> str:
        """Scheme + host every request goes to."""
        return self._transport.base_url

    @property
    def client_id(self) -> str:
        return self._client_id

    @cached_property
    def sims(self) -> SimsResource:
        """eSIM endpoints: ``usage``, ``usage_many``, ``get``, ``list``, ``topup_packages``,
        ``package_history``, ``instructions``."""
        return SimsResource(self)

    @cached_property
    def packages(self) -> PackagesResource:
        """The catalogue: ``list``, ``page``."""
        return PackagesResource(self)

    @cached_property
    def orders(self) -> OrdersResource:
        """Orders and top-ups: ``create``, ``get``, ``list``, ``page``, ``topup``."""
        return OrdersResource(self)

    @cached_property
    def account(self) -> AccountResource:
        """The account: ``balance``."""
        return AccountResource(self)

    @cached_property
    def devices(self) -> DevicesResource:
        """eSIM-capable devices: ``compatible``."""
        return DevicesResource(self)

    def rate_limit_state(self) -> dict[str, LimiterState]:
        """Configured and effective rates, cool-downs, waiters and last ``X-RateLimit-*``
        headers, per endpoint."""
        for endpoint, rate in self._endpoint_rates.items():
            if rate is not None:
                self._endpoint_limiter(endpoint)
        return {name: lim.state() for name, lim in self._limiters.items()}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel in-flight work, release limiter waiters and close the session. Idempotent.

        Every read still waiting (for budget, a per-eSIM window, a retry, an answer) ends at
        once with a :class:`~esim_async.errors.TransportError`, and so does any later request.
        A write in progress is not cut short: it fails as its connection closes, with
        ``OutcomeUnknownError`` if it may have reached the provider.
        """
        if self._transport.closed:
            return
        await self._usage_flight.aclose()
        await self._history_flight.aclose()
        await self._calls.aclose()
        waiters, self._async_waiters = self._async_waiters, {}
        for waiter in waiters.values():
            if not waiter.done():
                waiter.set_exception(TransportError("the client was closed while waiting"))
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._auth.aclose()
        for limiter in self._limiters.values():
            await limiter.aclose()
        await self._transport.aclose()
        await self._backend.aclose()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(client_id={self._client_id!r}, "
            f"base_url={self.base_url!r}, client_secret='***')"
        )


class AiraloClient(BaseClient):
    """Async client of the Airalo Partner API v2.

    Example::

        async with AiraloClient(client_id, client_secret) as client:
            usage = await client.sims.usage("8944465400000267221")
            print(usage.status, usage.remaining, "MB left")

    Args:
        client_id, client_secret: the API credentials (the secret is never logged or shown).
        base_url: scheme + host (default ``https://partners-api.airalo.com``).
        prefix: version prefix (default ``/v2``).
        iccid_rate: per-ICCID usage limit (default 10 per 60 s).
        company_rate: per-company usage limit (default 5 per second).
        token_rate: limit of the token endpoint (default 3 per minute).
        cache_ttl: seconds a usage answer is reused; mirrors the server cache (20 minutes;
            60 minutes with ``sandbox=True``).
        negative_cache_ttl: seconds a 404 or a recycled eSIM is remembered (24 h).
        cache_maxsize: usage entries kept (100,000).
        rate_margin: safety margin added to each limit's period, as a fraction (0.02).
        sandbox: Airalo Sandbox mode: usage cached 60 minutes by default.
        timeout, connect_timeout: seconds per HTTP attempt, and to connect.
        max_retries: retries of idempotent requests (2).
        retry_after_cap: the longest ``Retry-After`` a call waits through (60 s).
        iccid_length: (min, max) digits an ICCID may have ((18, 22)).
        session, connector: your own aiohttp session or connector (not closed by the client).
        proxy, ssl: an HTTP proxy URL and an SSL context (certificates are always verified).
        backend: where limiter state lives (in memory by default).
        clock: time source (tests inject one).
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        base_url: str = AIRALO.base_url,  # type: ignore[assignment]
        iccid_rate: Rate | None = _UNSET,
        company_rate: Rate | None = _UNSET,
        token_rate: Rate | None = _UNSET,
        cache_ttl: float | None = None,
        sandbox: bool = False,
        sandbox_rate: Rate | None = _UNSET,
        **options: Unpack[ClientOptions],
    ) -> None:
        profile = AIRALO
        super().__init__(
            client_id,
            client_secret,
            profile=profile,
            base_url=base_url,
            iccid_rate=profile.iccid_rate if iccid_rate is _UNSET else iccid_rate,
            company_rate=profile.company_rate if company_rate is _UNSET else company_rate,
            token_rate=profile.token_rate if token_rate is _UNSET else token_rate,
            cache_ttl=cache_ttl
            if cache_ttl is not None
            else (C.SANDBOX_CACHE_TTL if sandbox else profile.cache_ttl),
            account_rate=(sandbox_rate if sandbox_rate is not _UNSET else profile.sandbox_rate)
            if sandbox
            else None,
            **options,
        )
        self.sandbox = sandbox

    @cached_property
    def sims(self) -> AiraloSimsResource:
        """eSIM endpoints, plus ``update_brand``."""
        return AiraloSimsResource(self)

    @cached_property
    def packages(self) -> AiraloPackagesResource:
        """The catalogue, plus ``product_information``."""
        return AiraloPackagesResource(self)

    @cached_property
    def orders(self) -> AiraloOrdersResource:
        """Orders and top-ups, plus ``create_async``."""
        return AiraloOrdersResource(self)

    @cached_property
    def account(self) -> AiraloAccountResource:
        """The account: ``balance``, ``exchange_rates``."""
        return AiraloAccountResource(self)

    @cached_property
    def future_orders(self) -> FutureOrdersResource:
        """Scheduled orders: ``create``, ``list``, ``cancel``."""
        return FutureOrdersResource(self)

    @cached_property
    def vouchers(self) -> VouchersResource:
        """Vouchers: ``create_esim``, ``create_airmoney``."""
        return VouchersResource(self)

    @cached_property
    def refunds(self) -> RefundsResource:
        """Refund requests: ``create``."""
        return RefundsResource(self)

    @cached_property
    def notifications(self) -> NotificationsResource:
        """Notifications: ``opt_in``, ``get``, ``opt_out``, ``simulate``."""
        return NotificationsResource(self)


class PressOneClient(BaseClient):
    """Async client of PressOne's data eSIM API (``/customer/v2``, Airalo's dialect).

    PressOne publishes no host, so ``base_url`` is required. The usage path can be changed with
    ``usage_path`` (the docs also spell it ``/cusomter/v2/sims/{iccid}/usage``).

    Example::

        async with PressOneClient(cid, secret, base_url="https://esim.example.com") as client:
            usage = await client.sims.usage("8944465400000267221")

    Defaults: ``iccid_rate=Rate(100, 60.0)``, no company limit, usage cached 20 minutes. The
    other options are those of :class:`AiraloClient`.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        base_url: str,
        iccid_rate: Rate | None = _UNSET,
        company_rate: Rate | None = _UNSET,
        token_rate: Rate | None = _UNSET,
        cache_ttl: float | None = None,
        voice_base_url: str = "https://api.pressone.co",
        voice_api_key: str | None = None,
        voice_paths: Mapping[str, tuple[str, str]] | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        profile = PRESSONE
        super().__init__(
            client_id,
            client_secret,
            profile=profile,
            base_url=base_url,
            iccid_rate=profile.iccid_rate if iccid_rate is _UNSET else iccid_rate,
            company_rate=profile.company_rate if company_rate is _UNSET else company_rate,
            token_rate=profile.token_rate if token_rate is _UNSET else token_rate,
            cache_ttl=cache_ttl if cache_ttl is not None else profile.cache_ttl,
            **options,
        )
        register_secret(voice_api_key)
        self._voice_api_key = voice_api_key
        self._voice_paths = dict(voice_paths or {})
        self._voice_transport = Transport(
            _check_base_url(voice_base_url),
            clock=self._clock,
            stats=self.stats,
            timeout=options.get("timeout", C.DEFAULT_TIMEOUT),
            connect_timeout=options.get("connect_timeout", C.DEFAULT_CONNECT_TIMEOUT),
            max_retries=options.get("max_retries", C.DEFAULT_MAX_RETRIES),
            proxy=options.get("proxy"),
            ssl=options.get("ssl"),
        )

    @cached_property
    def voice(self) -> VoiceResource:
        """The voice-only eSIM API: ``available_numbers``, ``claim_number``, ``renew_number``,
        ``users`` (its own host and API key)."""
        return VoiceResource(
            self._voice_transport,
            self._endpoint_limiter("voice"),
            self._voice_api_key,
            self._voice_paths,
        )

    async def aclose(self) -> None:
        await super().aclose()
        await self._voice_transport.aclose()

"""``AiraloClient`` and ``PressOneClient``: session lifecycle, settings and resource namespaces."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar, Unpack

import msgspec

from ._secrets import register_holder, register_secret
from .auth import TokenManager
from .backends.base import Backend, Cache, RateLimiter, SharedCache
from .cache import CachedEndpoint
from .clock import Clock
from .config import UNSET, ClientConfig, ClientOptions, check_base_url
from .context import ClientContext
from .errors import InvalidRequestError
from .instrument import Instrumentation, RouteTable
from .limits import LimiterState, Rate
from .models._base import Envelope
from .models.auth import Token
from .models.usage import Usage
from .providers import AIRALO, PRESSONE, EndpointLimit
from .resources.account import AccountResource, AiraloAccountResource, DevicesResource
from .resources.future_orders import FutureOrdersResource
from .resources.notifications import NotificationsResource
from .resources.orders import AiraloOrdersResource, OrdersResource
from .resources.packages import AiraloPackagesResource, PackagesResource
from .resources.refunds import RefundsResource
from .resources.sims import AiraloSimsResource, SimsResource, stamp_usage, usage_is_recycled
from .resources.voice import DEFAULT_VOICE_PATHS, VoiceResource, check_voice_paths
from .resources.vouchers import VouchersResource
from .stats import ClientStats
from .transport import Request, Transport

__all__ = [
    "AiraloClient",
    "AiraloOverrides",
    "BaseClient",
    "ClientOptions",
    "EnvNames",
    "PressOneClient",
    "PressOneOverrides",
]

_token_envelope = msgspec.json.Decoder(Envelope[Token], strict=False)

#: A bearer token as a request header can carry it: visible ASCII, no spaces.
_bearer_token = re.compile(r"[\x21-\x7e]+").fullmatch


class _TokenDecoder:
    """Reads the token endpoint's answer. A token no request can carry (empty, with spaces,
    control characters or non-ASCII text) makes the answer unreadable, like any answer of the
    wrong shape: it is retried, never sent on and never kept."""

    __slots__ = ()

    def decode(self, buf: bytes, /) -> Envelope[Token]:
        """The answer in ``buf`` (msgspec's ``ValidationError`` for an unusable token)."""
        answer = _token_envelope.decode(buf)
        if _bearer_token(answer.data.access_token) is None:
            raise msgspec.ValidationError(
                "access_token is not a bearer token (empty, or not visible ASCII)"
            )
        return answer


_token_decoder = _TokenDecoder()

R = TypeVar("R")

#: The settings every transport of a client takes (the data API's and PressOne's voice API's).
_TRANSPORT_SETTINGS = (
    *("clock", "timeout", "connect_timeout", "max_retries", "retry_after_cap", "max_body_size"),
    *("connection_limit", "session", "connector", "proxy", "ssl"),
)


def _transport(config: ClientConfig, base_url: str, **kwargs: Any) -> Transport:
    """A transport to ``base_url`` with ``config``'s settings."""
    settings = {name: getattr(config, name) for name in _TRANSPORT_SETTINGS}
    return Transport(base_url, **settings, **kwargs)


def _namespace(resource: Callable[[ClientContext], R], doc: str) -> cached_property[R]:
    """A resource namespace of the client (``client.sims``...), created on first use."""
    namespace: cached_property[R] = cached_property(lambda client: resource(client._context))
    namespace.__doc__ = doc
    return namespace


def _check_credential(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"{name} is missing or empty", field=name)
    return value


@dataclass(frozen=True, slots=True)
class EnvNames:
    """The environment variables a client's ``from_env`` reads (the command line reads the
    same ones): see ``AiraloClient.ENV_VARS`` and ``PressOneClient.ENV_VARS``."""

    client_id: str
    client_secret: str
    #: Scheme + host of the API, or ``None`` when the provider reads none from the environment.
    base_url: str | None = None


class _EnvOverrides(ClientOptions, total=False):
    client_id: str | None
    client_secret: str | None
    base_url: str | None


class AiraloOverrides(_EnvOverrides, total=False):
    """Keywords of :meth:`AiraloClient.from_env`: those of :class:`AiraloClient`, with the
    credentials optional (``None`` or left out: read from the environment)."""

    sandbox: bool
    sandbox_rate: Rate | None


class PressOneOverrides(_EnvOverrides, total=False):
    """Keywords of :meth:`PressOneClient.from_env`: those of :class:`PressOneClient`, with the
    credentials and ``base_url`` optional (``None`` or left out: read from the environment)."""

    voice_base_url: str
    voice_api_key: str | None
    voice_paths: Mapping[str, tuple[str, str]] | None


def _from_environment(
    names: EnvNames,
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """The constructor keywords of ``from_env``: ``overrides``, with each of ``names`` they
    leave out (or give as ``None``) read from ``environ`` (a blank variable is missing)."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    variables = {
        "client_id": names.client_id,
        "client_secret": names.client_secret,
        "base_url": names.base_url,
    }
    kwargs = {k: v for k, v in overrides.items() if v is not None or k not in variables}
    missing: list[tuple[str, str]] = []
    base_url_var: str | None = None
    for key, var in variables.items():
        if key in kwargs or var is None:
            continue
        value = env.get(var, "")
        if value.strip():
            kwargs[key] = value
            if key == "base_url":
                base_url_var = var
        else:
            missing.append((key, var))
    if missing:
        *rest, (_, last) = missing
        listed = f"{', '.join(var for _, var in rest)} and {last}" if rest else last
        verb = "are" if rest else "is"
        raise InvalidRequestError(f"{listed} {verb} not set or empty", field=missing[0][0])
    if base_url_var is not None:
        try:
            check_base_url(kwargs["base_url"])
        except InvalidRequestError:
            # The value may carry credentials: name the variable, never echo what it holds.
            raise InvalidRequestError(
                f"{base_url_var} must be http(s)://host[:port]: scheme and host only, without "
                "credentials, path, query or fragment",
                field="base_url",
            ) from None
    return kwargs


class BaseClient:
    """The pipeline shared by every provider; use :class:`AiraloClient` or
    :class:`PressOneClient`.

    Use it as an async context manager (or call :meth:`aclose`): the aiohttp session is created
    inside the running loop on first use and closed on exit.

    Args:
        client_id, client_secret: the API credentials (the secret is never logged or shown).
        config: every other setting (built by the provider clients from their keywords).
    """

    def __init__(self, client_id: str, client_secret: str, config: ClientConfig) -> None:
        self._client_id = _check_credential("client_id", client_id)
        self.__secret = _check_credential("client_secret", client_secret)
        register_secret(self.__secret)
        # Held for the client's lifetime: never pushed out of the registry by later tokens.
        register_holder(self)
        self.__config = config
        self.profile = profile = config.profile
        self._clock: Clock = config.clock
        self.stats = ClientStats()
        self._backend: Backend = config.backend
        # One account on one host: a sandbox and production never share limits or a token.
        self._namespace = ns = f"{profile.name}:{self._client_id}@{config.base_url}"
        self._limiters: dict[str, RateLimiter] = {}
        self._token_limiter = self._endpoint_limiter("token")
        token_store = getattr(self._backend, "token_store", None)
        self._auth = TokenManager(
            self._fetch_token,
            clock=self._clock,
            store=token_store(ns) if token_store is not None else None,
        )
        #: Sandbox mode: one more limit over every endpoint of the account.
        self._account_limiter = (
            self._endpoint_limiter("account", EndpointLimit(shared=config.account_rate))
            if config.account_rate is not None
            else None
        )
        # ... applied by the transport to every request (usage included).
        self._transport = _transport(
            config,
            config.base_url,
            stats=self.stats,
            auth=self._auth,
            account_limiter=self._account_limiter,
        )
        shared_cache = getattr(self._backend, "shared_cache", None)  # across processes (Redis)
        shared: SharedCache | None = None
        if shared_cache is not None:
            shared = shared_cache(
                f"{ns}:usage",
                Usage,
                ttl=config.cache_ttl,
                long_ttl=config.negative_cache_ttl,
                clock=self._clock,
            )
        #: What the resources see of this client.
        self._context = ClientContext(
            label=repr(self),
            config=config,
            stats=self.stats,
            transport=self._transport,
            limiter=self._endpoint_limiter,
            account_limiter=self._account_limiter,
            usage_endpoint=CachedEndpoint(
                cache=self._cache("usage", config.cache_ttl),
                flight=self._backend.flight(f"{ns}:usage"),
                clock=self._clock,
                stats=self.stats,
                shared=shared,
                long_lived=usage_is_recycled,
                on_answer=stamp_usage,
            ),
            history_endpoint=CachedEndpoint(
                cache=self._cache("package_history", profile.package_history_ttl),
                flight=self._backend.flight(f"{ns}:package_history"),
                clock=self._clock,
                stats=self.stats,
            ),
        )

    def _cache(self, endpoint: str, ttl: float) -> Cache:
        """This process's cache of ``endpoint``'s answers (``ttl``; 404s: the negative TTL)."""
        config = self.__config
        return self._backend.cache(
            f"{self._namespace}:{endpoint}",
            ttl=ttl,
            long_ttl=config.negative_cache_ttl,
            maxsize=config.cache_maxsize,
            clock=self._clock,
        )

    def _endpoint_limiter(self, endpoint: str, limit: EndpointLimit | None = None) -> RateLimiter:
        """The limiter of ``endpoint`` (created on first use, with ``limit`` or the configured
        one; cool-downs apply even unlimited)."""
        limiter = self._limiters.get(endpoint)
        if limiter is None:
            limit = limit or self.__config.limit(endpoint)
            limiter = self._limiters[endpoint] = self._backend.limiter(
                f"{self._namespace}:{endpoint}",
                shared=limit.shared,
                per_key=limit.per_key,
                margin=self.__config.rate_margin,
                clock=self._clock,
            )
        return limiter

    # ------------------------------------------------------------------ pipeline pieces

    async def _fetch_token(self) -> Token:
        request = Request(
            "POST",
            self.profile.path("token"),
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

    # ------------------------------------------------------------------ public surface

    @property
    def config(self) -> ClientConfig:
        """Every setting of this client, frozen (limits, cache TTLs, timeouts...); no
        credentials."""
        return self.__config

    @property
    def base_url(self) -> str:
        """Scheme + host every request goes to."""
        return self._transport.base_url

    @property
    def instrumentation(self) -> Instrumentation | None:
        """Where calls are reported (:meth:`set_instrumentation`); ``None`` when nowhere."""
        return self._transport.instrumentation

    @property
    def client_id(self) -> str:
        return self._client_id

    sims = _namespace(
        SimsResource,
        "eSIM endpoints: ``usage``, ``usage_many``, ``get``, ``list``, ``topup_packages``, "
        "``package_history``, ``instructions``.",
    )
    packages = _namespace(PackagesResource, "The catalogue: ``list``, ``page``.")
    orders = _namespace(
        OrdersResource, "Orders and top-ups: ``create``, ``get``, ``list``, ``page``, ``topup``."
    )
    account = _namespace(AccountResource, "The account: ``balance``.")
    devices = _namespace(DevicesResource, "eSIM-capable devices: ``compatible``.")

    def rate_limit_state(self) -> dict[str, LimiterState]:
        """Configured and effective rates, cool-downs, waiters and last ``X-RateLimit-*``
        headers, per endpoint."""
        for endpoint, limit in self.__config.limits.items():
            if limit.limited:
                self._endpoint_limiter(endpoint)
        return {name: lim.state() for name, lim in self._limiters.items()}

    def set_instrumentation(self, instrumentation: Instrumentation | None) -> None:
        """Report every API call to ``instrumentation`` (``None``: stop); see
        :func:`esim_async.otel.instrument` for OpenTelemetry."""
        profile = self.profile
        base = self.config.base_url
        routes = RouteTable((name, profile.path(name)) for name in profile.paths)
        self._transport.set_instrumentation(instrumentation, routes)
        context = self._context
        for endpoint, cached in (
            ("usage", context.usage_endpoint),
            ("package_history", context.history_endpoint),
        ):
            if endpoint in profile.paths:
                cached.set_instrumentation(instrumentation, endpoint, profile.path(endpoint), base)

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
        try:
            await self._context.aclose()
            await self._auth.aclose()
            for limiter in self._limiters.values():
                await limiter.aclose()
        finally:
            # Even a close cancelled on its way closes the transport: no request, a write
            # least of all, goes out of a client once its close began.
            await self._transport.aclose()
            await self._backend.aclose()

    def current_secrets(self) -> tuple[str, ...]:
        """The secrets this client uses (its client secret, PressOne's voice key): kept
        redacted in logs and errors for as long as the client lives."""
        voice_key = getattr(self, "_voice_api_key", None)
        return (self.__secret, voice_key) if voice_key else (self.__secret,)

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
        sandbox: Airalo Sandbox mode: usage cached 60 minutes by default, and every request
            within ``sandbox_rate`` (default 50 per minute for the account).
        limits: limits of other endpoints over the provider's defaults: endpoint name ->
            :class:`~esim_async.EndpointLimit` (over all requests and/or per key), ``None`` (no
            limit), or a bare :class:`~esim_async.Rate` (per key where the provider counts per
            key: ``product_information`` per package, ``package_history`` per eSIM).
        timeout, connect_timeout: seconds per HTTP attempt, and to connect.
        max_retries: retries of idempotent requests (2).
        retry_after_cap: the longest ``Retry-After`` a call waits through (60 s).
        iccid_length: (min, max) digits an ICCID may have ((18, 22)).
        session, connector: your own aiohttp session or connector (not closed by the client).
        proxy, ssl: an HTTP proxy URL and an SSL context (certificates are always verified).
        backend: where limiter state lives (in memory by default).
        clock: time source, monotonic and wall time alike (tests inject one).

    Every setting ends up in :attr:`config`, a frozen :class:`~esim_async.ClientConfig`.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        base_url: str = AIRALO.base_url,  # type: ignore[assignment]
        sandbox: bool = False,
        sandbox_rate: Rate | None = UNSET,
        **options: Unpack[ClientOptions],
    ) -> None:
        config = ClientConfig.for_provider(
            AIRALO, base_url=base_url, sandbox=sandbox, sandbox_rate=sandbox_rate, **options
        )
        super().__init__(client_id, client_secret, config)

    #: The environment variables :meth:`from_env` reads; the command line reads the same.
    ENV_VARS: ClassVar[EnvNames] = EnvNames("AIRALO_CLIENT_ID", "AIRALO_CLIENT_SECRET")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Unpack[AiraloOverrides]
    ) -> Self:
        """A client whose credentials come from the environment.

        Reads ``AIRALO_CLIENT_ID`` and ``AIRALO_CLIENT_SECRET``, the variables the
        ``esim-async`` command line documents. Keywords win over the environment: a
        ``client_id`` or ``client_secret`` given (not ``None``) is used as it is; every other
        keyword is the constructor's::

            async with AiraloClient.from_env(company_rate=Rate(4, 1.0)) as client:
                ...

        Args:
            environ: where the variables are read (default ``os.environ``); any mapping.
            overrides: keywords of :class:`AiraloClient`, over the environment.

        Raises:
            InvalidRequestError: a variable needed is unset or empty (the message names it,
                ``field`` is the argument it stands for; no value is ever shown), or a
                keyword is invalid as in the constructor.
        """
        return cls(**_from_environment(cls.ENV_VARS, environ, overrides))

    @property
    def sandbox(self) -> bool:
        """Airalo Sandbox mode."""
        return self.config.sandbox

    sims = _namespace(AiraloSimsResource, "eSIM endpoints, plus ``update_brand``.")
    packages = _namespace(AiraloPackagesResource, "The catalogue, plus ``product_information``.")
    orders = _namespace(AiraloOrdersResource, "Orders and top-ups, plus ``create_async``.")
    account = _namespace(AiraloAccountResource, "The account: ``balance``, ``exchange_rates``.")
    future_orders = _namespace(
        FutureOrdersResource, "Scheduled orders: ``create``, ``list``, ``cancel``."
    )
    vouchers = _namespace(VouchersResource, "Vouchers: ``create_esim``, ``create_airmoney``.")
    refunds = _namespace(RefundsResource, "Refund requests: ``create``.")
    notifications = _namespace(
        NotificationsResource, "Notifications: ``opt_in``, ``get``, ``opt_out``, ``simulate``."
    )


class PressOneClient(BaseClient):
    """Async client of PressOne's data eSIM API (``/customer/v2``, Airalo's dialect).

    PressOne publishes no host, so ``base_url`` is required. The usage path can be changed with
    ``usage_path`` (the docs also spell it ``/cusomter/v2/sims/{iccid}/usage``).

    Example::

        async with PressOneClient(cid, secret, base_url="https://esim.example.com") as client:
            usage = await client.sims.usage("8944465400000267221")

    Defaults: ``iccid_rate=Rate(100, 60.0)``, no company limit, usage cached 20 minutes. The
    other options are those of :class:`AiraloClient`. ``client.voice``, PressOne's voice API on
    ``voice_base_url`` with ``voice_api_key``, runs with the same options (session, connector,
    proxy, timeouts, retries, ``retry_after_cap``, ``max_body_size``, clock); its limit is
    ``limits={"voice": ...}`` (none by default). ``voice_paths`` maps a voice operation to a
    ``(method, path)`` pair; an unknown operation or a malformed pair raises
    :class:`~esim_async.errors.InvalidRequestError` (``field="voice_paths"``) here.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        base_url: str,
        voice_base_url: str = "https://api.pressone.co",
        voice_api_key: str | None = None,
        voice_paths: Mapping[str, tuple[str, str]] | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        config = ClientConfig.for_provider(
            PRESSONE,
            base_url=base_url,
            voice_base_url=voice_base_url,
            voice_paths=check_voice_paths(voice_paths) if voice_paths else None,
            **options,
        )
        super().__init__(client_id, client_secret, config)
        register_secret(voice_api_key)
        self._voice_api_key = voice_api_key
        assert config.voice_base_url is not None
        self._voice_transport = _transport(config, config.voice_base_url, stats=self.stats)

    #: The environment variables :meth:`from_env` reads; the command line reads the same.
    ENV_VARS: ClassVar[EnvNames] = EnvNames(
        "PRESSONE_CLIENT_ID", "PRESSONE_CLIENT_SECRET", "PRESSONE_BASE_URL"
    )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Unpack[PressOneOverrides]
    ) -> Self:
        """A client whose credentials and host come from ``PRESSONE_CLIENT_ID``,
        ``PRESSONE_CLIENT_SECRET`` and ``PRESSONE_BASE_URL``, as :meth:`AiraloClient.from_env`
        (a malformed ``PRESSONE_BASE_URL`` raises InvalidRequestError naming the variable)."""
        return cls(**_from_environment(cls.ENV_VARS, environ, overrides))

    @cached_property
    def voice(self) -> VoiceResource:
        """The voice-only eSIM API: ``available_numbers``, ``claim_number``, ``renew_number``,
        ``users`` (its own host and API key)."""
        return VoiceResource(
            self._voice_transport,
            self._endpoint_limiter("voice"),
            self._voice_api_key,
            self.config.voice_paths,
        )

    def set_instrumentation(self, instrumentation: Instrumentation | None) -> None:
        """Report every API call, the voice API's included, to ``instrumentation``."""
        super().set_instrumentation(instrumentation)
        voice = {**DEFAULT_VOICE_PATHS, **self.config.voice_paths}
        routes = RouteTable((f"voice.{name}", path) for name, (_, path) in voice.items())
        self._voice_transport.set_instrumentation(instrumentation, routes)

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self._voice_transport.aclose()

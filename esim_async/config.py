"""Every setting of a client in one frozen object, :class:`ClientConfig` (``client.config``).

The client constructors turn their keywords into a ``ClientConfig`` on the provider profile's
defaults, checked once; both transports, every limiter and the caches are built from it.
"""

from __future__ import annotations

import math
import ssl as ssl_module
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypedDict, TypeGuard, Unpack
from urllib.parse import urlsplit

import aiohttp

from . import _constants as C
from ._secrets import REDACTED
from .backends.base import Backend
from .backends.memory import MemoryBackend
from .clock import Clock, MonotonicClock, as_clock
from .errors import InvalidRequestError
from .limits import Rate
from .providers import EndpointLimit, ProviderProfile

__all__ = [
    "UNSET",
    "ClientConfig",
    "ClientOptions",
    "EndpointLimit",
    "check_base_url",
    "check_max_age",
    "check_retries",
    "check_timeout",
]

#: Marks a keyword the caller did not pass (``None`` means "no limit" for the rates).
UNSET: Any = object()

_NO_LIMIT = EndpointLimit()


class ClientOptions(TypedDict, total=False):
    """Options every client accepts (see :class:`~esim_async.AiraloClient` for what each
    means). A rate given as ``None`` is no limit; ``cache_ttl=None`` is the provider's."""

    iccid_rate: Rate | None
    company_rate: Rate | None
    token_rate: Rate | None
    cache_ttl: float | None
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
    limits: Mapping[str, Rate | EndpointLimit | None] | None


def check_base_url(base_url: object, *, field: str = "base_url") -> str:
    """``base_url`` as ``scheme://host[:port]``; anything else raises InvalidRequestError."""
    if not isinstance(base_url, str) or not base_url:
        raise InvalidRequestError(f"{field} must be a non-empty str", field=field)
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # (never the value: it may carry credentials, or be a secret passed in the wrong place)
        raise InvalidRequestError(
            f"{field} must be http(s)://host[:port]: an http or https scheme and a host",
            field=field,
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidRequestError(
            f"{field} must not carry credentials, a query or a fragment", field=field
        )
    if parts.path not in ("", "/"):
        raise InvalidRequestError(
            f"{field} is scheme + host only, got path {parts.path!r}: the version prefix "
            "belongs to the provider profile (pass prefix=... to change it)",
            field=field,
        )
    return f"{parts.scheme}://{parts.netloc}"


def check_timeout(value: object, *, field: str = "timeout") -> float:
    """``value`` as a number of seconds a wait may last: finite and above zero (aiohttp reads
    zero, a negative or a NaN timeout as none at all), else :class:`InvalidRequestError`."""
    if not (_is_number(value) and math.isfinite(value) and value > 0):
        raise InvalidRequestError(
            f"{field} must be a finite number of seconds > 0, got {value!r}", field=field
        )
    return float(value)


def check_retries(value: object, *, field: str = "max_retries") -> int:
    """``value`` as a retry count: an int >= 0, else :class:`InvalidRequestError`."""
    return _check_int(value, field, 0)


def check_max_age(value: object, *, field: str = "max_age") -> float:
    """``value`` as the age in seconds a cached value may have: a number >= 0 (``inf``: any
    age), else :class:`InvalidRequestError` (a NaN one would accept every age)."""
    return _check_seconds(value, field, finite=False)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_int(value: object, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRequestError(
            f"{field} must be an int >= {minimum}, got {value!r}", field=field
        )
    return value


def _check_seconds(value: object, field: str, *, finite: bool) -> float:
    """``value`` as a duration >= 0 (``finite``: and not infinite); never NaN."""
    if not (_is_number(value) and value >= 0 and not (finite and math.isinf(value))):
        kind = "a finite number" if finite else "a number"
        raise InvalidRequestError(f"{field} must be {kind} >= 0, got {value!r}", field=field)
    return float(value)


def _plain_path_text(text: str) -> bool:
    """Whether ``text`` reads as a path alone: no query, fragment or white space."""
    return not any(c in "?#" or c.isspace() for c in text)


def _iccid_template(template: object) -> bool:
    """Whether ``template`` is an absolute path whose only field is a bare ``{iccid}``."""
    if not isinstance(template, str) or not template.startswith("/"):
        return False
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:  # an unbalanced brace
        return False
    fields = [(name, spec, conversion) for _, name, spec, conversion in parts if name is not None]
    return (
        bool(fields)
        and all(field == ("iccid", "", None) for field in fields)
        and all(_plain_path_text(literal) for literal, _, _, _ in parts)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """Every setting of one client, checked and frozen; the client reads nothing else.

    The clients build it from their keywords through :meth:`for_provider`, on the provider
    profile's limits and TTLs (constructed directly, a config holds exactly what it is given:
    no limits unless ``limits`` says so). Read it as ``client.config``.

    Attributes:
        profile: the provider dialect, with ``prefix`` and ``usage_path`` applied.
        base_url: scheme + host of the data API.
        limits: endpoint name -> :class:`EndpointLimit` of every limited endpoint (usage and
            token included); read one with :meth:`limit`.
        account_rate: one more limit over every request of the account (sandbox mode), or
            ``None``.
        sandbox: Airalo Sandbox mode.
        voice_base_url: scheme + host of PressOne's voice API (``None`` for other providers).
        voice_paths: operation -> (method, path) overrides of the voice API.

    The other attributes are the keyword arguments of the same name.
    """

    profile: ProviderProfile
    base_url: str
    limits: Mapping[str, EndpointLimit] = field(default_factory=dict)
    account_rate: Rate | None = None
    sandbox: bool = False
    rate_margin: float = C.DEFAULT_RATE_MARGIN
    cache_ttl: float = C.DEFAULT_CACHE_TTL
    negative_cache_ttl: float = C.DEFAULT_NEGATIVE_CACHE_TTL
    cache_maxsize: int = C.DEFAULT_CACHE_MAXSIZE
    timeout: float = C.DEFAULT_TIMEOUT
    connect_timeout: float = C.DEFAULT_CONNECT_TIMEOUT
    max_retries: int = C.DEFAULT_MAX_RETRIES
    retry_after_cap: float = C.DEFAULT_RETRY_AFTER_CAP
    max_body_size: int = C.DEFAULT_MAX_BODY_SIZE
    connection_limit: int = C.DEFAULT_CONNECTION_LIMIT
    iccid_length: tuple[int, int] = (C.ICCID_MIN_LENGTH, C.ICCID_MAX_LENGTH)
    session: aiohttp.ClientSession | None = field(default=None, repr=False)
    connector: aiohttp.BaseConnector | None = field(default=None, repr=False)
    #: Not shown: a proxy URL may carry credentials.
    proxy: str | None = field(default=None, repr=False)
    ssl: ssl_module.SSLContext | None = field(default=None, repr=False)
    backend: Backend = field(default_factory=MemoryBackend)
    clock: Clock = field(default_factory=MonotonicClock)
    voice_base_url: str | None = None
    voice_paths: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def fix(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        for name in ("base_url", "voice_base_url"):
            url = getattr(self, name)
            if url is None and name == "voice_base_url":
                continue
            try:
                fix(name, check_base_url(url, field=name))
            except InvalidRequestError:
                # A refused URL may carry credentials: the config left half-built (in the
                # error's traceback) never shows it.
                fix(name, REDACTED)
                raise
        unknown = set(self.limits) - set(self.profile.paths)
        if unknown:
            raise InvalidRequestError(
                f"limits for unknown endpoints: {', '.join(sorted(unknown))}", field="limits"
            )
        for endpoint, limit in self.limits.items():
            if not isinstance(limit, EndpointLimit):
                raise InvalidRequestError(
                    f"limits[{endpoint!r}] must be an EndpointLimit, got {limit!r}",
                    field="limits",
                )
        fix("limits", MappingProxyType(dict(self.limits)))
        fix("voice_paths", MappingProxyType(dict(self.voice_paths)))
        # A setting out of range is refused here, before anything is sent: a timeout of zero
        # or NaN would be none at all, a negative connection limit would never connect.
        for name in ("cache_ttl", "negative_cache_ttl"):
            fix(name, check_max_age(getattr(self, name), field=name))
        fix("cache_maxsize", _check_int(self.cache_maxsize, "cache_maxsize", 1))
        margin = self.rate_margin
        if not (_is_number(margin) and 0 <= margin < 1):
            raise InvalidRequestError(
                f"rate_margin must be in [0, 1), got {margin!r}", field="rate_margin"
            )
        fix("timeout", check_timeout(self.timeout, field="timeout"))
        fix("connect_timeout", check_timeout(self.connect_timeout, field="connect_timeout"))
        fix("max_retries", check_retries(self.max_retries))
        fix("retry_after_cap", _check_seconds(self.retry_after_cap, "retry_after_cap", finite=True))
        fix("max_body_size", _check_int(self.max_body_size, "max_body_size", 1))
        fix("connection_limit", _check_int(self.connection_limit, "connection_limit", 0))
        lo, hi = self.iccid_length
        if not (1 <= lo <= hi <= 64):
            raise InvalidRequestError(
                "iccid_length must be (min, max) with 1 <= min <= max <= 64", field="iccid_length"
            )
        fix("iccid_length", (lo, hi))
        fix("clock", as_clock(self.clock))

    def limit(self, endpoint: str) -> EndpointLimit:
        """The limit of ``endpoint`` (``EndpointLimit()``, no limit, for one not limited)."""
        return self.limits.get(endpoint, _NO_LIMIT)

    @classmethod
    def for_provider(
        cls,
        profile: ProviderProfile,
        *,
        base_url: str,
        sandbox: bool = False,
        sandbox_rate: Rate | None = UNSET,
        voice_base_url: str | None = None,
        voice_paths: Mapping[str, tuple[str, str]] | None = None,
        **options: Unpack[ClientOptions],
    ) -> ClientConfig:
        """The configuration the client keywords describe, on ``profile``'s defaults.

        Limits are resolved in this order, each overriding the one before: the profile's,
        ``limits=`` (a bare :class:`Rate` is per key for an endpoint the provider limits per
        key, over all requests otherwise), then ``iccid_rate``, ``company_rate`` and
        ``token_rate`` when passed. Options left ``None`` take their defaults.
        """
        prefix = options.pop("prefix", None)
        if prefix is not None:
            if not prefix.startswith("/") or prefix.endswith("/"):
                raise InvalidRequestError(
                    "prefix must start with '/' and not end with '/'", field="prefix"
                )
            if not _plain_path_text(prefix) or "{" in prefix or "}" in prefix:
                raise InvalidRequestError(
                    "prefix must be a plain path (no braces, spaces, '?' or '#')",
                    field="prefix",
                )
            profile = replace(profile, prefix=prefix)
        usage_path = options.pop("usage_path", None)
        if usage_path is not None:
            if not _iccid_template(usage_path):
                raise InvalidRequestError(
                    "usage_path must be an absolute path template containing '{iccid}' "
                    "(and no other field, spaces, '?' or '#')",
                    field="usage_path",
                )
            profile = profile.with_paths(usage="/" + usage_path)
        limits = _resolve_limits(profile, options.pop("limits", None))
        usage = limits.get("usage", _NO_LIMIT)
        company_rate = options.pop("company_rate", usage.shared)
        iccid_rate = options.pop("iccid_rate", usage.per_key)
        if (company_rate, iccid_rate) != (usage.shared, usage.per_key):
            limits["usage"] = EndpointLimit(shared=company_rate, per_key=iccid_rate)
        if "token_rate" in options:
            limits["token"] = EndpointLimit(shared=options.pop("token_rate"))
        cache_ttl = options.pop("cache_ttl", None)
        if cache_ttl is None:
            cache_ttl = C.SANDBOX_CACHE_TTL if sandbox else profile.cache_ttl
        account_rate = None
        if sandbox:
            account_rate = profile.sandbox_rate if sandbox_rate is UNSET else sandbox_rate
        given: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
        return cls(
            profile=profile,
            base_url=base_url,
            limits=limits,
            account_rate=account_rate,
            sandbox=sandbox,
            cache_ttl=cache_ttl,
            voice_base_url=voice_base_url,
            voice_paths=voice_paths or {},
            **given,
        )


def _resolve_limits(
    profile: ProviderProfile, limits: Mapping[str, Rate | EndpointLimit | None] | None
) -> dict[str, EndpointLimit]:
    """The profile's limits with the ``limits=`` overrides applied."""
    resolved = dict(profile.limits)
    for endpoint, value in (limits or {}).items():
        if value is None:
            resolved[endpoint] = _NO_LIMIT
        elif isinstance(value, EndpointLimit):
            resolved[endpoint] = value
        elif isinstance(value, Rate):
            default = profile.limits.get(endpoint, _NO_LIMIT)
            if default.shared is not None and default.per_key is not None:
                raise InvalidRequestError(
                    f"{endpoint} is limited both per key and over all requests: give "
                    f"limits={{{endpoint!r}: EndpointLimit(shared=..., per_key=...)}}",
                    field="limits",
                )
            if default.per_key is not None:
                resolved[endpoint] = EndpointLimit(per_key=value)
            else:
                resolved[endpoint] = EndpointLimit(shared=value)
        else:
            raise InvalidRequestError(
                f"limits[{endpoint!r}] must be a Rate, an EndpointLimit or None, got {value!r}",
                field="limits",
            )
    return resolved

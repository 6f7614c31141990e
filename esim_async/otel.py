"""OpenTelemetry traces and metrics for a client (``pip install "esim-async[otel]"``).

Importing ``esim_async`` never imports OpenTelemetry; this module does, when it is used::

    from esim_async.otel import instrument

    async with AiraloClient(client_id, client_secret) as client:
        instrument(client)  # the global tracer and meter providers, or pass your own
        await client.sims.usage(iccid)

Each API call is one ``CLIENT`` span named ``{method} {route}`` (``GET /v2/sims/{iccid}/usage``)
with the HTTP client semantic conventions (``http.request.method``, ``url.full`` without query
string, ``server.address``, ``server.port``, ``http.response.status_code``, ``error.type``,
``http.request.resend_count``) and ``esim.*`` attributes: ``esim.endpoint``, ``esim.iccid``,
``esim.attempts``, ``esim.budget_wait_s`` and, for a cached endpoint, ``esim.cache``
(``hit``, ``coalesced`` or ``miss``).

Metrics: ``http.client.request.duration`` (histogram, seconds, calls that sent a request),
``esim.requests``, ``esim.rate_limited``, ``esim.retries``, ``esim.budget_wait`` (seconds),
``esim.cache.hits`` and ``esim.cache.misses`` (counters), and the observable gauge
``esim.limiter.effective_rate`` (requests per second, per endpoint, from
``client.rate_limit_state()``).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from .clock import MonotonicClock
from .instrument import CacheKind, CallScope

_SYSTEM_CLOCK = MonotonicClock()

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import Span, TracerProvider

    from .limits import LimiterState

__all__ = ["OpenTelemetry", "instrument"]

_NAME = "esim_async"

logger = logging.getLogger("esim_async.otel")


class _Instrumentable(Protocol):
    def set_instrumentation(self, instrumentation: OpenTelemetry | None) -> None: ...

    def rate_limit_state(self) -> Mapping[str, LimiterState]: ...


class OpenTelemetry:
    """An :class:`~esim_async.instrument.Instrumentation` recording spans and metrics through
    the OpenTelemetry API.

    Args:
        tracer_provider: where spans go (default: the global one).
        meter_provider: where metrics go (default: the global one).

    Raises:
        ImportError: ``opentelemetry-api`` is not installed (``pip install "esim-async[otel]"``).
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                'OpenTelemetry is not installed: pip install "esim-async[otel]"'
            ) from exc
        #: The kind of every span, and the status of a call that failed.
        self.span_kind = trace.SpanKind.CLIENT
        self.error_status = trace.Status(trace.StatusCode.ERROR)
        #: The span of a call whose own span could not be started (records nothing).
        self.no_span: Span = trace.INVALID_SPAN
        #: Failures of the tracing or metrics pipeline swallowed so far (each call goes on).
        self.failures = 0
        from ._version import __version__ as version

        self.tracer = trace.get_tracer(_NAME, version, tracer_provider=tracer_provider)
        self.meter = meter = metrics.get_meter(_NAME, version, meter_provider=meter_provider)
        self.duration = meter.create_histogram(
            "http.client.request.duration", unit="s", description="Duration of API calls."
        )
        self.requests = meter.create_counter(
            "esim.requests", unit="{request}", description="API calls that sent a request."
        )
        self.rate_limited = meter.create_counter(
            "esim.rate_limited", unit="{response}", description="429 answers."
        )
        self.retries = meter.create_counter(
            "esim.retries", unit="{attempt}", description="Attempts after the first."
        )
        self.budget_wait = meter.create_counter(
            "esim.budget_wait", unit="s", description="Time spent waiting for rate-limit budget."
        )
        self.cache_hits = meter.create_counter(
            "esim.cache.hits",
            unit="{call}",
            description="Cached-endpoint calls answered without a request of their own.",
        )
        self.cache_misses = meter.create_counter(
            "esim.cache.misses",
            unit="{call}",
            description="Cached-endpoint calls that sent their own request.",
        )
        self._states: list[
            tuple[Callable[[], Mapping[str, LimiterState] | None], dict[str, Any]]
        ] = []
        _limiter_gauge(meter, meter_provider).add(self)

    def failed(self, what: str, exc: Exception) -> None:
        """The tracing or metrics pipeline raised while recording ``what``: the call goes on.
        The first failure is logged as a warning (its type only), later ones at debug level."""
        self.failures += 1
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        logger.log(
            level,
            "OpenTelemetry failed recording %s (%s); calls go on without it",
            what,
            type(exc).__name__,
        )

    def observe_limiters(
        self,
        state: Callable[[], Mapping[str, LimiterState]],
        *,
        base_url: str | None = None,
        active: Callable[[], bool] | None = None,
    ) -> None:
        """Report ``state()`` (``client.rate_limit_state``) through the gauge
        ``esim.limiter.effective_rate``. A bound method is held weakly: a client that is gone
        stops being reported.

        Args:
            state: the limiters' states, by endpoint.
            base_url: the client's base URL: its host and port label the observations
                (``server.address``, ``server.port``), so clients of different servers
                sharing one meter provider are told apart.
            active: whether to report now (``False``: skipped, e.g. instrumentation off).
        """
        ref: Callable[[], Callable[[], Mapping[str, LimiterState]] | None] = (
            weakref.WeakMethod(state)
            if getattr(state, "__self__", None) is not None
            else lambda: state
        )

        def read() -> Mapping[str, LimiterState] | None:
            method = ref()
            return method() if method is not None and (active is None or active()) else None

        labels: dict[str, Any] = {}
        if base_url is not None:
            parts = urlsplit(base_url)
            labels["server.address"] = parts.hostname or ""
            if parts.port is not None:
                labels["server.port"] = parts.port
        self._states.append((read, labels))

    def limiter_rates(self) -> list[tuple[dict[str, Any], float]]:
        """``(attributes, requests per second)`` of every limiter observed now."""
        rates: list[tuple[dict[str, Any], float]] = []
        for read, labels in self._states:
            try:
                states = read()
            except Exception as exc:  # one client's failure hides no other client's rates
                self.failed("the limiter gauge", exc)
                continue
            if not states:
                continue
            for name, state in states.items():
                rate = state.effective_per_second
                if rate is not None:
                    rates.append(({"esim.endpoint": name, **labels}, rate))
        return rates

    def call(
        self, endpoint: str | None, method: str, route: str, url: str, key: str | None
    ) -> CallScope:
        """The scope of one call: a span, and the metrics recorded when it ends."""
        return _Scope(self, endpoint, method, route, url, key)


class _LimiterGauge:
    """The gauge ``esim.limiter.effective_rate`` of one meter provider, fed by every
    :class:`OpenTelemetry` made on it (a provider keeps the first instrument of a name, and
    drops the callbacks of a second one)."""

    def __init__(self, meter: Any) -> None:
        self._sources: list[weakref.ref[OpenTelemetry]] = []
        meter.create_observable_gauge(
            "esim.limiter.effective_rate",
            callbacks=[self._observe],
            unit="{request}/s",
            description="Effective rate of each endpoint limiter (after cool-downs and AIMD).",
        )

    def add(self, otel: OpenTelemetry) -> None:
        """Report ``otel``'s limiters too (for as long as it exists)."""
        self._sources.append(weakref.ref(otel))

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        # One series, one value: the first client reporting it.
        found: dict[tuple[tuple[str, Any], ...], Observation] = {}
        alive = []
        for ref in self._sources:
            otel = ref()
            if otel is None:
                continue
            alive.append(ref)
            for attrs, rate in otel.limiter_rates():
                found.setdefault(tuple(sorted(attrs.items())), Observation(rate, attrs))
        self._sources = alive
        return list(found.values())


class _GlobalProvider:
    """Stands for the global meter provider as a key of :data:`_GAUGES`."""


_GLOBAL_PROVIDER = _GlobalProvider()
#: The rate gauge of each meter provider instrumented (held as long as the provider).
_GAUGES: weakref.WeakKeyDictionary[Any, _LimiterGauge] = weakref.WeakKeyDictionary()


def _limiter_gauge(meter: Any, provider: MeterProvider | None) -> _LimiterGauge:
    """The rate gauge of ``provider`` (``None``: the global one), made on ``meter`` the first
    time."""
    key: Any = provider if provider is not None else _GLOBAL_PROVIDER
    try:
        gauge = _GAUGES.get(key)
    except TypeError:  # a provider that cannot be held weakly: a gauge of its own
        return _LimiterGauge(meter)
    if gauge is None:
        gauge = _GAUGES[key] = _LimiterGauge(meter)
    return gauge


@contextlib.contextmanager
def _guarded(otel: OpenTelemetry, what: str) -> Iterator[None]:
    """Swallow (:meth:`OpenTelemetry.failed`) what the pipeline raises recording ``what``."""
    try:
        yield
    except Exception as exc:
        otel.failed(what, exc)


class _Scope:
    __slots__ = (
        "_attrs",
        "_cache",
        "_labels",
        "_otel",
        "_span",
        "_started",
        "attempts",
        "error_type",
        "status",
        "waited",
    )

    def __init__(
        self,
        otel: OpenTelemetry,
        endpoint: str | None,
        method: str,
        route: str,
        url: str,
        key: str | None,
    ) -> None:
        self._otel = otel
        parts = urlsplit(url)
        attrs: dict[str, Any] = {
            "http.request.method": method,
            "url.full": f"{parts.scheme}://{parts.netloc}{parts.path}",
            "url.template": route,
            "server.address": parts.hostname or "",
        }
        if parts.port is not None:
            attrs["server.port"] = parts.port
        if endpoint is not None:
            attrs["esim.endpoint"] = endpoint
        if key is not None and "{iccid}" in route:
            attrs["esim.iccid"] = key
        self._attrs = attrs
        #: The labels of the counters: the endpoint, when known.
        self._labels = {"esim.endpoint": endpoint} if endpoint is not None else {}
        self._span: Span = otel.no_span
        with _guarded(otel, "a span"):
            self._span = otel.tracer.start_span(
                f"{method} {route}", kind=otel.span_kind, attributes=attrs
            )
        self._started = _SYSTEM_CLOCK.now()
        self._cache: CacheKind | None = None
        self.attempts = 0
        self.status: int | None = None
        self.error_type: str | None = None
        self.waited = 0.0

    def attempt(self, status: int | None, error_type: str | None) -> None:
        otel = self._otel
        self.attempts += 1
        self.status = status
        self.error_type = error_type
        with _guarded(otel, "an attempt"):
            if self.attempts > 1:
                otel.retries.add(1, self._labels)
            if status == 429:
                otel.rate_limited.add(1, self._labels)

    def budget_wait(self, seconds: float) -> None:
        if seconds > 0:
            self.waited += seconds
            with _guarded(self._otel, "a budget wait"):
                self._otel.budget_wait.add(seconds, self._labels)

    def cache(self, kind: CacheKind) -> None:
        self._cache = kind
        labels = {**self._labels, "esim.cache": kind}
        with _guarded(self._otel, "a cache outcome"):
            if kind == "miss":
                self._otel.cache_misses.add(1, labels)
            else:
                self._otel.cache_hits.add(1, labels)

    def __enter__(self) -> _Scope:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        otel = self._otel
        span = self._span
        attrs: dict[str, Any] = {
            "esim.attempts": self.attempts,
            "esim.budget_wait_s": self.waited,
        }
        if self._cache is not None:
            attrs["esim.cache"] = self._cache
        if self.status is not None:
            attrs["http.response.status_code"] = self.status
        if self.attempts > 1:
            attrs["http.request.resend_count"] = self.attempts - 1
        error_type = self.error_type
        if exc_type is not None:
            error_type = error_type or exc_type.__qualname__
        failed = False
        if error_type is not None and (
            exc_type is not None or self.status is None or self.status >= 400
        ):
            attrs["error.type"] = error_type
            failed = exc_type is not None
        with _guarded(otel, "a span's attributes"):
            if failed:
                span.set_status(otel.error_status)
            span.set_attributes(attrs)
        with _guarded(otel, "the end of a span"):
            span.end()
        with _guarded(otel, "a call's metrics"):
            self._record(attrs)

    def _record(self, attrs: Mapping[str, Any]) -> None:
        """The metrics of a call that sent a request (``attrs``: its span's final ones)."""
        otel = self._otel
        if self.attempts:
            labels: dict[str, Any] = {
                key: self._attrs[key]
                for key in ("http.request.method", "server.address", "server.port", "esim.endpoint")
                if key in self._attrs
            }
            labels["url.template"] = self._attrs["url.template"]
            if self.status is not None:
                labels["http.response.status_code"] = self.status
            if "error.type" in attrs:
                labels["error.type"] = attrs["error.type"]
            otel.requests.add(1, self._labels)
            otel.duration.record(_SYSTEM_CLOCK.now() - self._started, labels)


def instrument(
    client: _Instrumentable,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> OpenTelemetry:
    """Record ``client``'s calls as OpenTelemetry spans and metrics; returns the
    instrumentation (``client.set_instrumentation(None)`` switches it off).

    Args:
        client: an :class:`~esim_async.AiraloClient` or :class:`~esim_async.PressOneClient`.
        tracer_provider: where spans go (default: the global one).
        meter_provider: where metrics go (default: the global one).
    """
    otel = OpenTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    client.set_instrumentation(otel)
    owner: Callable[[], _Instrumentable | None]
    try:
        owner = weakref.ref(client)
    except TypeError:  # a client that cannot be held weakly

        def owner() -> _Instrumentable | None:
            return client

    def active() -> bool:
        # Reported while this instrumentation is the client's (switched off: not reported).
        current = owner()
        return current is not None and getattr(current, "instrumentation", otel) is otel

    otel.observe_limiters(
        client.rate_limit_state, base_url=getattr(client, "base_url", None), active=active
    )
    return otel

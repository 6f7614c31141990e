"""The one request loop every endpoint goes through.

``rate limits -> auth -> HTTP (aiohttp) -> decode (msgspec) -> typed model or typed error``. Reads
(GET, PUT) are retried on connection errors, timeouts, 5xx and undecodable 2xx bodies, with
jittered exponential backoff; a write (POST) only when it certainly did not reach the server,
otherwise :class:`OutcomeUnknownError` says so. A 401 refreshes the token once; a 429 cools the
endpoint's limiter down for every caller and is retried after ``Retry-After`` up to
``retry_after_cap``.

Every attempt, and every re-send aiohttp makes on its own, takes a rate-limit permit stamped with
the moment its request goes out on a connection; an attempt of which nothing went out gives its
permits back.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
import re
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import aiohttp
import msgspec
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from . import _constants as C
from ._secrets import logger, redact
from .auth import TokenManager
from .backends.base import RateLimiter
from .clock import Clock
from .errors import (
    EsimError,
    OutcomeUnknownError,
    RateLimitedError,
    ServerError,
    TransportError,
    error_from_response,
)
from .instrument import CallScope, Instrumentation, RouteTable, take_scope
from .limits import EndpointLimiter, Priority, QueueTicket, Slot
from .stats import ClientStats

__all__ = ["Decoder", "Request", "TokenSource", "Transport"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Decoder(Protocol[T_co]):
    """What reads a 2xx body into the answer: a ``msgspec.json.Decoder``, or one that unwraps
    what it decodes (raising msgspec's ``DecodeError``/``ValidationError`` for a bad body)."""

    def decode(self, buf: bytes, /) -> T_co:
        """The answer in ``buf``."""
        ...


@dataclass(slots=True, weakref_slot=True)
class Request(Generic[T]):
    """One logical API call, as a resource declares it."""

    method: str
    path: str
    decoder: Decoder[T]
    limiter: RateLimiter | None = None
    key: str | None = None
    priority: Priority = Priority.INTERACTIVE
    idempotent: bool = True
    authenticated: bool = True
    token_request: bool = False
    params: Mapping[str, str] | None = None
    #: The body and headers stay out of the repr: they carry the client secret (the token
    #: request) and PressOne's voice API key.
    form: Mapping[str, str] | Sequence[tuple[str, str]] | None = field(default=None, repr=False)
    json: Any = field(default=None, repr=False)
    headers: Mapping[str, str] | None = field(default=None, repr=False)
    max_retries: int | None = None
    timeout: float | None = None
    #: Retry a 429 within this call (a sweep sets False and re-queues the key instead).
    retry_rate_limited: bool = True
    #: A second limit over every endpoint of the account (sandbox mode).
    account_limiter: RateLimiter | None = None
    #: Appended to an OutcomeUnknownError: how the caller can find out what happened.
    outcome_hint: str = ""
    #: A 2xx without a body (204 No Content) is the answer, decoded as ``None``.
    empty_ok: bool = False
    #: The queue ticket of the call (its priority can be raised while it waits for budget),
    #: bound while the call waits for its permits.
    ticket: QueueTicket | None = None


class TokenSource(Protocol):
    """Where a transport gets its bearer token (:class:`~esim_async.auth.TokenManager`)."""

    async def get(self) -> str:
        """A valid token, fetched if needed."""
        ...

    def invalidate(self, token: str) -> None:
        """The server refused ``token`` (HTTP 401): do not hand it out again."""
        ...


# ------------------------------------------------------------------ what an attempt came to


class Kind(enum.Enum):
    """What one attempt came to."""

    ANSWER = "answer"  # a 2xx, decoded
    UNDECODABLE = "undecodable"  # a 2xx whose body could not be decoded
    UNAUTHORIZED = "unauthorized"  # a 401: refused before the request did anything
    RATE_LIMITED = "rate limited"  # a 429
    SERVER_ERROR = "server error"  # a 5xx, or a redirect (3xx) of a write
    REFUSED = "refused"  # any other error answer (400, 403, 404, 422...): final
    NOT_SENT = "not sent"  # nothing of the request went out (it could not connect)
    NO_ANSWER = "no answer"  # it may have reached the server, but no answer came back


#: Outcomes after which a write may or may not have taken effect.
_UNKNOWN_FOR_WRITES = frozenset({Kind.NO_ANSWER, Kind.UNDECODABLE, Kind.SERVER_ERROR})


@dataclass(slots=True)
class Outcome:
    """What one attempt came to: the decoded answer, or the error to raise if it is final."""

    kind: Kind
    #: The answer and the response headers stay out of the repr: they are as the provider
    #: sent them, and may echo a secret (the error is redacted already).
    value: Any = field(default=None, repr=False)
    error: EsimError | None = None
    status: int | None = None
    headers: Mapping[str, str] | None = field(default=None, repr=False)
    #: The server closed the connection without answering (typically a pooled keep-alive
    #: connection it had already dropped): worth one immediate retry.
    dropped: bool = False

    @property
    def retry_after(self) -> float | None:
        """The ``Retry-After`` of a 429 in seconds (``None`` when absent or unusable, ``inf``
        when infinite)."""
        error = self.error
        if not isinstance(error, RateLimitedError):
            return None
        if error.retry_after is None and self.headers is not None:
            raw = self.headers.get("Retry-After", "").strip().lower()
            if raw in ("inf", "+inf", "infinity", "+infinity"):
                return math.inf
        return error.retry_after


def classify(
    req: Request[Any],
    status: int,
    raw: bytes,
    headers: Mapping[str, str],
    now: float | None = None,
) -> Outcome:
    """Name what an HTTP answer to ``req`` came to, decoding a 2xx body. ``now`` is the wall
    time an HTTP-date ``Retry-After`` is read against."""
    if 200 <= status < 300:
        if req.empty_ok and (status == 204 or not raw.strip()):
            return Outcome(Kind.ANSWER, status=status)
        try:
            return Outcome(Kind.ANSWER, req.decoder.decode(raw), status=status)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            # (RecursionError: a body nested deeper than any answer could be)
            undecodable = TransportError(
                f"{req.method} {req.path}: undecodable HTTP {status} body ({exc})"
            )
            undecodable.__cause__ = exc
            return Outcome(Kind.UNDECODABLE, error=undecodable, status=status, headers=headers)
    error = error_from_response(status, raw, headers, token_request=req.token_request, now=now)
    if status == 401:
        kind = Kind.UNAUTHORIZED
    elif isinstance(error, RateLimitedError):
        kind = Kind.RATE_LIMITED
    elif isinstance(error, ServerError) or (status < 400 and not req.idempotent):
        # A redirect of a write (never followed) may come after its effect, as a 303 See
        # Other does: for a write it is an answer of unknown outcome, as a 5xx is.
        kind = Kind.SERVER_ERROR
    else:
        kind = Kind.REFUSED
    return Outcome(kind, error=error, status=status, headers=headers)


def may_retry(
    outcome: Outcome, req: Request[Any], attempt: int, max_retries: int, retry_after_cap: float
) -> bool:
    """Whether ``req`` is tried again after ``outcome`` (``attempt`` retries made so far).

    Reads are retried after anything but a final answer; a write only when it certainly did
    not reach the server. A refused token is not retried here: the loop refreshes it once.
    """
    if attempt >= max_retries:
        return False
    kind = outcome.kind
    if kind is Kind.NOT_SENT:
        return True
    if kind is Kind.RATE_LIMITED:
        wait = outcome.retry_after
        return req.retry_rate_limited and (wait is None or wait <= retry_after_cap)
    return kind in _UNKNOWN_FOR_WRITES and req.idempotent


class Backoff:
    """Jittered exponential backoff: retry ``n`` waits between ``c / 2`` and ``c``, where
    ``c = min(cap, base * 2 ** (n - 1))``."""

    __slots__ = ("base", "cap", "rng")

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()

    def __call__(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (1 for the first retry)."""
        ceiling = min(self.cap, self.base * (2 ** (attempt - 1)))
        return self.rng.uniform(ceiling / 2, ceiling)

    def jitter(self) -> float:
        """A short random pause (under a second) that spreads retries waking together."""
        return self.rng.uniform(0, min(1.0, self(1)))


def retry_delay(
    outcome: Outcome, req: Request[Any], attempt: int, backoff: Backoff
) -> float | None:
    """How long to wait before retry number ``attempt`` after ``outcome``; ``None``: at once.

    A dropped connection is retried at once the first time. After a 429 the limiter holds
    every caller back until ``Retry-After`` has passed, so only jitter is added; without a
    limiter the call sleeps through ``Retry-After`` itself. Everything else backs off.
    """
    if outcome.dropped and attempt == 1:
        return None
    if outcome.kind is Kind.RATE_LIMITED:
        if req.limiter is not None:
            return backoff.jitter()
        wait = outcome.retry_after
        return wait if wait is not None else backoff(attempt)
    return backoff(attempt)


def outcome_unknown(req: Request[Any], outcome: Outcome) -> OutcomeUnknownError:
    """The error for a write that may have taken effect, chained to what happened."""
    where = f"{req.method} {req.path}"
    if outcome.kind is Kind.UNDECODABLE:
        message = (
            f"{where}: the provider answered HTTP {outcome.status} but the body could not be "
            "read; the write probably took effect. Check before trying again."
        )
    elif outcome.kind is Kind.SERVER_ERROR:
        message = (
            f"{where}: the provider answered HTTP {outcome.status}; the write may or may not "
            "have taken effect and was not retried. Check before trying again."
        )
    else:
        message = (
            f"{where}: the request may have reached the provider but no answer came back "
            f"({outcome.error}); it was not retried because it is not idempotent. Check "
            "whether it took effect before trying again."
        )
    error = OutcomeUnknownError(message + req.outcome_hint)
    error.__cause__ = outcome.error
    return error


def final_error(req: Request[Any], outcome: Outcome) -> EsimError:
    """The error a call ends with when ``outcome`` is not retried."""
    if not req.idempotent and outcome.kind in _UNKNOWN_FOR_WRITES:
        return outcome_unknown(req, outcome)
    assert outcome.error is not None, "an answer is not an error"
    return outcome.error


# ------------------------------------------------------------------ sending


@dataclass(slots=True, repr=False, eq=False)
class _Attempt:
    """One attempt in flight: its request, its slots (stamped with the send time), and the
    account limit a re-send also takes a permit of."""

    req: Request[Any]
    account: RateLimiter | None
    slots: tuple[Slot | None, ...]
    sends: int = 0
    #: Our connector handed this attempt its connection (the request is being written).
    connected: bool = False
    #: When the request went out (its connection ready, or its headers written), if known:
    #: the send of the limiter's send -> response-headers sample.
    sent_at: float | None = None

    def mark(self, t: float) -> None:
        for slot in self.slots:
            if slot is not None:
                slot.mark(t)


def _release(slots: tuple[Slot | None, ...]) -> None:
    """Give back the permits of an attempt of which nothing went out."""
    for slot in slots:
        if slot is not None:
            slot.release()


class _StampingConnector(aiohttp.TCPConnector):
    """Stamps the attempt's slots when its connection is ready, right before the request is
    written: a request held up by connection set-up (TCP, TLS) counts when it really goes out."""

    def __init__(self, *, clock: Clock, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stamp_clock = clock

    def connect(
        self, req: aiohttp.ClientRequest, traces: list[Any], timeout: aiohttp.ClientTimeout
    ) -> Coroutine[Any, Any, Any]:
        # (not a coroutine itself: a request without an attempt riding along connects exactly
        # as aiohttp does, without a coroutine more on its way)
        attempt = _ATTEMPTS.get(asyncio.current_task()) if _ATTEMPTS else None
        if attempt is None:
            return super().connect(req, traces, timeout)
        return self._connect_stamped(attempt, req, traces, timeout)

    async def _connect_stamped(
        self,
        attempt: _Attempt,
        req: aiohttp.ClientRequest,
        traces: list[Any],
        timeout: aiohttp.ClientTimeout,
    ) -> Any:
        conn = await super().connect(req, traces, timeout)
        attempt.connected = True
        now = self._stamp_clock.now()
        attempt.sent_at = now
        attempt.mark(now)
        return conn


def _headers_sent_trace(clock: Clock) -> aiohttp.TraceConfig:
    """A trace that records, on the attempt in flight, when its request headers were written
    (the send time, on a connector that does not stamp it)."""

    async def on_headers_sent(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestHeadersSentParams
    ) -> None:
        attempt = _ATTEMPTS.get(asyncio.current_task()) if _ATTEMPTS else None
        if attempt is not None and attempt.sent_at is None:
            attempt.sent_at = clock.now()

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(on_headers_sent)
    return trace


#: The attempt each task has on its way out, read by the connector, the trace and the
#: middleware that run inside its request. (Not a context variable: a timer aiohttp sets
#: meanwhile would keep the attempt, and the call with it, alive in the context it captures.)
_ATTEMPTS: dict[asyncio.Task[Any] | None, _Attempt] = {}

_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)

#: No headers built yet.
_UNBUILT = object()

#: A path that reads the same encoded or not: segments of unreserved characters, none of them
#: ``.`` or ``..`` (the paths of the API, with their ICCIDs and IDs filled in).
_plain_path = re.compile(r"(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+").fullmatch


def _url_base(base_url: str) -> tuple[URL, str] | None:
    """The URL a plain path is put into, and the path prefix it keeps (``None`` when
    ``base_url`` is not a plain absolute URL: each request's URL is then parsed whole)."""
    try:
        url = URL(base_url)
    except ValueError:
        return None
    prefix = url.raw_path.rstrip("/")
    if not url.absolute or url.raw_query_string or url.raw_fragment:
        return None
    if prefix and not _plain_path(prefix):
        return None
    return url, prefix


class _SendError(Exception):
    """An attempt that got no answer, and what it came to."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


class Transport:
    """Owns the aiohttp session and runs every request of one client.

    ``auth`` gives the bearer token of authenticated requests (``None`` for a transport whose
    requests carry their own credentials); ``account_limiter`` is a limit over every request
    of the account (sandbox mode), applied to each request that does not name its own.
    """

    def __init__(
        self,
        base_url: str,
        *,
        clock: Clock,
        stats: ClientStats,
        auth: TokenSource | None = None,
        account_limiter: RateLimiter | None = None,
        timeout: float = C.DEFAULT_TIMEOUT,
        connect_timeout: float = C.DEFAULT_CONNECT_TIMEOUT,
        max_retries: int = C.DEFAULT_MAX_RETRIES,
        retry_after_cap: float = C.DEFAULT_RETRY_AFTER_CAP,
        max_body_size: int = C.DEFAULT_MAX_BODY_SIZE,
        connection_limit: int = C.DEFAULT_CONNECTION_LIMIT,
        session: aiohttp.ClientSession | None = None,
        connector: aiohttp.BaseConnector | None = None,
        proxy: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self._base_url = base_url.rstrip("/")
        #: The base URL parsed once, and its path prefix: a plain path is put into it as it is.
        self._url_base = _url_base(self._base_url)
        self._clock = clock
        self.stats = stats
        self.auth = auth
        self.account_limiter = account_limiter
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.retry_after_cap = retry_after_cap
        self._max_body_size = max_body_size
        self._connection_limit = connection_limit
        self._session = session
        self._owns_session = session is None
        self._connector = connector
        self._ssl: ssl_module.SSLContext | bool = ssl if ssl is not None else True
        #: What every request hands aiohttp beyond its URL and headers: only what differs from
        #: aiohttp's defaults (each argument is packed and unpacked on its way in).
        self._options: dict[str, Any] = {
            name: value for name, value in (("proxy", proxy), ("ssl", ssl)) if value is not None
        }
        self._headers = {"User-Agent": C.USER_AGENT, "Accept": "application/json"}
        self._backoff = Backoff(C.BACKOFF_BASE, C.BACKOFF_CAP)
        #: The headers last built, and the token they carry.
        self._built_headers: tuple[object, Mapping[str, str]] = (_UNBUILT, CIMultiDict())
        #: The token our own session's headers carry (``None``: none).
        self._session_token: object = None
        self._middlewares: tuple[Any, ...] = ()
        self._count_in_middleware = False
        #: Our session's connector stamps each attempt when its connection is ready, so an
        #: attempt it never connected sent nothing.
        self._stamps_connections = False
        self._closed = False
        #: The session is set up (and the client open): :meth:`_send` can use it as it is.
        self._ready = False
        #: Back-off sleeps in progress (closing ends them).
        self._pauses: set[asyncio.Task[None]] = set()
        self.instrumentation: Instrumentation | None = None
        self._routes: RouteTable | None = None

    def set_instrumentation(
        self, instrumentation: Instrumentation | None, routes: RouteTable | None = None
    ) -> None:
        """Report each call to ``instrumentation`` (``None``: stop); ``routes`` names the
        endpoint and path template of a request path."""
        self.instrumentation = instrumentation
        self._routes = routes

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def closed(self) -> bool:
        return self._closed

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise TransportError("the client is closed")
        session = self._session
        if session is None:
            connector = self._connector or _StampingConnector(
                clock=self._clock, limit=self._connection_limit, ssl=self._ssl
            )
            # A caller's connector does not stamp the send: a trace records the headers' write.
            traces = None if self._connector is None else [_headers_sent_trace(self._clock)]
            session = aiohttp.ClientSession(
                connector=connector,
                trace_configs=traces,
                connector_owner=self._connector is None,
                timeout=aiohttp.ClientTimeout(total=self._timeout, connect=self._connect_timeout),
                headers=self._headers,
                raise_for_status=False,
            )
            if hasattr(session, "_retry_connection"):
                # aiohttp re-sends an idempotent request once by itself when a pooled
                # connection drops; on our own session that re-send is switched off and the
                # pipeline's own retry (which takes a permit) does it instead. (aiohttp's test
                # utilities switch it off the same way.)
                session._retry_connection = False
            else:  # pragma: no cover - a future aiohttp without the attribute
                self._middlewares = (self._count_sends,)
                self._count_in_middleware = True
            self._session = session
            self._session_token = None  # (its headers are ours: no token among them yet)
            self._stamps_connections = self._connector is None
        elif not self._owns_session and not self._count_in_middleware:
            # A caller's session keeps aiohttp's own re-send: a middleware (after the caller's
            # own middlewares) makes each re-send take a permit.
            own = tuple(getattr(session, "_middlewares", ()) or ())
            self._middlewares = (*own, self._count_sends)
            self._count_in_middleware = True
        self._ready = True
        return session

    async def aclose(self) -> None:
        """Close the session we created (never one the caller passed in). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._ready = False
        for pause in self._pauses:
            pause.cancel()
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    # ---------------------------------------------------------------- the request loop

    async def request(self, req: Request[T], scope: CallScope | None = None) -> T:
        """Run ``req`` through limits, auth, HTTP and decoding; return the decoded value.
        ``scope`` hears what each attempt came to (with an instrumentation set, every call
        has one)."""
        if self._closed:
            raise TransportError("the client is closed")
        if scope is None and self.instrumentation is not None:
            scope = take_scope()  # the scope a cached endpoint opened for this call
            if scope is None:
                routes = self._routes
                endpoint, route = routes.resolve(req.path) if routes else (None, req.path)
                url = self._base_url + req.path
                with self.instrumentation.call(endpoint, req.method, route, url, req.key) as own:
                    return await self.request(req, own)
        stats = self.stats
        stats.requests += 1
        clock = self._clock
        limiter = req.limiter
        account = req.account_limiter if req.account_limiter is not None else self.account_limiter
        ticket = req.ticket
        attempt = 0
        refreshed = False
        throttled: Outcome | None = None  # the 429 this attempt retries
        while True:
            # The token before any permit: its own request may need one of the permits
            # (sandbox mode) that requests waiting for it would otherwise hold.
            token = None
            if req.authenticated:
                auth = self.auth
                if auth is None:
                    raise EsimError("no token manager configured")
                if isinstance(auth, TokenManager):
                    token = auth.valid_token()  # (the token in use: no coroutine to start)
                if token is None:
                    token = await auth.get()
            waited = 0.0
            slots: tuple[Slot | None, ...] = ()
            if limiter is not None or account is not None:
                # A request its limits let go at once (lifted, nothing in the way) neither
                # waits nor binds its ticket; the account's limit is asked after the endpoint's.
                slot = other = None
                ready = limiter is None
                if isinstance(limiter, EndpointLimiter):
                    slot = limiter.admit_now(req.key)
                    ready = slot is not None
                if ready and isinstance(account, EndpointLimiter):
                    other = account.admit_now(None)
                    ready = other is not None
                elif ready:
                    ready = account is None
                if not ready:
                    # The ticket applies to the waits for budget, and only to them: nothing of
                    # the call stays bound while its request is out (a timer set meanwhile
                    # would keep the call alive in the context it captures).
                    asked = clock.now()
                    with ticket.bind() if ticket is not None else nullcontext():
                        # A retry after a 429 waits for budget (its cool-down, a rate the
                        # 429 lowered) no longer than retry_after_cap: beyond, it is refused.
                        longest = math.inf if throttled is None else self.retry_after_cap
                        slot, other = await self._budget(req, limiter, account, slot, longest)
                    waited = clock.now() - asked
                    stats.limit_wait += waited
                slots = (slot, other)
            stats.attempts += 1
            if attempt:
                stats.retries += 1
            try:
                status, raw, resp_headers = await self._send(req, token, slots)
            except _SendError as failure:
                outcome = failure.outcome
            except asyncio.CancelledError:
                if scope is not None:  # (it may have reached the server: an attempt all the same)
                    scope.budget_wait(waited)
                    scope.attempt(None, "cancelled")
                raise
            else:
                if limiter is not None and "X-RateLimit-Limit" in resp_headers:
                    limiter.record_headers(resp_headers)
                if 200 <= status < 300 and not req.empty_ok:
                    # The common answer, decoded here; an undecodable body goes to classify.
                    try:
                        value = req.decoder.decode(raw)
                    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                        pass
                    else:
                        if scope is not None:
                            scope.budget_wait(waited)
                            scope.attempt(status, None)
                        return value
                # (an error's HTTP-date Retry-After is read against the wall time)
                now = None if 200 <= status < 300 else clock.wall()
                outcome = classify(req, status, raw, resp_headers, now)
            if scope is not None:
                scope.budget_wait(waited)
                scope.attempt(outcome.status, _error_type(outcome))
            kind = outcome.kind
            if kind is Kind.ANSWER:
                return outcome.value  # type: ignore[no-any-return]
            if kind is Kind.UNAUTHORIZED and token is not None and not refreshed:
                # Refused before it did anything (safe for writes too): a new token, once.
                refreshed = True
                assert self.auth is not None
                self.auth.invalidate(token)
                logger.info("%s %s: token refused, refreshing it once", req.method, req.path)
                continue
            if kind is Kind.RATE_LIMITED:
                await self._charge_rate_limit(req, outcome)
            # Read now: a caller joining a shared request may have made it more patient.
            max_retries = self.max_retries if req.max_retries is None else req.max_retries
            if not may_retry(outcome, req, attempt, max_retries, self.retry_after_cap):
                raise final_error(req, outcome)
            attempt += 1
            if kind is Kind.SERVER_ERROR:
                logger.info(
                    "%s %s: HTTP %d, retrying (%d/%d)",
                    req.method,
                    req.path,
                    outcome.status,
                    attempt,
                    max_retries,
                )
            throttled = outcome if kind is Kind.RATE_LIMITED else None
            delay = retry_delay(outcome, req, attempt, self._backoff)
            if delay is not None:
                await self._pause(delay)

    @staticmethod
    async def _budget(
        req: Request[Any],
        limiter: RateLimiter | None,
        account: RateLimiter | None,
        slot: Slot | None,
        max_wait: float,
    ) -> tuple[Slot | None, Slot | None]:
        """The permits of one attempt of ``req``: the endpoint's (unless ``slot`` is it
        already), then the account's; none is kept if the wait fails. Where the limiter can
        tell, a wait longer than ``max_wait`` raises RateLimitedError instead."""
        other = None
        # (passed only when it bounds something: a limiter that predates it still works)
        bound = {"max_wait": max_wait} if max_wait < math.inf else {}
        try:
            if limiter is not None and slot is None:
                if isinstance(limiter, EndpointLimiter):
                    slot = await limiter.acquire(req.key, req.priority, **bound)
                else:
                    slot = await limiter.acquire(req.key, req.priority)
            if isinstance(account, EndpointLimiter):
                other = await account.acquire(None, req.priority, **bound)
            elif account is not None:
                other = await account.acquire(None, req.priority)
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        return slot, other

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay`` before a retry; closing the client ends it with TransportError."""
        if self._closed:
            raise TransportError("the client is closed")
        pause = asyncio.ensure_future(self._clock.sleep(delay))
        self._pauses.add(pause)
        try:
            await pause
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if self._closed and pause.cancelled() and (me is None or not me.cancelling()):
                raise TransportError("the client is closed") from None
            raise
        finally:
            self._pauses.discard(pause)
            pause.cancel()

    async def _charge_rate_limit(self, req: Request[Any], outcome: Outcome) -> None:
        """A 429: cool the endpoint's limiter down for every caller (or only for ``req.key``,
        when the evidence points there). A cool-down beyond ``retry_after_cap`` is slept
        through neither by this call nor (the limiter refuses them) by the calls after it."""
        self.stats.rate_limited += 1
        wait = outcome.retry_after
        if req.limiter is not None:
            limit = _int_header((outcome.headers or {}).get("X-RateLimit-Limit"))
            await req.limiter.penalize(wait, limit, key=req.key, cap=self.retry_after_cap)
        logger.warning("%s %s: 429 Too Many Attempts (Retry-After %s)", req.method, req.path, wait)

    async def _send(
        self, req: Request[Any], token: str | None, slots: tuple[Slot | None, ...] = ()
    ) -> tuple[int, bytes, CIMultiDictProxy[str]]:
        """One HTTP exchange of ``req`` with ``token``. Its ``slots`` are settled whatever
        happens: stamped with the send time, or released when nothing went out."""
        try:
            session = self._session
            if session is None or not self._ready:
                session = self._ensure_session()
            headers: Mapping[str, str] | None
            if self._owns_session:
                # Our session carries the token among its own headers, set when it changes
                # (right before the request, nothing awaited between), so the usual request
                # has no headers of its own for aiohttp to merge into the session's.
                if self._session_token != token:
                    if token is None:
                        session.headers.pop("Authorization", None)
                    else:
                        session.headers["Authorization"] = f"Bearer {token}"
                    self._session_token = token
                headers = req.headers or None
            else:
                # The headers are built once per token and shared (read only; already the
                # mapping aiohttp merges, so it does not convert them on every request).
                built = self._built_headers
                if built[0] != token:
                    fresh: CIMultiDict[str] = CIMultiDict(self._headers)
                    if token is not None:
                        fresh["Authorization"] = f"Bearer {token}"
                    built = self._built_headers = (token, fresh)
                headers = {**built[1], **req.headers} if req.headers else built[1]
        except BaseException:
            _release(slots)
            raise
        # A plain path goes into the base URL parsed once (aiohttp would parse and encode the
        # whole string again); any other is joined to it as a string.
        path = req.path
        base = self._url_base
        url: URL | str
        if base is not None and _plain_path(path):
            url = base[0].with_path(base[1] + path, encoded=True)
        else:
            url = self._base_url + path
        # Only the arguments this request sets (the usual GET sets none of them).
        extra = self._options
        counting = self._count_in_middleware
        if (
            counting
            or req.timeout is not None
            or req.params is not None
            or req.form is not None
            or req.json is not None
        ):
            extra = dict(extra)
            if counting:
                extra["middlewares"] = self._middlewares
            if req.timeout is not None:
                extra["timeout"] = aiohttp.ClientTimeout(
                    total=req.timeout, connect=self._connect_timeout
                )
            if req.params is not None:
                extra["params"] = req.params
            if req.form is not None:
                extra["data"] = req.form
            if req.json is not None:
                extra["json"] = req.json
        # The attempt rides along (in ``_ATTEMPTS``) only when something needs it: a slot to
        # stamp with the send time, or the middleware counting a caller's session's re-sends.
        attempt: _Attempt | None = None
        task = previous = None
        # Some slot is still to be stamped with the send time (or given back)? (inline, and a
        # plain loop: this runs on every request)
        unsent = False
        for slot in slots:
            if slot is not None and not slot.sent:
                unsent = True
                break
        if counting or unsent:
            account = (
                req.account_limiter if req.account_limiter is not None else self.account_limiter
            )
            attempt = _Attempt(req, account, slots)
            if not self._owns_session:
                # A caller's session: the send is taken as now, before the request is handed
                # over (early by any connection set-up: the spread is overstated, never under).
                attempt.sent_at = self._clock.now()
            task = asyncio.current_task()
            previous = _ATTEMPTS.get(task)
            _ATTEMPTS[task] = attempt
        answered = not_sent = False
        try:
            async with session.request(
                req.method, url, headers=headers, allow_redirects=False, **extra
            ) as resp:
                answered = True
                # Send to headers: the limiter's path sample (only with a real send time).
                if attempt is not None and req.limiter is not None:
                    sent_at = attempt.sent_at
                    if sent_at is not None:
                        req.limiter.observe(sent_at, self._clock.now())
                length = resp.content_length
                if (
                    length is not None
                    and length <= self._max_body_size
                    and "Content-Encoding" not in resp.headers
                ):
                    raw = await resp.read()  # the common answer: exactly ``length`` bytes
                else:
                    try:
                        raw = await self._read(resp)
                    except TransportError as exc:  # over the cap
                        status = resp.status
                        if req.idempotent or 400 <= status < 500:
                            raise
                        # A write answered 2xx, 3xx or 5xx: it may well have taken effect.
                        raise _SendError(
                            Outcome(Kind.UNDECODABLE, error=exc, status=status)
                            if status < 300
                            else classify(req, status, b"", resp.headers)
                        ) from exc
                return resp.status, raw, resp.headers
        except _NOT_SENT as exc:
            not_sent = True
            error = TransportError(f"{req.method} {req.path}: cannot connect: {_describe(exc)}")
            raise _SendError(Outcome(Kind.NOT_SENT, error=error)) from exc
        except TimeoutError as exc:
            error = TransportError(f"{req.method} {req.path}: timed out")
            raise _SendError(Outcome(Kind.NO_ANSWER, error=error)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            error = TransportError(f"{req.method} {req.path}: {_describe(exc)}")
            dropped = isinstance(exc, aiohttp.ServerDisconnectedError)
            raise _SendError(Outcome(Kind.NO_ANSWER, error=error, dropped=dropped)) from exc
        finally:
            if attempt is not None:
                if previous is not None:
                    _ATTEMPTS[task] = previous
                else:
                    _ATTEMPTS.pop(task, None)
                if not answered and (
                    not_sent or (self._stamps_connections and not attempt.connected)
                ):
                    # Nothing of this request went out (it could not connect, or it failed or
                    # was cancelled before its connection was ready): the permits go back.
                    _release(attempt.slots)
                else:
                    # Slots not stamped at connection time (a caller's connector or session)
                    # count from now: later than the send, so never too early.
                    attempt.mark(self._clock.now())

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        """The decoded body of an answer ``_send`` cannot read in one step (no length within
        the cap, or compressed), at most ``max_body_size`` bytes, else :class:`TransportError`
        (the connection closed). The cap applies to the declared length, then to the decoded
        bytes as they arrive: a small compressed body inflating far beyond it is never held."""
        cap = self._max_body_size
        length = resp.content_length
        if length is not None and length > cap:
            resp.close()
            raise TransportError(
                f"response body of {length} bytes exceeds the {cap}-byte cap (max_body_size)"
            )
        chunks: list[bytes] = []
        size = 0
        read = resp.content.read
        while chunk := await read(65536):
            size += len(chunk)
            if size > cap:
                resp.close()
                raise TransportError(f"response body exceeds the {cap}-byte cap (max_body_size)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _count_sends(
        self,
        request: aiohttp.ClientRequest,
        handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
    ) -> aiohttp.ClientResponse:
        attempt = _ATTEMPTS.get(asyncio.current_task()) if _ATTEMPTS else None
        if attempt is not None:
            if attempt.sends:
                req = attempt.req
                if not req.idempotent:
                    # A write is never sent twice: aiohttp re-sends a PUT or DELETE whose
                    # connection dropped (a voice write may be mapped to one), which for a
                    # write is an unknown outcome. The drop goes back as it came.
                    raise aiohttp.ServerDisconnectedError()
                # aiohttp re-sends on its own when a pooled connection dropped: the server may
                # count both, so the re-send takes permits like any attempt.
                self.stats.resends += 1
                for limiter, key in ((req.limiter, req.key), (attempt.account, None)):
                    if limiter is not None:
                        with req.ticket.bind() if req.ticket is not None else nullcontext():
                            slot = await limiter.acquire(key, req.priority)
                        if slot is not None:
                            slot.mark(self._clock.now())  # it goes out right now
            attempt.sends += 1
        return await handler(request)


def _error_type(outcome: Outcome) -> str | None:
    """What went wrong in an attempt, as instrumentation names it: the HTTP status of an
    error answer, else the error's type (``None`` for the answer)."""
    if outcome.status is not None and outcome.status >= 400:
        return str(outcome.status)
    return type(outcome.error).__name__ if outcome.error is not None else None


def _int_header(value: str | None) -> int | None:
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None


def _describe(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}") if str(exc) else type(exc).__name__

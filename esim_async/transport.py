"""The one request loop every endpoint goes through.

``rate limits -> auth -> HTTP (aiohttp) -> decode (msgspec) -> typed model or typed error``, with
retries only where they cannot spend money twice:

* idempotent requests (GET, PUT) are retried on connection errors, timeouts, 5xx and undecodable
  2xx bodies, with jittered exponential backoff;
* a write (POST) is retried only when it certainly did not reach the server (connection
  refused, 429, a refused token); if its outcome is unknown, :class:`OutcomeUnknownError` says so;
* a 401 refreshes the token once and retries once;
* a 429 cools down the endpoint's limiter for every caller and is retried after ``Retry-After``
  unless that exceeds ``retry_after_cap``.

Every attempt takes a rate-limit permit, and so does every re-send aiohttp makes on its own
(it retries an idempotent request once when a pooled keep-alive connection drops): a client
middleware counts each real send and takes another permit for a re-send. A permit is stamped
with the moment its request goes out on a connection; an attempt of which nothing went out
(its token could not be had, it could not connect, it was cancelled or the client closed
before it was written) gives its permits back.
"""

from __future__ import annotations

import contextvars
import random
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp
import msgspec
from multidict import CIMultiDictProxy

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
from .limits import Priority, Slot
from .stats import ClientStats

__all__ = ["Request", "Transport"]

T = TypeVar("T")


@dataclass(slots=True)
class Request(Generic[T]):
    """One logical API call, as a resource declares it."""

    method: str
    path: str
    decoder: msgspec.json.Decoder[T]
    limiter: RateLimiter | None = None
    key: str | None = None
    priority: Priority = Priority.INTERACTIVE
    idempotent: bool = True
    authenticated: bool = True
    token_request: bool = False
    params: Mapping[str, str] | None = None
    form: Mapping[str, str] | Sequence[tuple[str, str]] | None = None
    json: Any = None
    headers: Mapping[str, str] | None = None
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


class _Attempt:
    __slots__ = ("connected", "key", "limiter", "priority", "sends", "slots")

    def __init__(
        self,
        limiter: RateLimiter | None,
        key: str | None,
        priority: Priority,
        slots: tuple[Slot | None, ...],
    ):
        self.limiter = limiter
        self.key = key
        self.priority = priority
        self.sends = 0
        #: Rate-limit slots of this attempt: stamped with the send time when it goes out.
        self.slots = slots
        #: Our connector handed this attempt its connection (the request is being written).
        self.connected = False

    def mark(self, t: float) -> None:
        for slot in self.slots:
            if slot is not None:
                slot.mark(t)

    def release(self) -> None:
        _release(self.slots)


def _release(slots: tuple[Slot | None, ...]) -> None:
    """Give back the permits of an attempt of which nothing went out."""
    for slot in slots:
        if slot is not None:
            slot.release()


class _StampingConnector(aiohttp.TCPConnector):
    """Stamps the attempt's rate-limit slots when its connection is ready, right before the
    request is written: a request held up by connection set-up (TCP, TLS) is counted when it
    really goes out, so a window the server sees never holds more than the limit."""

    def __init__(self, *, clock: Clock, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stamp_clock = clock

    async def connect(
        self, req: aiohttp.ClientRequest, traces: list[Any], timeout: aiohttp.ClientTimeout
    ) -> Any:
        conn = await super().connect(req, traces, timeout)
        attempt = _ATTEMPT.get()
        if attempt is not None:
            attempt.connected = True
            attempt.mark(self._stamp_clock.now())
        return conn


_ATTEMPT: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar(
    "esim_async_attempt", default=None
)

_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


class _SendError(Exception):
    def __init__(self, error: TransportError, *, sent: bool, dropped: bool = False) -> None:
        self.error = error
        self.sent = sent
        #: The server closed the connection without answering (typically a pooled keep-alive
        #: connection it had already dropped): worth one immediate retry.
        self.dropped = dropped


class Transport:
    """Owns the aiohttp session and runs every request of one client."""

    def __init__(
        self,
        base_url: str,
        *,
        clock: Clock,
        stats: ClientStats,
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
        user_agent: str = C.USER_AGENT,
        backoff_base: float = C.BACKOFF_BASE,
        backoff_cap: float = C.BACKOFF_CAP,
        rng: random.Random | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self._base_url = base_url.rstrip("/")
        self._clock = clock
        self.stats = stats
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.retry_after_cap = retry_after_cap
        self._max_body_size = max_body_size
        self._connection_limit = connection_limit
        self._session = session
        self._owns_session = session is None
        self._connector = connector
        self._proxy = proxy
        self._ssl: ssl_module.SSLContext | bool = ssl if ssl is not None else True
        self._headers = {"User-Agent": user_agent, "Accept": "application/json"}
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._rng = rng or random.Random()
        self._middlewares: tuple[Any, ...] = ()
        self._count_in_middleware = False
        #: Our session's connector stamps each attempt when its connection is ready, so an
        #: attempt it never connected sent nothing.
        self._stamps_connections = False
        self._closed = False
        self.auth: TokenManager | None = None
        #: A limit over every request of the account (sandbox mode), applied to each request
        #: that does not name its own ``account_limiter``.
        self.account_limiter: RateLimiter | None = None

    # ---------------------------------------------------------------- session lifecycle

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
            session = aiohttp.ClientSession(
                connector=connector,
                connector_owner=self._connector is None,
                timeout=aiohttp.ClientTimeout(total=self._timeout, connect=self._connect_timeout),
                headers=self._headers,
                raise_for_status=False,
            )
            if hasattr(session, "_retry_connection"):
                # aiohttp re-sends an idempotent request once by itself when a pooled
                # connection drops; on our own session that re-send is switched off and the
                # pipeline's own retry (which takes a permit) does it instead, at no cost on
                # the hot path. (aiohttp's test utilities switch it off the same way.)
                session._retry_connection = False
                self._count_in_middleware = False
            else:  # pragma: no cover - a future aiohttp without the attribute
                self._middlewares = (self._count_sends,)
                self._count_in_middleware = True
            self._session = session
            self._stamps_connections = self._connector is None
        elif not self._owns_session and not self._count_in_middleware:
            # A caller's session keeps aiohttp's own re-send: a middleware (after the caller's
            # own middlewares) makes each re-send take a permit.
            own = tuple(getattr(session, "_middlewares", ()) or ())
            self._middlewares = (*own, self._count_sends)
            self._count_in_middleware = True
        return session

    async def aclose(self) -> None:
        """Close the session we created (never one the caller passed in). Idempotent."""
        if self._closed:
            return
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    # ---------------------------------------------------------------- the request loop

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._backoff_cap, self._backoff_base * (2 ** (attempt - 1)))
        return self._rng.uniform(ceiling / 2, ceiling)

    async def request(self, req: Request[T]) -> T:
        """Run ``req`` through limits, auth, HTTP and decoding; return the decoded value."""
        if self._closed:
            raise TransportError("the client is closed")
        stats = self.stats
        stats.requests += 1
        attempt = 0
        refreshed_token = False
        limiter = req.limiter
        account = req.account_limiter if req.account_limiter is not None else self.account_limiter
        clock = self._clock
        while True:
            slots = await self._permits(req, account)
            try:
                # Read per attempt: a caller joining a shared request may make it more patient.
                max_retries = self.max_retries if req.max_retries is None else req.max_retries
                headers = dict(self._headers) if not self._owns_session else {}
                token: str | None = None
                if req.authenticated:
                    if self.auth is None:
                        raise EsimError("no token manager configured")
                    token = await self.auth.get()
                    headers["Authorization"] = f"Bearer {token}"
                if req.headers:
                    headers.update(req.headers)
            except BaseException:
                # Nothing went out (the token fetch failed or was cancelled): the permits are
                # given back, or the budget would shrink for good.
                _release(slots)
                raise
            stats.attempts += 1
            if attempt:
                stats.retries += 1
            try:
                status, raw, resp_headers = await self._send(req, headers, slots)
            except _SendError as failure:
                if attempt < max_retries and (req.idempotent or not failure.sent):
                    attempt += 1
                    if not (failure.dropped and attempt == 1):
                        await clock.sleep(self._backoff(attempt))
                    continue
                if req.idempotent or not failure.sent:
                    raise failure.error from failure.error.__cause__
                raise OutcomeUnknownError(
                    f"{req.method} {req.path}: the request may have reached the provider but "
                    f"no answer came back ({failure.error}); it was not retried because it is "
                    "not idempotent. Check whether it took effect before trying again."
                    + req.outcome_hint
                ) from failure.error

            if limiter is not None and "X-RateLimit-Limit" in resp_headers:
                limiter.record_headers(resp_headers)

            if 200 <= status < 300:
                if req.empty_ok and (status == 204 or not raw.strip()):
                    return None  # type: ignore[return-value]
                try:
                    return req.decoder.decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
                    # (RecursionError: a body nested deeper than any answer could be)
                    error = TransportError(
                        f"{req.method} {req.path}: undecodable HTTP {status} body ({exc})"
                    )
                    if req.idempotent and attempt < max_retries:
                        attempt += 1
                        await clock.sleep(self._backoff(attempt))
                        continue
                    if req.idempotent:
                        raise error from exc
                    raise OutcomeUnknownError(
                        f"{req.method} {req.path}: the provider answered HTTP {status} but the "
                        "body could not be read; the write probably took effect. Check before "
                        "trying again." + req.outcome_hint
                    ) from error

            api_error = error_from_response(
                status, raw, resp_headers, token_request=req.token_request
            )
            if status == 401 and token is not None and not refreshed_token:
                # The token was refused (expired, revoked): refresh once and retry once. The
                # request was rejected before it did anything, so this is safe for writes too.
                refreshed_token = True
                assert self.auth is not None
                self.auth.invalidate(token)
                logger.info("%s %s: token refused, refreshing it once", req.method, req.path)
                continue
            if isinstance(api_error, RateLimitedError):
                stats.rate_limited += 1
                limit = _int_header(resp_headers.get("X-RateLimit-Limit"))
                wait = api_error.retry_after
                # Decided before anything waits: a Retry-After beyond the cap is slept through
                # neither by this call nor (the limiter refuses them) by the calls after it.
                beyond_cap = wait is not None and wait > self.retry_after_cap
                if limiter is not None:
                    limiter.penalize(wait, limit, key=req.key, waitable=not beyond_cap)
                logger.warning(
                    "%s %s: 429 Too Many Attempts (Retry-After %s)",
                    req.method,
                    req.path,
                    wait,
                )
                if not req.retry_rate_limited or attempt >= max_retries or beyond_cap:
                    raise api_error
                attempt += 1
                if limiter is None:
                    await clock.sleep(wait if wait is not None else self._backoff(attempt))
                else:
                    # The limiter now holds every caller back until Retry-After has passed;
                    # a little jitter spreads the retries that wake together.
                    await clock.sleep(self._rng.uniform(0, min(1.0, self._backoff(1))))
                continue
            if isinstance(api_error, ServerError):
                if req.idempotent and attempt < max_retries:
                    attempt += 1
                    logger.info(
                        "%s %s: HTTP %d, retrying (%d/%d)",
                        req.method,
                        req.path,
                        status,
                        attempt,
                        max_retries,
                    )
                    await clock.sleep(self._backoff(attempt))
                    continue
                if not req.idempotent:
                    raise OutcomeUnknownError(
                        f"{req.method} {req.path}: the provider answered HTTP {status}; the "
                        "write may or may not have taken effect and was not retried. Check "
                        "before trying again." + req.outcome_hint
                    ) from api_error
            raise api_error

    async def _permits(
        self, req: Request[Any], account: RateLimiter | None
    ) -> tuple[Slot | None, ...]:
        """The rate-limit permits of one attempt: the endpoint's, then the account's."""
        limiter = req.limiter
        if limiter is None and account is None:
            return ()
        clock = self._clock
        before = clock.now()
        slot = await limiter.acquire(req.key, req.priority) if limiter is not None else None
        try:
            account_slot = (
                await account.acquire(None, req.priority) if account is not None else None
            )
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        self.stats.limit_wait += clock.now() - before
        return (slot, account_slot)

    async def _send(
        self, req: Request[Any], headers: dict[str, str], slots: tuple[Slot | None, ...] = ()
    ) -> tuple[int, bytes, CIMultiDictProxy[str]]:
        """One HTTP exchange. Its ``slots`` are settled whatever happens: stamped with the send
        time, or released when nothing went out."""
        try:
            session = self._ensure_session()
        except BaseException:
            _release(slots)
            raise
        url = self._base_url + req.path
        extra: dict[str, Any] = {}
        counting = self._count_in_middleware
        if counting:
            extra["middlewares"] = self._middlewares
        if req.timeout is not None:
            extra["timeout"] = aiohttp.ClientTimeout(
                total=req.timeout, connect=self._connect_timeout
            )
        # The attempt rides along (a context variable) only when something needs it: a slot to
        # stamp with the send time, or the middleware counting a caller's session's re-sends.
        attempt: _Attempt | None = None
        marker = None
        if counting or any(slot is not None and not slot.sent for slot in slots):
            attempt = _Attempt(req.limiter, req.key, req.priority, slots)
            marker = _ATTEMPT.set(attempt)
        answered = not_sent = False
        try:
            async with session.request(
                req.method,
                url,
                params=req.params,
                data=req.form,
                json=req.json,
                headers=headers,
                proxy=self._proxy,
                ssl=self._ssl,
                allow_redirects=False,
                **extra,
            ) as resp:
                answered = True
                raw = await self._read(resp)
                return resp.status, raw, resp.headers
        except _NOT_SENT as exc:
            not_sent = True
            raise _SendError(
                TransportError(f"{req.method} {req.path}: cannot connect: {_describe(exc)}"),
                sent=False,
            ) from exc
        except TimeoutError as exc:
            raise _SendError(
                TransportError(f"{req.method} {req.path}: timed out"), sent=True
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _SendError(
                TransportError(f"{req.method} {req.path}: {_describe(exc)}"),
                sent=True,
                dropped=isinstance(exc, aiohttp.ServerDisconnectedError),
            ) from exc
        finally:
            if attempt is not None:
                if not answered and (
                    not_sent or (self._stamps_connections and not attempt.connected)
                ):
                    # Nothing of this request went out (it could not connect, or it failed or
                    # was cancelled before its connection was ready): the permits go back.
                    attempt.release()
                else:
                    # Slots not stamped at connection time (a caller's connector or session)
                    # count from now: later than the send, so never too early.
                    attempt.mark(self._clock.now())
            if marker is not None:
                _ATTEMPT.reset(marker)

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        """The response body, decoded (gzip, deflate...), at most ``max_body_size`` bytes.

        A declared ``Content-Length`` over the cap is refused before reading; otherwise the
        body is read in pieces and the cap is enforced on the decoded bytes as they arrive, so
        a small compressed body that inflates far beyond the cap is never held whole. Either
        way the connection is closed (an unread body cannot be reused) and a
        :class:`TransportError` names the cap.
        """
        cap = self._max_body_size
        length = resp.content_length
        if length is not None and length > cap:
            resp.close()
            raise TransportError(
                f"response body of {length} bytes exceeds the {cap}-byte cap (max_body_size)"
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(65536):
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
        attempt = _ATTEMPT.get()
        if attempt is not None:
            if attempt.sends:
                # aiohttp re-sends on its own when a pooled connection dropped: the server may
                # count both, so the re-send takes a permit like any attempt.
                self.stats.resends += 1
                if attempt.limiter is not None:
                    slot = await attempt.limiter.acquire(attempt.key, attempt.priority)
                    if slot is not None:
                        slot.mark(self._clock.now())  # it goes out right now
            attempt.sends += 1
        return await handler(request)


def _int_header(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _describe(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}") if str(exc) else type(exc).__name__

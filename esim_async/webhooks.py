"""Push instead of poll: receive Airalo's signed notifications as typed events.

Airalo POSTs low-data (75 %, 90 %, 3 days and 1 day before expiry), credit-limit and async-order
notifications to a partner URL, signed in the ``airalo-signature`` header with HMAC-SHA512 of the
payload keyed with the client secret. :func:`webhook_app` is a ready ``aiohttp.web`` application
that verifies, decodes and hands them to your handler::

    from aiohttp import web
    from esim_async.webhooks import LowDataEvent, webhook_app

    async def on_event(event):
        if isinstance(event, LowDataEvent):
            print(event.iccid, event.level)

    app = webhook_app(client_secret, on_event=on_event, client=client)
    web.run_app(app, host="127.0.0.1", port=8080)

With ``client=``, a low-data event marks that eSIM's cached usage stale and an async-order event
resolves ``await client.orders.wait_async(request_id)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from aiohttp import web

from .clock import Clock, MonotonicClock
from .models._base import Model
from .models.orders import Order

if TYPE_CHECKING:
    from .client import BaseClient

__all__ = [
    "RECEIVER",
    "SIGNATURE_HEADER",
    "AsyncOrderEvent",
    "CreditLimitEvent",
    "LowDataEvent",
    "UnknownEvent",
    "WebhookEvent",
    "WebhookReceiver",
    "decode_event",
    "sign",
    "verify_signature",
    "webhook_app",
]

SIGNATURE_HEADER = "airalo-signature"
#: Largest notification body accepted (the documented payloads are a few hundred bytes; an
#: async order with many eSIMs is a few dozen KiB).
DEFAULT_MAX_BODY = 1024 * 1024
#: How long a delivered body is remembered so a redelivery is not passed on again.
DEFAULT_DEDUP_TTL = 3600.0

logger = logging.getLogger("esim_async")


# --------------------------------------------------------------------------- signatures


def sign(payload: bytes, secret: str) -> str:
    """The ``airalo-signature`` of ``payload``: hex HMAC-SHA512 keyed with the client secret."""
    return hmac.new(secret.encode(), payload, hashlib.sha512).hexdigest()


def _canonical_forms(body: bytes) -> list[bytes]:
    """The documented canonical re-encodings of a JSON body: compact, forward slashes escaped
    (PHP's default), non-ASCII kept raw (the Python SDK) or escaped (PHP)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    forms = []
    for ascii_only in (False, True):
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=ascii_only)
        forms.append(text.replace("/", "\\/").encode())
    return forms


def verify_signature(body: bytes, signature: str | None, secret: str) -> bool:
    """True when ``signature`` signs ``body`` (the raw bytes first, then the documented
    canonical re-encodings, so both readings of the docs verify). Constant-time comparisons."""
    if not signature or not secret:
        return False
    given = signature.strip().lower()
    if not hmac.compare_digest(sign(body, secret), given):
        return any(
            hmac.compare_digest(sign(form, secret), given) for form in _canonical_forms(body)
        )
    return True


# --------------------------------------------------------------------------- events


class LowDataEvent(Model):
    """Low data: ``level`` is ``"75%"``, ``"90%"``, ``"3days"`` or ``"1days"``.

    The ICCID is kept as sent (the documented example has 17 digits).
    """

    iccid: str
    level: str | None = None
    package_name: str | None = None
    remaining_percentage: float | None = None


class CreditLimitEvent(Model):
    """The account's credit passed a threshold; ``remaining`` is the credit left."""

    message: str | None = None
    remaining: float | None = None


class AsyncOrderEvent(Model):
    """The outcome of ``orders.create_async`` (or a future order): the order, or a failure
    ``reason``. ``raw`` is the decoded body as sent."""

    request_id: str
    order: Order | None = None
    reason: str | None = None
    raw: Any = None

    @property
    def ok(self) -> bool:
        return self.order is not None and self.reason is None


class UnknownEvent(Model):
    """A notification of a kind this version does not know, kept raw."""

    raw: Any = None


WebhookEvent = LowDataEvent | CreditLimitEvent | AsyncOrderEvent | UnknownEvent
_any = msgspec.json.Decoder()


def decode_event(body: bytes) -> WebhookEvent:
    """Decode a notification body; raises ``ValueError`` when it is not a JSON object."""
    try:
        raw = _any.decode(body)
    except msgspec.DecodeError as exc:
        raise ValueError(f"notification body is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("notification body is not a JSON object")
    data = raw.get("data")
    inner: dict[str, Any] = data if isinstance(data, dict) else raw
    try:
        if "request_id" in inner or "request_id" in raw:
            request_id = str(inner.get("request_id") or raw.get("request_id"))
            reason = inner.get("reason") or raw.get("reason")
            order = None
            if reason is None and ("sims" in inner or "package_id" in inner):
                order = msgspec.convert(inner, Order, strict=False)
            return AsyncOrderEvent(
                request_id=request_id, order=order, reason=str(reason) if reason else None, raw=raw
            )
        if "iccid" in raw and ("level" in raw or "remaining_percentage" in raw):
            return msgspec.convert(raw, LowDataEvent, strict=False)
        if "remaining" in raw and "message" in raw:
            return msgspec.convert(raw, CreditLimitEvent, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"malformed notification: {exc}") from None
    return UnknownEvent(raw=raw)


# --------------------------------------------------------------------------- the receiver

Handler = Callable[[WebhookEvent], Awaitable[None]]


class WebhookReceiver:
    """Verifies, de-duplicates and dispatches notifications (the logic behind
    :func:`webhook_app`)."""

    def __init__(
        self,
        secret: str,
        on_event: Handler | None = None,
        *,
        client: BaseClient | None = None,
        ack: Literal["immediate", "after_handler"] = "immediate",
        dedup_ttl: float = DEFAULT_DEDUP_TTL,
        clock: Clock | None = None,
    ) -> None:
        if not secret:
            raise ValueError("the webhook secret (your client secret) is required")
        from ._secrets import register_secret

        register_secret(secret)
        self._secret = secret
        self._on_event = on_event
        self._client = client
        self._ack = ack
        self._dedup_ttl = dedup_ttl
        self._clock = clock or MonotonicClock()
        self._seen: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Counters: received, rejected (bad signature), malformed, duplicates, delivered,
        #: handler_errors.
        self.stats: dict[str, int] = dict.fromkeys(
            ("received", "rejected", "malformed", "duplicates", "delivered", "handler_errors"), 0
        )
        if client is not None:
            client._topup_listeners.append(self.rearm)

    def __repr__(self) -> str:
        return f"WebhookReceiver(ack={self._ack!r}, secret='***')"

    def _expire(self) -> None:
        now = self._clock.now()
        seen = self._seen
        while seen:
            key, (when, _) = next(iter(seen.items()))
            if now - when < self._dedup_ttl:
                break
            del seen[key]

    def rearm(self, iccid: str) -> None:
        """Forget delivered notifications about ``iccid`` (a top-up re-arms its thresholds)."""
        for key in [k for k, (_, who) in self._seen.items() if who == iccid]:
            del self._seen[key]

    async def handle(self, body: bytes, signature: str | None) -> tuple[int, str]:
        """Process one POST; returns (HTTP status, text)."""
        self.stats["received"] += 1
        if not verify_signature(body, signature, self._secret):
            self.stats["rejected"] += 1
            logger.warning("webhook: missing or wrong %s, rejected", SIGNATURE_HEADER)
            return 401, "invalid signature"
        try:
            event = decode_event(body)
        except ValueError as exc:
            self.stats["malformed"] += 1
            return 400, str(exc)
        self._expire()
        digest = hashlib.sha256(body).hexdigest()
        if digest in self._seen:
            self.stats["duplicates"] += 1
            return 200, "duplicate"
        iccid = event.iccid if isinstance(event, LowDataEvent) else None
        self._apply(event)
        if self._ack == "after_handler":
            try:
                await self._dispatch(event)
            except Exception:
                return 500, "handler failed"
            self._seen[digest] = (self._clock.now(), iccid)
            return 200, "ok"
        self._seen[digest] = (self._clock.now(), iccid)
        task = asyncio.get_running_loop().create_task(self._dispatch_logged(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return 200, "ok"

    def _apply(self, event: WebhookEvent) -> None:
        client = self._client
        if client is None:
            return
        if isinstance(event, LowDataEvent):
            client.sims.invalidate_usage(event.iccid)
        elif isinstance(event, AsyncOrderEvent):
            client._deliver_async_order(event)

    async def _dispatch(self, event: WebhookEvent) -> None:
        if self._on_event is None:
            return
        try:
            await self._on_event(event)
        except Exception:
            self.stats["handler_errors"] += 1
            logger.exception("webhook handler raised on %s", type(event).__name__)
            raise
        self.stats["delivered"] += 1

    async def _dispatch_logged(self, event: WebhookEvent) -> None:
        try:
            await self._dispatch(event)
        except Exception:  # already logged and counted; the receiver keeps going
            return

    async def drain(self) -> None:
        """Wait for handlers still running (called on app shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def webhook_app(
    secret: str,
    on_event: Handler | None = None,
    *,
    client: BaseClient | None = None,
    ack: Literal["immediate", "after_handler"] = "immediate",
    max_body: int = DEFAULT_MAX_BODY,
    dedup_ttl: float = DEFAULT_DEDUP_TTL,
    clock: Clock | None = None,
) -> web.Application:
    """An ``aiohttp.web`` application receiving notifications at its root path ``/``.

    Mount it as a sub-app (``app.add_subapp("/airalo", webhook_app(...))``) or run it alone.

    - ``HEAD /`` answers 200 (the opt-in liveness check).
    - ``POST /``: a missing or wrong ``airalo-signature`` gets 401 and nothing is passed on; an
      oversized body gets 413, a malformed one 400. A redelivered body (same SHA-256 within
      ``dedup_ttl`` seconds) gets 200 and is not passed on again; a top-up through ``client``
      re-arms that eSIM's thresholds.
    - ``ack="immediate"`` (default) answers 200 at once and runs ``on_event`` in the background
      (a raising handler is logged, the app keeps going); ``ack="after_handler"`` answers only
      after ``on_event`` succeeded, and 500 if it raised, so the provider redelivers.

    Args:
        secret: your client secret (the signing key).
        on_event: ``async def on_event(event)`` receiving :data:`WebhookEvent` values.
        client: invalidate cached usage on low-data events and resolve
            ``client.orders.wait_async(request_id)`` on async-order events.
    """
    receiver = WebhookReceiver(
        secret, on_event, client=client, ack=ack, dedup_ttl=dedup_ttl, clock=clock
    )

    async def head(_: web.Request) -> web.Response:
        return web.Response(status=200)

    async def post(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > max_body:
            return web.Response(status=413, text="body too large")
        try:
            body = await request.content.read(max_body + 1)
        except (ConnectionError, asyncio.IncompleteReadError):
            return web.Response(status=400, text="incomplete body")
        if len(body) > max_body:
            return web.Response(status=413, text="body too large")
        status, text = await receiver.handle(body, request.headers.get(SIGNATURE_HEADER))
        return web.Response(status=status, text=text)

    async def on_cleanup(_: web.Application) -> None:
        await receiver.drain()

    app = web.Application(client_max_size=max_body)
    app.router.add_route("HEAD", "/", head)
    app.router.add_post("/", post)
    app.on_cleanup.append(on_cleanup)
    app[RECEIVER] = receiver
    return app


#: ``app[RECEIVER]`` is the :class:`WebhookReceiver` behind a :func:`webhook_app` (its
#: ``stats``, ``rearm``).
RECEIVER = web.AppKey("esim_async_webhook_receiver", WebhookReceiver)

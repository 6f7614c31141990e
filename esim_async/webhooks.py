"""Push instead of poll: receive Airalo's signed notifications as typed events.

Airalo POSTs low-data (75 %, 90 %, 3 days and 1 day before expiry), credit-limit and async-order
notifications to a partner URL, signed in the ``airalo-signature`` header with HMAC-SHA512 of the
payload keyed with the client secret.

:class:`WebhookReceiver` is the framework-neutral core: raw body and headers in, a verified typed
event out (``None`` for a redelivery), or a :class:`WebhookError` whose ``status`` is the HTTP
answer (401 signature, 400 payload, 413 size). Any web framework's route is a few lines around
:meth:`WebhookReceiver.receive`. :func:`webhook_app` is a ready ``aiohttp.web`` application built
on it::

    from aiohttp import web
    from esim_async.webhooks import LowDataEvent, webhook_app

    async def on_event(event):
        if isinstance(event, LowDataEvent):
            print(event.iccid, event.level)

    app = webhook_app(client_secret, on_event=on_event, client=client)
    web.run_app(app, host="127.0.0.1", port=8080)

With ``client=``, a low-data event marks that eSIM's cached usage stale (the shared Redis entry
too), a top-up re-arms that eSIM's thresholds, and an async-order event resolves
``await client.orders.wait_async(request_id)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

import msgspec
from aiohttp import web

from .clock import Clock, MonotonicClock
from .errors import EsimError
from .models._base import Model, lenient
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
    "WebhookError",
    "WebhookEvent",
    "WebhookPayloadError",
    "WebhookReceiver",
    "WebhookResponse",
    "WebhookSignatureError",
    "WebhookTooLargeError",
    "decode_event",
    "sign",
    "status_for",
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


# --------------------------------------------------------------------------- errors


class WebhookError(EsimError):
    """A notification was refused. ``status`` is the HTTP status to answer with and ``str(exc)``
    a short text for the answer's body (never the secret nor the signature).

    A framework adapter answers ``exc.status`` (or :func:`status_for`) and lets the provider
    redeliver when that is worth it.
    """

    #: The HTTP status that answers this refusal.
    status: ClassVar[int] = 400


class WebhookSignatureError(WebhookError):
    """The ``airalo-signature`` header is missing or does not sign the body: answer 401 and pass
    nothing on."""

    status: ClassVar[int] = 401


class WebhookPayloadError(WebhookError, ValueError):
    """The body is rightly signed but is not a notification (not a JSON object, malformed
    fields), or it arrived incomplete: answer 400."""

    status: ClassVar[int] = 400


class WebhookTooLargeError(WebhookError):
    """The body (or its declared ``Content-Length``) is larger than the receiver's ``max_body``:
    answer 413. Checked before the signature, so an oversized body is never hashed."""

    status: ClassVar[int] = 413


def status_for(exc: BaseException) -> int:
    """The HTTP status answering ``exc``: a :class:`WebhookError`'s ``status`` (401, 400, 413),
    500 for anything else (a failing handler: the provider redelivers)."""
    return exc.status if isinstance(exc, WebhookError) else 500


# --------------------------------------------------------------------------- signatures


def sign(payload: bytes, secret: str) -> str:
    """The ``airalo-signature`` of ``payload``: hex HMAC-SHA512 keyed with the client secret."""
    return hmac.new(secret.encode(), payload, hashlib.sha512).hexdigest()


def _canonical_forms(body: bytes) -> list[bytes]:
    """The documented canonical re-encodings of a JSON body: compact, forward slashes escaped
    (PHP's default), non-ASCII kept raw (the Python SDK) or escaped (PHP)."""
    try:
        data = json.loads(body)
        forms = []
        for ascii_only in (False, True):
            text = json.dumps(data, separators=(",", ":"), ensure_ascii=ascii_only)
            forms.append(text.replace("/", "\\/").encode())
    except (ValueError, UnicodeDecodeError, RecursionError):
        # (RecursionError: nested deeper than any notification; such a body has no form)
        return []
    return forms


def verify_signature(body: bytes, signature: str | None, secret: str) -> bool:
    """True when ``signature`` signs ``body`` (the raw bytes first, then the documented
    canonical re-encodings, so both readings of the docs verify). Constant-time comparisons."""
    if not signature or not secret:
        return False
    given = signature.strip().lower()
    if not given.isascii():
        # Never a hex digest (and compare_digest refuses non-ASCII text): what it is says
        # nothing about the secret.
        return False
    return hmac.compare_digest(sign(body, secret), given) or any(
        hmac.compare_digest(sign(form, secret), given) for form in _canonical_forms(body)
    )


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
    ``reason``. ``raw`` is the decoded body as sent.

    The order is read leniently (the notification is never refused for it): a number where
    the model has text reads as its text, and a field of any other unexpected shape (an empty
    list for an absent object, say) is left at its default; ``raw`` keeps it as sent."""

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
    """Decode a notification body (no signature check: see :meth:`WebhookReceiver.receive`).

    Raises:
        WebhookPayloadError: (a ``ValueError``) the body is not a JSON object (or is nested
            beyond reading), or a known kind of notification has malformed fields.
    """
    try:
        raw = _any.decode(body)
    except msgspec.DecodeError as exc:
        raise WebhookPayloadError(f"notification body is not JSON: {exc}") from None
    except RecursionError:
        raise WebhookPayloadError("notification body is nested too deeply") from None
    if not isinstance(raw, dict):
        raise WebhookPayloadError("notification body is not a JSON object")
    data = raw.get("data")
    inner: dict[str, Any] = data if isinstance(data, dict) else raw
    try:
        if "request_id" in inner or "request_id" in raw:
            request_id = str(inner.get("request_id") or raw.get("request_id"))
            reason = inner.get("reason") or raw.get("reason")
            order = None
            if reason is None and ("sims" in inner or "package_id" in inner):
                # A paid order: what fits the model is read, the rest stays in ``raw``
                # (refusing the notification would lose the order).
                order = lenient(inner, Order)
            return AsyncOrderEvent(
                request_id=request_id, order=order, reason=str(reason) if reason else None, raw=raw
            )
        if "iccid" in raw and ("level" in raw or "remaining_percentage" in raw):
            return msgspec.convert(raw, LowDataEvent, strict=False)
        if "remaining" in raw and "message" in raw:
            return msgspec.convert(raw, CreditLimitEvent, strict=False)
    except msgspec.ValidationError as exc:
        raise WebhookPayloadError(f"malformed notification: {exc}") from None
    except RecursionError:
        raise WebhookPayloadError("notification body is nested too deeply") from None
    return UnknownEvent(raw=raw)


# --------------------------------------------------------------------------- the receiver

Handler = Callable[[WebhookEvent], Awaitable[None]]


class WebhookResponse(NamedTuple):
    """The answer to one notification POST."""

    status: int
    text: str


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]`` whatever its case (frameworks' header maps ignore case; a plain ``dict``
    does not). ``name`` is lower case."""
    value = headers.get(name)
    if value is None:
        value = next((v for key, v in headers.items() if key.lower() == name), None)
    return value


def _declared_length(headers: Mapping[str, str]) -> int | None:
    """The ``Content-Length`` a request declares, when it declares a valid one."""
    try:
        length = int((_header(headers, "content-length") or "").strip())
    except ValueError:
        return None
    return length if length >= 0 else None


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _identity(event: WebhookEvent, body: bytes) -> str:
    """What makes a notification the same one again, as the provider's docs advise: an async
    order's ``request_id``; a low-data event's ICCID, level and package; else its bytes."""
    if isinstance(event, AsyncOrderEvent):
        return f"order\0{event.request_id}"
    if isinstance(event, LowDataEvent):
        extra = f"\0{event.remaining_percentage}" if event.level is None else ""
        return f"low\0{event.iccid}\0{event.level}\0{event.package_name}{extra}"
    return _digest(body)


class WebhookReceiver:
    """Verifies, de-duplicates and decodes notifications, in any web framework.

    :meth:`receive` is the core: the raw body and the request's headers in, the typed event out
    (``None`` for a redelivery), or a :class:`WebhookError` whose ``status`` is the HTTP answer.
    :meth:`read_body` reads a request body without holding more than ``max_body`` bytes.
    :meth:`handle` adds ``on_event`` and the acknowledgement policy and returns the answer; it is
    all :func:`webhook_app` does around the body it reads. A route in another framework::

        try:
            body = await receiver.read_body(request.stream(), request.headers)
            event = await receiver.receive(body, request.headers)
        except WebhookError as exc:
            return PlainTextResponse(str(exc), status_code=exc.status)
        if event is not None:
            await on_event(event)
        return PlainTextResponse("ok")

    Args:
        secret: your client secret (the signing key).
        on_event: ``async def on_event(event)``, run by :meth:`handle` (not by :meth:`receive`).
        client: with a client, a low-data event marks that eSIM's cached usage stale (the
            shared Redis entry too), a top-up through the client re-arms that eSIM's
            thresholds, and an async-order event resolves
            ``client.orders.wait_async(request_id)``.
        ack: the policy of :meth:`handle`: ``"immediate"`` answers 200 at once and runs
            ``on_event`` in the background; ``"after_handler"`` answers after ``on_event``
            succeeded, and 500 (the provider redelivers) if it raised.
        dedup_ttl: seconds a delivered notification is remembered, so a redelivery is not
            passed on (recognised by its ``request_id``, or its ICCID, level and package,
            however it is encoded; other kinds by their bytes).
        max_body: largest body accepted, in bytes.
        clock: time source of the de-duplication window.
    """

    def __init__(
        self,
        secret: str,
        on_event: Handler | None = None,
        *,
        client: BaseClient | None = None,
        ack: Literal["immediate", "after_handler"] = "immediate",
        dedup_ttl: float = DEFAULT_DEDUP_TTL,
        max_body: int = DEFAULT_MAX_BODY,
        clock: Clock | None = None,
    ) -> None:
        if not secret:
            raise ValueError("the webhook secret (your client secret) is required")
        if ack not in ("immediate", "after_handler"):
            raise ValueError(f"ack must be 'immediate' or 'after_handler', not {ack!r}")
        if max_body < 1:
            raise ValueError("max_body must be at least 1 byte")
        from ._secrets import register_secret

        register_secret(secret)
        self._secret = secret
        self._on_event = on_event
        self._client = client
        self._ack = ack
        self._dedup_ttl = dedup_ttl
        self._max_body = max_body
        self._clock = clock or MonotonicClock()
        self._seen: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Counters: received, too_large, rejected (bad signature), malformed, duplicates,
        #: delivered and handler_errors (the last two by :meth:`handle`).
        counters = ("received", "too_large", "rejected", "malformed", "duplicates")
        self.stats: dict[str, int] = dict.fromkeys((*counters, "delivered", "handler_errors"), 0)
        if client is not None:
            client.orders.add_topup_listener(self.rearm)

    def __repr__(self) -> str:
        return f"WebhookReceiver(ack={self._ack!r}, max_body={self._max_body}, secret='***')"

    @property
    def max_body(self) -> int:
        """Largest body accepted, in bytes."""
        return self._max_body

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

    def forget(self, body: bytes) -> None:
        """Forget that ``body`` was delivered, so its redelivery is passed on again.

        Call it when your handler failed on the event :meth:`receive` returned and you answer
        an error so that the provider redelivers.
        """
        try:
            key = _identity(decode_event(body), body)
        except WebhookPayloadError:
            key = _digest(body)
        self._seen.pop(key, None)

    def _too_large(self) -> WebhookTooLargeError:
        self.stats["too_large"] += 1
        return WebhookTooLargeError("body too large")

    async def read_body(
        self, chunks: AsyncIterable[bytes], headers: Mapping[str, str] | None = None
    ) -> bytes:
        """Read a request body from ``chunks`` (Starlette's ``request.stream()``, aiohttp's
        ``request.content.iter_any()``...), holding at most ``max_body`` bytes.

        Raises:
            WebhookTooLargeError: ``headers`` declare a ``Content-Length`` over ``max_body``
                (nothing is read), or the body grows past it (reading stops there).
        """
        limit = self._max_body
        if headers is not None:
            declared = _declared_length(headers)
            if declared is not None and declared > limit:
                self.stats["received"] += 1
                raise self._too_large()
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                self.stats["received"] += 1
                raise self._too_large()
            parts.append(chunk)
        return b"".join(parts)

    async def receive(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent | None:
        """Verify and decode one notification.

        In order: the size (``max_body``, and the declared ``Content-Length``), the
        ``airalo-signature`` (HMAC-SHA512 of the raw body, then of the documented canonical
        re-encodings; constant-time), the payload, then de-duplication. A new event is then
        applied to ``client`` (if any) and returned.

        Args:
            body: the raw request body, exactly as received.
            headers: the request headers (any mapping; the signature header is found whatever
                its case).

        Returns:
            The typed event, or ``None`` when the same notification was delivered within
            ``dedup_ttl`` (answer 200: the provider must stop redelivering).

        Raises:
            WebhookTooLargeError: 413.
            WebhookSignatureError: 401; nothing is passed on or remembered.
            WebhookPayloadError: 400.
        """
        self.stats["received"] += 1
        declared = _declared_length(headers)
        if len(body) > self._max_body or (declared is not None and declared > self._max_body):
            raise self._too_large()
        if not verify_signature(body, _header(headers, SIGNATURE_HEADER), self._secret):
            self.stats["rejected"] += 1
            logger.warning("webhook: missing or wrong %s, rejected", SIGNATURE_HEADER)
            raise WebhookSignatureError("invalid signature")
        try:
            event = decode_event(body)
        except WebhookPayloadError:
            self.stats["malformed"] += 1
            raise
        self._expire()
        digest = _identity(event, body)
        if digest in self._seen:
            self.stats["duplicates"] += 1
            return None
        # Nothing awaits between the check above and the mark below: of concurrent
        # redeliveries, exactly one gets the event.
        self._apply(event)
        iccid = event.iccid if isinstance(event, LowDataEvent) else None
        self._seen[digest] = (self._clock.now(), iccid)
        return event

    async def handle(self, body: bytes, headers: Mapping[str, str]) -> WebhookResponse:
        """:meth:`receive` one notification, run ``on_event`` by the ``ack`` policy, and return
        the answer (a named tuple ``(status, text)``).

        401, 400 and 413 answer a :class:`WebhookError`; a redelivery gets ``(200,
        "duplicate")``. With ``ack="immediate"`` a new event gets ``(200, "ok")`` at once and
        ``on_event`` runs in the background (a raising handler is logged and counted); with
        ``ack="after_handler"`` the answer waits for ``on_event``, and a raising handler gets
        ``(500, "handler failed")`` and the body is forgotten, so the redelivery is processed
        (a handler cancelled meanwhile also forgets the body, and the cancellation goes on).
        """
        try:
            event = await self.receive(body, headers)
        except WebhookError as exc:
            return WebhookResponse(exc.status, str(exc))
        if event is None:
            return WebhookResponse(200, "duplicate")
        if self._ack == "after_handler":
            try:
                await self._dispatch(event)
            except Exception:
                self.forget(body)
                return WebhookResponse(500, "handler failed")
            except BaseException:
                # Cancelled (the connection dropped, the server stops): no answer goes out and
                # the provider redelivers, so the redelivery must be handled again.
                self.forget(body)
                raise
            return WebhookResponse(200, "ok")
        task = asyncio.get_running_loop().create_task(self._dispatch_logged(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return WebhookResponse(200, "ok")

    def _apply(self, event: WebhookEvent) -> None:
        client = self._client
        if client is None:
            return
        if isinstance(event, LowDataEvent):
            client.sims.invalidate_usage(event.iccid)
        elif isinstance(event, AsyncOrderEvent):
            client.orders.deliver_async_order(event)

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
        with contextlib.suppress(Exception):  # logged and counted; the receiver keeps going
            await self._dispatch(event)

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
    """An ``aiohttp.web`` application receiving notifications at its root path ``/``: the
    body read under ``max_body``, then :meth:`WebhookReceiver.handle` (the arguments are
    :class:`WebhookReceiver`'s). ``HEAD /`` answers 200 (the opt-in liveness check); a body
    cut short answers 400.

    Mount it as a sub-app (``app.add_subapp("/airalo", webhook_app(...))``) or run it alone.
    """
    receiver = WebhookReceiver(
        secret,
        on_event,
        client=client,
        ack=ack,
        dedup_ttl=dedup_ttl,
        max_body=max_body,
        clock=clock,
    )

    async def head(_: web.Request) -> web.Response:
        return web.Response(status=200)

    async def post(request: web.Request) -> web.Response:
        try:
            body = await receiver.read_body(request.content.iter_any(), request.headers)
        except WebhookError as exc:
            return web.Response(status=exc.status, text=str(exc))
        except (ConnectionError, asyncio.IncompleteReadError):
            return web.Response(status=400, text="incomplete body")
        status, text = await receiver.handle(body, request.headers)
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

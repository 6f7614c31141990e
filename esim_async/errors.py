"""The exception tree, and the mapping from an HTTP response to an exception.

Errors are mapped by HTTP status first, then by body shape: 404 and 429 bodies differ between
endpoints and providers (with or without the ``data``/``meta`` envelope), so nothing here depends
on their text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import msgspec

from ._secrets import redact_deep
from .clock import MonotonicClock

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BusinessError",
    "EndpointNotFoundError",
    "EsimError",
    "InvalidIccidError",
    "InvalidRequestError",
    "NotFoundError",
    "OutcomeUnknownError",
    "RateLimitedError",
    "ServerError",
    "TransportError",
    "ValidationError",
    "WaitTimeoutError",
    "parse_retry_after",
]

#: Business codes after which trying again later can succeed.
RETRYABLE_BUSINESS_CODES = frozenset({13, 33, 34, 53})
#: Business code for "insufficient credit": top up the account, then retry.
INSUFFICIENT_CREDIT_CODE = 11
#: Business code for a recycled eSIM: terminal.
RECYCLED_CODE = 73
#: Forbidden because the caller's IP is not on the account's allow-list.
IP_NOT_ALLOWED_CODE = 89


class EsimError(Exception):
    """Base class of every error raised by esim_async."""


class InvalidRequestError(EsimError, ValueError):
    """A local check failed before any request was made (no request budget was spent).

    Attributes:
        field: the argument that failed the check, when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidIccidError(InvalidRequestError):
    """The ICCID is malformed: not 18-22 ASCII digits (the length range is configurable)."""

    def __init__(self, message: str, *, iccid: object = None) -> None:
        super().__init__(message, field="iccid")
        self.iccid = iccid


class WaitTimeoutError(EsimError, TimeoutError):
    """Waiting for something the provider pushes (an async order's webhook) timed out."""


class TransportError(EsimError):
    """The request did not produce a usable answer: network error, timeout or undecodable body."""


class OutcomeUnknownError(TransportError):
    """A write (order, top-up...) may or may not have taken effect, so it was not retried.

    Money may have been spent. Check before trying again, e.g. with
    ``client.orders.list(description=...)`` using the ``description`` you sent. The original
    error is ``__cause__``.
    """


class ApiError(EsimError):
    """The provider answered with an error status.

    A registered secret (the client secret, a bearer token) that the provider echoes back is
    shown as ``***`` in the description, ``message``, ``reason``, ``body`` and ``headers``.

    Attributes:
        status: HTTP status code.
        code: the provider's business code, when the body carries one.
        reason: the provider's reason text, when the body carries one.
        message: ``meta.message`` or ``message`` from the body, when present.
        body: the decoded JSON body (or the raw text when it was not JSON).
        headers: the response headers.
    """

    def __init__(
        self,
        description: str,
        *,
        status: int,
        code: int | str | None = None,
        reason: str | None = None,
        message: str | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        description, code, reason, message, body, shown = redact_deep(
            (description, code, reason, message, body, dict(headers or {}))
        )
        super().__init__(description)
        self.status = status
        self.code = code
        self.reason = reason
        self.message = message
        self.body = body
        self.headers: Mapping[str, str] = shown


class AuthenticationError(ApiError):
    """401/403, or a refused token request. ``code == 89`` means the IP is not allow-listed."""


class NotFoundError(ApiError):
    """404 with the provider's not-found body: the resource (e.g. the ICCID) does not exist
    for this account."""

    @classmethod
    def cached(cls, iccid: str) -> NotFoundError:
        """The error a remembered 404 for ``iccid`` answers with (no request was made)."""
        return cls(
            f"HTTP 404: ICCID {iccid} not found (cached answer)",
            status=404,
            message="messages.resource_not_found",
        )


class ValidationError(ApiError):
    """400/422 with a field map.

    Attributes:
        fields: field name -> list of messages (the API sends a string or a list of strings).
    """

    def __init__(self, description: str, *, fields: Mapping[str, list[str]], **kw: Any) -> None:
        super().__init__(description, **kw)
        self.fields: dict[str, list[str]] = redact_deep(
            {name: list(messages) for name, messages in fields.items()}
        )


class BusinessError(ApiError):
    """A ``{"code", "reason"}`` error from the provider (usually HTTP 422). ``code`` is kept as
    sent; the properties read a code sent as text (``"11"``) as its number."""

    @property
    def retryable(self) -> bool:
        """True when trying again later can succeed (codes 13, 33, 34, 53)."""
        return code_number(self.code) in RETRYABLE_BUSINESS_CODES

    @property
    def needs_credit(self) -> bool:
        """True for code 11: the account's credit is insufficient."""
        return code_number(self.code) == INSUFFICIENT_CREDIT_CODE

    @property
    def recycled(self) -> bool:
        """True for code 73: the eSIM was recycled and can no longer be used or topped up."""
        return code_number(self.code) == RECYCLED_CODE


def code_number(code: int | str | None) -> int | None:
    """A business code as a number: an ``int`` as it is, a text of ASCII digits (``"11"``,
    surrounding spaces allowed) as its value, anything else ``None``."""
    if isinstance(code, int):
        return code
    if isinstance(code, str):
        text = code.strip()
        if text.isascii() and text.isdigit() and len(text) <= 9:
            return int(text)
    return None


class EndpointNotFoundError(ApiError):
    """404 without the provider's not-found body (a JSON object with ``data``, ``meta`` or
    ``detail``): a proxy's or web server's page, or a framework's unknown-route answer. Most
    likely no API endpoint at that URL, which says nothing about the resource asked for: check
    ``base_url``, the path prefix and ``usage_path``. Never remembered as an unknown eSIM."""


class RateLimitedError(ApiError):
    """429 Too Many Attempts.

    Attributes:
        retry_after: seconds the server asked to wait, when it said so.
    """

    def __init__(self, description: str, *, retry_after: float | None, **kw: Any) -> None:
        super().__init__(description, **kw)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx from the provider."""


# --------------------------------------------------------------------------------------------
# Response -> exception


_any_decoder = msgspec.json.Decoder()


def _text(value: Any) -> str | None:
    """A message-like field as text: a string, or a list of them joined with ``"; "``."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, list):
        parts = [
            str(item)
            for item in value
            if isinstance(item, (str, int, float)) and not isinstance(item, bool)
        ]
        return "; ".join(part for part in parts if part) or None
    return None


def _code(value: Any) -> int | str | None:
    """A business code: an integer (also when sent as ``34.0``) or a string, as sent."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, str)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header: delta-seconds or an HTTP date.

    Returns seconds (>= 0) or ``None`` when the value is missing or unusable (negative, NaN,
    infinite, garbage). ``now`` is the wall time (POSIX seconds) an HTTP date is measured from
    (default: the system's, through :class:`~esim_async.clock.MonotonicClock`).
    """
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > 64:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None or when.tzinfo is None:
            return None
        reference = MonotonicClock().wall() if now is None else now
        return max(0.0, when.timestamp() - reference)
    return seconds if 0 <= seconds < math.inf else None  # (NaN is refused too)


def validation_error(summary: str, data: Any, **kw: Any) -> ValidationError:
    """The :class:`ValidationError` of the field map ``data`` (field -> messages, one sent
    alone becomes a list), its fields named after ``summary``; ``kw`` as :class:`ApiError`."""
    fields = {
        str(k): [str(x) for x in v] if isinstance(v, list) else [str(v)]
        for k, v in (data.items() if isinstance(data, Mapping) else ())
    }
    detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in fields.items())
    return ValidationError(f"{summary} ({detail})" if detail else summary, fields=fields, **kw)


#: A 404 body holding one of these keys is the provider's "not found" (Airalo's and PressOne's
#: ``data``/``meta`` envelope, the voice API's ``detail``); any other 404 (a web server's page, a
#: framework's unknown-route answer) is :class:`EndpointNotFoundError`.
_NOT_FOUND_KEYS = ("data", "meta", "detail")


def error_from_response(
    status: int,
    raw: bytes,
    headers: Mapping[str, str],
    *,
    token_request: bool = False,
    now: float | None = None,
) -> ApiError:
    """Build the typed error for an error response (status >= 400).

    ``now`` is the wall time (POSIX seconds) a ``Retry-After`` HTTP date is measured from: the
    client's clock's (see :func:`parse_retry_after`).

    Every field is read on its own, so one of an unexpected type (a ``message`` sent as a list,
    say) does not lose the others.
    """
    body: Any
    try:
        body = _any_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # not JSON, or nested beyond reading
        body = raw[:2048].decode("utf-8", "replace")
    top: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    meta = top.get("meta")
    message = (
        (_text(meta.get("message")) if isinstance(meta, Mapping) else None)
        or _text(top.get("message"))
        or _text(top.get("error"))
        or _text(top.get("detail"))
    )
    code = _code(top.get("code"))
    reason = _text(top.get("reason"))
    kw: dict[str, Any] = {
        "status": status,
        "code": code,
        "reason": reason,
        "message": message,
        "body": body,
        "headers": headers,
    }
    text = reason or message or ""
    summary = f"HTTP {status}" + (f": {text}" if text else "")

    if status in (401, 403) or (token_request and status in (400, 422)):
        if code_number(code) == IP_NOT_ALLOWED_CODE:
            summary += " (this IP is not on the account's allow-list)"
        elif token_request:
            summary = f"token request refused ({summary}); check client_id and client_secret"
        return AuthenticationError(summary, **kw)
    if status == 404:
        if any(key in top for key in _NOT_FOUND_KEYS):
            return NotFoundError(summary, **kw)
        return EndpointNotFoundError(
            f"{summary} (not the provider's not-found answer: probably no API endpoint at this "
            "URL; check base_url, the path prefix and usage_path)",
            **kw,
        )
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"), now=now)
        return RateLimitedError(summary, retry_after=retry_after, **kw)
    if status >= 500:
        return ServerError(summary, **kw)
    if code is not None:
        return BusinessError(summary, **kw)
    if status in (400, 422):
        return validation_error(summary, top.get("data"), **kw)
    return ApiError(summary, **kw)

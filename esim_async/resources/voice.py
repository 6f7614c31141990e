"""``client.voice`` (PressOne only): the voice-only eSIM API.

Its host, auth and most paths are unpublished: everything is configurable (``voice_base_url``,
``voice_api_key``, ``voice_paths``), extra keyword arguments pass through unchanged, and every
answer keeps its raw JSON beside a typed view.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from multidict import MultiDict

from .._secrets import redact_deep
from ..errors import InvalidRequestError, ValidationError, validation_error
from ..limits import Priority
from ..models.voice import (
    VoiceList,
    VoiceNumber,
    VoiceResult,
    VoiceUser,
    convert,
    fields_of,
    items_of,
    total_of,
)
from ..transport import Request, Transport
from ..validation import validate_email, validate_page_size, validate_text
from ._base import optional

if TYPE_CHECKING:
    from ..backends.base import RateLimiter

__all__ = ["DEFAULT_VOICE_PATHS", "VoiceResource", "check_voice_paths"]

#: Operation -> (method, path). Renew Number and List User are published; the others follow
#: the same style and can be overridden with ``voice_paths``.
DEFAULT_VOICE_PATHS: dict[str, tuple[str, str]] = {
    "available_numbers": ("GET", "/api/third-party/partner/available-numbers/"),
    "claim_number": ("POST", "/api/third-party/partner/claim-number/"),
    "renew_number": ("POST", "/api/third-party/partner/renew-number/"),
    "users": ("GET", "/api/third-party/partner/user/"),
}

_raw = msgspec.json.Decoder()

#: The operations that change something (a claim starts a subscription, a renewal is paid):
#: never retried once they may have reached the server, whatever method they are mapped to.
_WRITES = frozenset({"claim_number", "renew_number"})

#: The methods a voice operation may be mapped to.
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


def check_voice_paths(paths: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """``paths`` (operation -> ``(method, path)`` overrides) checked, methods upper-cased.

    Raises:
        InvalidRequestError: (``field="voice_paths"``) an operation the voice API does not
            have, or an entry that is not a ``(method, path)`` pair of a known HTTP method and
            an absolute path without spaces, control characters, ``?`` or ``#``.
    """
    unknown = sorted(str(name) for name in paths if name not in DEFAULT_VOICE_PATHS)
    if unknown:
        raise InvalidRequestError(
            f"voice_paths for unknown operations: {', '.join(unknown)} "
            f"(known: {', '.join(DEFAULT_VOICE_PATHS)})",
            field="voice_paths",
        )
    checked: dict[str, tuple[str, str]] = {}
    for operation, entry in paths.items():
        if (
            not isinstance(entry, tuple | list)
            or len(entry) != 2
            or not all(isinstance(part, str) for part in entry)
        ):
            raise InvalidRequestError(
                f"voice_paths[{operation!r}] must be a (method, path) pair of strings",
                field="voice_paths",
            )
        method, path = entry[0].upper(), entry[1]
        if method not in _METHODS:
            raise InvalidRequestError(
                f"voice_paths[{operation!r}]: method must be one of {', '.join(sorted(_METHODS))}",
                field="voice_paths",
            )
        if (
            not path.startswith("/")
            or not path.isprintable()
            or any(c in "?#" or c.isspace() for c in path)
        ):
            raise InvalidRequestError(
                f"voice path for {operation} must start with '/' and hold no spaces, control "
                "characters, '?' or '#'",
                field="voice_paths",
            )
        checked[operation] = (method, path)
    return checked


#: Keys of a voice error body that are not fields.
_NOT_FIELDS = frozenset({"code", "data", "detail", "error", "message", "meta", "reason", "status"})


def _named(error: ValidationError) -> ValidationError:
    """``error`` with the fields of its body when the voice API sent them as a bare field map
    (``{"email": ["This field is required."]}``, no ``data`` envelope); else ``error``."""
    body = error.body
    if error.fields or not isinstance(body, Mapping):
        return error
    fields = {k: v for k, v in body.items() if k not in _NOT_FIELDS and isinstance(v, str | list)}
    if not fields:
        return error
    return validation_error(
        str(error),
        fields,
        status=error.status,
        code=error.code,
        reason=error.reason,
        message=error.message,
        body=body,
        headers=error.headers,
    )


def _check_key(key: object) -> str:
    """The voice API key, usable in a header: visible ASCII, at least one character."""
    if not isinstance(key, str) or not key.strip():
        raise InvalidRequestError(
            "the voice API needs voice_api_key (PressOneClient(..., voice_api_key=...))",
            field="voice_api_key",
        )
    if not all("!" <= c <= "~" for c in key):
        # Never the value: it is a secret. A trailing newline (a key read from a file) is the
        # usual cause.
        raise InvalidRequestError(
            "voice_api_key must be visible ASCII, without spaces or line breaks",
            field="voice_api_key",
        )
    return key


def _query(params: Mapping[str, Any]) -> MultiDict[str] | None:
    """The query string of ``params``: ``None`` values left out, a list or tuple sent as the
    key repeated once per item; each item text, an integer, a finite number or a flag."""
    query: MultiDict[str] = MultiDict()
    for name, value in params.items():
        if value is None:
            continue
        for item in value if isinstance(value, list | tuple) else (value,):
            if not isinstance(item, str | int) and not (
                isinstance(item, float) and math.isfinite(item)
            ):
                raise InvalidRequestError(
                    f"{name} cannot be sent in a query string ({type(item).__name__})", field=name
                )
            query.add(name, str(item))
    return query or None


def _check_page(page_index: object, page_size: object) -> None:
    """``page_index`` a whole number from 0, ``page_size`` one from 1 (``None``: not sent)."""
    if page_index is not None and (
        isinstance(page_index, bool) or not isinstance(page_index, int) or page_index < 0
    ):
        raise InvalidRequestError(
            f"page_index must be an int from 0, got {page_index!r:.20}", field="page_index"
        )
    validate_page_size(page_size)


def _filled(value: object, field: str) -> None:
    """``value`` is text with something in it (a blank filter would filter nothing)."""
    if not validate_text(value, field=field).strip():
        raise InvalidRequestError(f"{field} must not be blank", field=field)


class VoiceResource:
    """The voice-only API: numbers, claims, renewals and users.

    ``page_index`` is sent as given (a whole number from 0): PressOne does not publish whether
    its pages count from 0 or 1. Its SDK's convention, and the emulator, count from 1 (0 reads
    as the first page there), so page with 1, 2, 3...
    """

    __slots__ = ("_api_key", "_limiter", "_paths", "_transport")

    def __init__(
        self,
        transport: Transport,
        limiter: RateLimiter,
        api_key: str | None,
        paths: Mapping[str, tuple[str, str]],
    ) -> None:
        """``paths``: overrides of :data:`DEFAULT_VOICE_PATHS`, as :func:`check_voice_paths`
        returns them (the client checks them when it is built)."""
        self._transport = transport
        self._limiter = limiter
        self._api_key = api_key
        self._paths = {**DEFAULT_VOICE_PATHS, **paths}

    def __repr__(self) -> str:
        return f"<VoiceResource {self._transport.base_url}>"

    async def _call(
        self,
        operation: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        key = _check_key(self._api_key)
        for name, value in (body or {}).items():
            try:  # (NaN and infinities refused too)
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError, RecursionError):
                raise InvalidRequestError(
                    f"{name} cannot be sent as JSON ({type(value).__name__})", field=name
                ) from None
        query = _query(params or {})
        method, path = self._paths[operation]
        request: Request[Any] = Request(
            method,
            path,
            _raw,
            limiter=self._limiter,
            priority=Priority.INTERACTIVE,
            idempotent=operation not in _WRITES,
            authenticated=False,
            params=query,
            json={k: v for k, v in (body or {}).items() if v is not None} if body else None,
            headers={"Authorization": f"Bearer {key}", "Pressone-X-Api-Key": key},
            # A write answered 2xx without a body (204 No Content) took effect.
            empty_ok=operation in _WRITES,
        )
        try:
            answer = await self._transport.request(request)
        except ValidationError as exc:
            named = _named(exc)
            if named is exc:
                raise
            raise named from exc
        # An answer that echoes a secret (the API key) keeps it only as "***".
        return redact_deep(answer)

    async def available_numbers(
        self, page_index: int | None = None, page_size: int | None = None, **extra: Any
    ) -> VoiceList[VoiceNumber]:
        """Numbers that can be claimed (``extra`` query keys pass through; a list or tuple
        value is sent as its key repeated). A number listed as bare text reads as a
        :class:`VoiceNumber` with that ``phone_number``."""
        _check_page(page_index, page_size)
        raw = await self._call(
            "available_numbers", params={"page_index": page_index, "page_size": page_size, **extra}
        )
        items = convert(items_of(raw, fields_of(VoiceNumber)), VoiceNumber, bare="phone_number")
        return VoiceList(items, raw, total_of(raw))

    async def claim_number(
        self,
        email: str,
        *,
        phone_number: str | None = None,
        mobile: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        **extra: Any,
    ) -> VoiceResult:
        """Claim a number for a user (``email`` is the key renewals use later)."""
        validate_email(email, field="email")
        fields = {
            "phone_number": phone_number,
            "mobile": mobile,
            "first_name": first_name,
            "last_name": last_name,
        }
        for name, value in fields.items():
            optional(validate_text, value, field=name)
        for name in ("phone_number", "mobile"):
            optional(_filled, fields[name], name)
        body = {"email": email, **fields, **extra}
        return VoiceResult(await self._call("claim_number", body=body))

    async def renew_number(self, email: str, **extra: Any) -> VoiceResult:
        """Renew the user's subscription on its current plan (a free trial becomes paid);
        ``email`` must be the one used to claim the number."""
        validate_email(email, field="email")
        return VoiceResult(await self._call("renew_number", body={"email": email, **extra}))

    async def users(
        self,
        *,
        mobile: str | None = None,
        email: str | None = None,
        page_index: int | None = None,
        page_size: int | None = None,
        **extra: Any,
    ) -> VoiceList[VoiceUser]:
        """Users who signed up through the partner, filtered by ``mobile`` or ``email`` (a
        blank filter is refused: the API would read it as none and list every user); ``extra``
        query keys pass through as in :meth:`available_numbers`."""
        if mobile is not None and email is not None:
            raise InvalidRequestError("filter by mobile or by email, not both", field="email")
        optional(validate_email, email, field="email")
        optional(_filled, mobile, "mobile")
        _check_page(page_index, page_size)
        raw = await self._call(
            "users",
            params={
                "mobile": mobile,
                "email": email,
                "page_index": page_index,
                "page_size": page_size,
                **extra,
            },
        )
        items = convert(items_of(raw, fields_of(VoiceUser)), VoiceUser)
        return VoiceList(items, raw, total_of(raw))

"""``client.voice`` (PressOne only): the voice-only eSIM API.

Its host, auth and most paths are unpublished: everything is configurable (``voice_base_url``,
``voice_api_key``, ``voice_paths``), extra keyword arguments pass through unchanged, and every
answer keeps its raw JSON beside a typed view.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import InvalidRequestError
from ..limits import Priority
from ..models.voice import (
    VoiceList,
    VoiceNumber,
    VoiceResult,
    VoiceUser,
    convert,
    items_of,
    total_of,
)
from ..transport import Request, Transport
from ..validation import validate_email, validate_text

if TYPE_CHECKING:
    from ..backends.base import RateLimiter

__all__ = ["DEFAULT_VOICE_PATHS", "VoiceResource"]

#: Operation -> (method, path). Renew Number and List User are published; the others follow
#: the same style and can be overridden with ``voice_paths``.
DEFAULT_VOICE_PATHS: dict[str, tuple[str, str]] = {
    "available_numbers": ("GET", "/api/third-party/partner/available-numbers/"),
    "claim_number": ("POST", "/api/third-party/partner/claim-number/"),
    "renew_number": ("POST", "/api/third-party/partner/renew-number/"),
    "users": ("GET", "/api/third-party/partner/user/"),
}

_raw = msgspec.json.Decoder()


class VoiceResource:
    """The voice-only API: numbers, claims, renewals and users."""

    __slots__ = ("_api_key", "_limiter", "_paths", "_transport")

    def __init__(
        self,
        transport: Transport,
        limiter: RateLimiter,
        api_key: str | None,
        paths: Mapping[str, tuple[str, str]],
    ) -> None:
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
        if not self._api_key:
            raise InvalidRequestError(
                "the voice API needs voice_api_key (PressOneClient(..., voice_api_key=...))",
                field="voice_api_key",
            )
        for name, value in (body or {}).items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise InvalidRequestError(
                    f"{name} cannot be sent as JSON ({type(value).__name__})", field=name
                ) from None
        method, path = self._paths[operation]
        if not path.startswith("/"):
            raise InvalidRequestError(
                f"voice path for {operation} must start with '/'", field="voice_paths"
            )
        request: Request[Any] = Request(
            method,
            path,
            _raw,
            limiter=self._limiter,
            priority=Priority.INTERACTIVE,
            idempotent=method == "GET",
            authenticated=False,
            params={k: str(v) for k, v in (params or {}).items() if v is not None} or None,
            json={k: v for k, v in (body or {}).items() if v is not None} if body else None,
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "Pressone-X-Api-Key": self._api_key,
            },
        )
        return await self._transport.request(request)

    async def available_numbers(
        self, page_index: int | None = None, page_size: int | None = None, **extra: Any
    ) -> VoiceList[VoiceNumber]:
        """Numbers that can be claimed (``extra`` query keys pass through)."""
        raw = await self._call(
            "available_numbers", params={"page_index": page_index, "page_size": page_size, **extra}
        )
        return VoiceList(convert(items_of(raw), VoiceNumber), raw, total_of(raw))

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
            if value is not None:
                validate_text(value, field=name)
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
        """Users who signed up through the partner, filtered by ``mobile`` or ``email``."""
        if mobile is not None and email is not None:
            raise InvalidRequestError("filter by mobile or by email, not both", field="email")
        if email is not None:
            validate_email(email, field="email")
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
        return VoiceList(convert(items_of(raw), VoiceUser), raw, total_of(raw))

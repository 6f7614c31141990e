"""``client.notifications``: webhook and e-mail notifications (Airalo)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Literal, get_args

import msgspec

from ..errors import InvalidRequestError
from ..models._base import Envelope
from ..models.account import Notification, NotificationData
from ..validation import (
    validate_choice,
    validate_email,
    validate_iccid,
    validate_text,
    validate_url,
)
from ._base import Resource, optional

__all__ = ["NotificationsResource"]

NotificationType = Literal[
    "async_orders",
    "webhook_low_data",
    "email_low_data",
    "webhook_credit_limit",
    "email_credit_limit",
]
SimulatedEvent = Literal[
    "low_data_notification", "credit_limit_notification", "async_order_notification"
]
LowDataType = Literal["data_75", "data_90", "expire_1", "expire_3"]
Level = Literal[50, 70, 80, 90]
TYPES: tuple[str, ...] = get_args(NotificationType)
EVENTS: tuple[str, ...] = get_args(SimulatedEvent)
LOW_DATA_TYPES: tuple[str, ...] = get_args(LowDataType)
LEVELS: tuple[int, ...] = get_args(Level)


class _Simulated(msgspec.Struct):
    success: str | None = None


class NotificationsResource(Resource):
    """Subscriptions to low-data, credit-limit and async-order notifications, and the webhook
    simulator."""

    __slots__ = ()

    async def opt_in(
        self,
        type: NotificationType,
        *,
        webhook_url: str | None = None,
        email: str | None = None,
        language: str | None = None,
        levels: Sequence[Level] | None = None,
    ) -> Notification:
        """Subscribe: ``webhook_*`` and ``async_orders`` need ``webhook_url`` (which must answer
        HEAD with 200), ``email_*`` need ``email``; credit-limit types accept ``levels``."""
        validate_choice(type, TYPES, field="type")
        body: dict[str, object] = {"type": type}
        if type.startswith("email_"):
            body["email"] = validate_email(email, field="email")
            body["language"] = optional(validate_text, language, field="language", max_length=16)
        else:
            body["webhook_url"] = validate_url(webhook_url, field="webhook_url")
        if levels is not None:
            if not type.endswith("credit_limit"):
                raise InvalidRequestError(
                    "levels apply to credit-limit notifications only", field="levels"
                )
            chosen = builtins.list(levels)
            if not chosen or any(level not in LEVELS for level in chosen):
                raise InvalidRequestError(
                    "levels must be a subset of 50, 70, 80, 90", field="levels"
                )
            body["levels"] = chosen
        data = await self._data(
            "notifications_opt_in",
            NotificationData,
            method="POST",
            body=body,
            encoding="json",
            idempotent=True,
        )
        return data.notification or Notification(type=type)

    async def get(self) -> Notification | None:
        """The current subscription, if any."""
        return (await self._data("notifications_opt_in", NotificationData)).notification

    async def opt_out(self, type: NotificationType) -> None:
        """Unsubscribe from ``type`` (the API answers 204)."""
        validate_choice(type, TYPES, field="type")
        await self._call(
            "notifications_opt_out",
            Envelope[object],
            method="POST",
            body={"type": type},
            encoding="json",
            idempotent=True,
            empty_ok=True,
        )

    async def simulate(
        self,
        event: SimulatedEvent,
        *,
        type: LowDataType | None = None,
        level: Level | None = None,
        iccid: str | None = None,
        webhook_url: str | None = None,
    ) -> str:
        """Have the provider push a test notification (no credit is used).

        ``type`` is required for ``low_data_notification``, ``level`` for
        ``credit_limit_notification``. Limited to 1 per 15 minutes (the stricter figure).
        """
        validate_choice(event, EVENTS, field="event")
        body: dict[str, object] = {"event": event}
        if event == "low_data_notification":
            body["type"] = validate_choice(type, LOW_DATA_TYPES, field="type")
        if event == "credit_limit_notification":
            if level not in LEVELS:
                raise InvalidRequestError("level must be 50, 70, 80 or 90", field="level")
            body["level"] = level
        # (absent fields are not sent; notification ICCIDs are not held to the usage path's
        # length rule)
        body["iccid"] = optional(validate_iccid, iccid, min_length=1, max_length=22)
        body["webhook_url"] = optional(validate_url, webhook_url, field="webhook_url")
        envelope: _Simulated = await self._call(
            "simulator",
            _Simulated,
            method="POST",
            body=body,
            encoding="json",
            idempotent=True,
        )
        return envelope.success or "Notification sent"

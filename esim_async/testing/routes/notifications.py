"""Notification endpoints: ``/notifications/opt-in`` (POST and GET),
``/notifications/opt-out`` and the webhook simulator ``/simulator/webhook``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..guard import Routes, guarded
from ..http import invalid, ok, read_body

__all__ = ["NOTIFICATION_TYPES", "SIMULATED_EVENTS", "NotificationRoutes"]

#: The notification types one can opt in to.
NOTIFICATION_TYPES = frozenset(
    {
        "async_orders",
        "webhook_low_data",
        "email_low_data",
        "webhook_credit_limit",
        "email_credit_limit",
    }
)
#: The simulator's events -> the notification type whose opt-in they are sent to.
SIMULATED_EVENTS = {
    "low_data_notification": "webhook_low_data",
    "credit_limit_notification": "webhook_credit_limit",
    "async_order_notification": "async_orders",
}


class NotificationRoutes(Routes):
    """Handlers for opt-in, opt-out and the webhook simulator."""

    __slots__ = ()

    def routes(self, prefix: str) -> list[web.RouteDef]:
        return [
            web.post(prefix + "/notifications/opt-in", self.opt_in),
            web.get(prefix + "/notifications/opt-in", self.get_opt_in),
            web.post(prefix + "/notifications/opt-out", self.opt_out),
            web.post(prefix + "/simulator/webhook", self.simulate),
        ]

    @guarded("notifications_opt_in")
    async def opt_in(self, request: web.Request) -> web.StreamResponse:
        """``POST /notifications/opt-in``: an e-mail for ``email_*`` types, else a webhook URL."""
        state = self.state
        body = await read_body(request)
        kind = body.get("type")
        if not isinstance(kind, str) or kind not in NOTIFICATION_TYPES:
            return invalid({"type": "The selected type is invalid."})
        by_email = str(kind).startswith("email_")
        contact = body.get("email") if by_email else body.get("webhook_url")
        if not contact:
            field = "email" if by_email else "webhook_url"
            return invalid({field: f"The {field.replace('_', ' ')} field is required."})
        notification: dict[str, Any] = {"type": kind, "contact_point": contact}
        if body.get("language"):
            notification["language"] = body["language"]
        if body.get("levels"):
            notification["levels"] = body["levels"]
        state.notifications[str(kind)] = notification
        return ok({"notification": notification})

    @guarded("notifications_opt_in")
    async def get_opt_in(self, request: web.Request) -> web.StreamResponse:
        """``GET /notifications/opt-in``: the latest opt-in, or ``null``."""
        current = next(reversed(self.state.notifications.values()), None)
        return ok({"notification": current})

    @guarded("notifications_opt_out")
    async def opt_out(self, request: web.Request) -> web.StreamResponse:
        """``POST /notifications/opt-out``: 204."""
        body = await read_body(request)
        kind = body.get("type")
        if not isinstance(kind, str) or kind not in NOTIFICATION_TYPES:
            return invalid({"type": "The selected type is invalid."})
        self.state.notifications.pop(kind, None)
        return web.Response(status=204)

    @guarded("simulator", limited=True)
    async def simulate(self, request: web.Request) -> web.StreamResponse:
        """``POST /simulator/webhook``: sends the event's documented payload, signed, to the
        given ``webhook_url`` or the opted-in one."""
        state = self.state
        body = await read_body(request)
        event = body.get("event")
        if event not in tuple(SIMULATED_EVENTS):
            return invalid({"event": "Event must be one of: " + ", ".join(SIMULATED_EVENTS)})
        kind = SIMULATED_EVENTS[str(event)]
        url = body.get("webhook_url") or (state.notifications.get(kind) or {}).get("contact_point")
        if not url:
            return web.json_response({"error": "User is not opted in"}, status=400)
        state.simulated.append({**body, "webhook_url": url})
        failed = await self.webhooks.deliver_simulated({**body, "webhook_url": url}, request)
        if failed is not None:
            return failed
        return web.json_response({"success": "Notification sent"})

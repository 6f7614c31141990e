"""The emulator's part-2 endpoints: future orders, vouchers, refunds, notifications, the
webhook simulator's request checks, balance, exchange rates, devices, and PressOne's voice API."""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..resources.refunds import REASONS
from .api import _ALPHABET, _business, _invalid, _now, _paginate
from .catalogue import find_package
from .fleet import Fleet

if TYPE_CHECKING:
    from ..limits import Rate

__all__ = ["VOICE_PREFIX", "MoreApiRoutes"]

VOICE_PREFIX = "/api/third-party/partner"
#: The documented refund reasons (one list, shared with the client's local check).
REFUND_REASONS = frozenset(REASONS)
NOTIFICATION_TYPES = frozenset(
    {
        "async_orders",
        "webhook_low_data",
        "email_low_data",
        "webhook_credit_limit",
        "email_credit_limit",
    }
)
DEVICES = [
    {"os": "android", "brand": "Samsung", "name": "Galaxy S21 5G"},
    {"os": "android", "brand": "Google", "name": "Pixel 8"},
    {"os": "ios", "brand": "Apple", "name": "iPhone 12 Pro Max"},
    {"os": "ios", "brand": "Apple", "name": "iPad mini 5th Gen"},
]


class MoreApiRoutes:
    """Handlers mixed into :class:`~esim_async.testing.Emulator`."""

    future_orders: dict[str, dict[str, Any]]
    notifications: dict[str, dict[str, Any]]
    refunds: list[dict[str, Any]]
    simulated: list[dict[str, Any]]
    voice_users: dict[str, dict[str, Any]]
    voice_api_key: str | None
    balance: float
    write_log: list[tuple[str, dict[str, Any]]]
    fleet: Fleet

    def _limit(self, name: str) -> Rate | None:
        raise NotImplementedError

    async def _guard(
        self, request: web.Request, endpoint: str, limits: Any = ()
    ) -> web.StreamResponse | None:
        raise NotImplementedError

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def async_webhook_url(self) -> str | None:
        """The URL opted in for ``async_orders``, if any."""
        opted = self.notifications.get("async_orders")
        return str(opted["contact_point"]) if opted else None

    def _now_utc(self) -> datetime:
        return datetime.now(UTC)

    async def _on_simulated(
        self, event: dict[str, Any], request: web.Request
    ) -> web.Response | None:
        """Deliver a simulated notification (the emulator signs and POSTs it)."""
        deliver = getattr(self, "deliver_simulated", None)
        if deliver is None:
            return None
        result: web.Response | None = await deliver(event, request)
        return result

    def more_routes(self, prefix: str) -> list[web.RouteDef]:
        return [
            web.post(prefix + "/future-orders", self._create_future_order),
            web.get(prefix + "/future-orders", self._list_future_orders),
            web.post(prefix + "/cancel-future-orders", self._cancel_future_orders),
            web.post(prefix + "/voucher/esim", self._esim_voucher),
            web.post(prefix + "/voucher/airmoney", self._airmoney_voucher),
            web.post(prefix + "/refund", self._refund),
            web.post(prefix + "/notifications/opt-in", self._opt_in),
            web.get(prefix + "/notifications/opt-in", self._get_opt_in),
            web.post(prefix + "/notifications/opt-out", self._opt_out),
            web.post(prefix + "/simulator/webhook", self._simulate),
            web.get(prefix + "/balance", self._balance),
            web.get(prefix + "/finance/exchange-rates", self._exchange_rates),
            web.get(prefix + "/compatible-devices-lite", self._devices),
        ]

    def voice_routes(self) -> list[web.RouteDef]:
        return [
            web.get(VOICE_PREFIX + "/available-numbers/", self._voice_numbers),
            web.post(VOICE_PREFIX + "/claim-number/", self._voice_claim),
            web.post(VOICE_PREFIX + "/renew-number/", self._voice_renew),
            web.get(VOICE_PREFIX + "/user/", self._voice_users),
        ]

    # ------------------------------------------------------------------ future orders

    async def _create_future_order(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "future_orders")
        if guard is not None:
            return guard
        body = await self._body(request)
        self.write_log.append(("future_orders", body))
        errors: dict[str, str] = {}
        found = find_package(str(body.get("package_id", "")))
        if found is None:
            return _business(
                34,
                "The requested eSIM package is invalid or it is currently out "
                "of stock. Please try again later.",
            )
        try:
            quantity = int(body.get("quantity", 0))
        except (TypeError, ValueError):
            quantity = 0
        if not 1 <= quantity <= 50:
            errors["quantity"] = "The quantity must be at least 1."
        try:
            due = datetime.strptime(str(body.get("due_date")), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
        except ValueError:
            errors["due_date"] = "The due date does not match the format Y-m-d H:i."
        else:
            if due.date() < (self._now_utc() + timedelta(days=2)).date():
                errors["due_date"] = (
                    "Minimum due date must be at least the day after tomorrow in UTC timezone."
                )
        if errors:
            return _invalid(errors)
        request_id = "".join(secrets.choice(_ALPHABET) for _ in range(25))
        item = {
            "request_id": request_id,
            "quantity": quantity,
            "description": body.get("description") or "",
            "status": "pending",
            "package_id": body["package_id"],
            "due_date": body["due_date"],
            "latest_cancellation_date": (due - timedelta(days=1)).strftime("%Y-%m-%d %H:%M"),
        }
        self.future_orders[request_id] = item
        return web.json_response(
            {
                "data": {
                    k: item[k] for k in ("request_id", "due_date", "latest_cancellation_date")
                },
                "meta": {"message": "success"},
            }
        )

    async def _list_future_orders(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "future_orders")
        if guard is not None:
            return guard
        status = request.query.get("status", "pending")
        items = [f for f in self.future_orders.values() if f["status"] == status]
        return web.json_response(_paginate(request, items, base="/future-orders"))

    async def _cancel_future_orders(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "cancel_future_orders")
        if guard is not None:
            return guard
        body = await self._body(request)
        ids = body.get("request_ids") or []
        errors = {}
        for n, rid in enumerate(ids):
            if len(str(rid)) != 25:
                errors[f"request_ids.{n}"] = "Each request ID must be exactly 25 characters long."
            elif rid not in self.future_orders:
                errors[f"request_ids.{n}"] = f"Request ID: {rid} does not exist."
            elif self.future_orders[rid]["status"] != "pending":
                errors[f"request_ids.{n}"] = (
                    f"Request ID: {rid} is already processed and can not be cancelled."
                )
        if errors or not ids:
            return _invalid(errors or {"request_ids": "The request ids field is required."})
        for rid in ids:
            self.future_orders[rid]["status"] = "cancelled"
        return web.json_response(
            {"data": [], "meta": {"message": "Future orders cancelled successfully"}}
        )

    # ------------------------------------------------------------------ vouchers, refunds

    async def _esim_voucher(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "voucher_esim")
        if guard is not None:
            return guard
        body = await self._body(request)
        self.write_log.append(("voucher_esim", body))
        out = []
        for n, line in enumerate(body.get("vouchers") or []):
            if find_package(str(line.get("package_id"))) is None:
                return _invalid(
                    {f"vouchers.{n}.package_id": f"The selected vouchers.{n}.package_id is invalid"}
                )
            codes = [
                "".join(secrets.choice(string.ascii_uppercase) for _ in range(8))
                for _ in range(int(line.get("quantity", 1)))
            ]
            out.append(
                {
                    "package_id": line["package_id"],
                    "codes": codes,
                    "booking_reference": line.get("booking_reference"),
                }
            )
        return web.json_response({"data": out, "meta": {"message": "success"}})

    async def _airmoney_voucher(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "voucher_airmoney")
        if guard is not None:
            return guard
        body = await self._body(request)
        self.write_log.append(("voucher_airmoney", body))
        return web.json_response(
            {
                "data": {
                    "id": len(self.write_log),
                    "code": body.get("voucher_code") or f"AIR{secrets.token_hex(3).upper()}",
                    "usage_limit": body.get("usage_limit"),
                    "amount": body.get("amount"),
                    "is_paid": bool(body.get("is_paid")),
                    "created_at": _now(),
                },
                "meta": {"message": "success"},
            }
        )

    async def _refund(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "refund", (("refund", "all", self._limit("refund")),))
        if guard is not None:
            return guard
        body = await self._body(request)
        self.write_log.append(("refund", body))
        iccids = body.get("iccids") or []
        if not iccids:
            return web.json_response(
                {"data": [], "meta": {"message": "The iccids field is required."}}, status=422
            )
        fleet = self.fleet
        foreign = [i for i in iccids if i not in fleet]
        if foreign:
            return web.json_response(
                {
                    "data": [],
                    "meta": {
                        "message": "The following ICCIDs do not belong to your company: "
                        + ", ".join(foreign)
                    },
                },
                status=422,
            )
        if body.get("reason") not in REFUND_REASONS:
            return _invalid({"reason": "The selected reason is invalid."})
        refund = {"refund_id": str(10000 + len(self.refunds)), "created_at": _now()[:16]}
        self.refunds.append({**refund, **body})
        return web.json_response({"data": refund, "meta": {"message": "success"}}, status=202)

    # ------------------------------------------------------------------ notifications

    async def _opt_in(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "notifications_opt_in")
        if guard is not None:
            return guard
        body = await self._body(request)
        kind = body.get("type")
        if kind not in NOTIFICATION_TYPES:
            return _invalid({"type": "The selected type is invalid."})
        contact = body.get("email") if str(kind).startswith("email_") else body.get("webhook_url")
        if not contact:
            field = "email" if str(kind).startswith("email_") else "webhook_url"
            return _invalid({field: f"The {field.replace('_', ' ')} field is required."})
        notification: dict[str, Any] = {"type": kind, "contact_point": contact}
        if body.get("language"):
            notification["language"] = body["language"]
        if body.get("levels"):
            notification["levels"] = body["levels"]
        self.notifications[str(kind)] = notification
        return web.json_response(
            {"data": {"notification": notification}, "meta": {"message": "success"}}
        )

    async def _get_opt_in(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "notifications_opt_in")
        if guard is not None:
            return guard
        current = next(reversed(self.notifications.values()), None)
        return web.json_response(
            {"data": {"notification": current}, "meta": {"message": "success"}}
        )

    async def _opt_out(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "notifications_opt_out")
        if guard is not None:
            return guard
        body = await self._body(request)
        if body.get("type") not in NOTIFICATION_TYPES:
            return _invalid({"type": "The selected type is invalid."})
        self.notifications.pop(str(body["type"]), None)
        return web.Response(status=204)

    async def _simulate(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(
            request, "simulator", (("simulator", "all", self._limit("simulator")),)
        )
        if guard is not None:
            return guard
        body = await self._body(request)
        event = body.get("event")
        if event not in (
            "low_data_notification",
            "credit_limit_notification",
            "async_order_notification",
        ):
            return _invalid(
                {
                    "event": "Event must be one of: low_data_notification, "
                    "credit_limit_notification, async_order_notification"
                }
            )
        kind = {
            "low_data_notification": "webhook_low_data",
            "credit_limit_notification": "webhook_credit_limit",
            "async_order_notification": "async_orders",
        }[str(event)]
        url = body.get("webhook_url") or (self.notifications.get(kind) or {}).get("contact_point")
        if not url:
            return web.json_response({"error": "User is not opted in"}, status=400)
        self.simulated.append({**body, "webhook_url": url})
        failed = await self._on_simulated({**body, "webhook_url": url}, request)
        if failed is not None:
            return failed
        return web.json_response({"success": "Notification sent"})

    # ------------------------------------------------------------------ account, devices

    async def _balance(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "balance")
        if guard is not None:
            return guard
        return web.json_response(
            {
                "data": {
                    "balances": {
                        "name": "main",
                        "availableBalance": {"amount": self.balance, "currency": "USD"},
                    }
                },
                "meta": {"message": "success"},
            }
        )

    async def _exchange_rates(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "exchange_rates")
        if guard is not None:
            return guard
        rates = {"AUD": "1.6059162", "GBP": "0.80433592", "EUR": "0.96191527"}
        wanted = [c for c in request.query.get("to", "").split(",") if c] or list(rates)
        return web.json_response(
            {
                "data": {
                    "date": request.query.get("date", self._now_utc().date().isoformat()),
                    "rates": [{"from": "USD", "mid": rates.get(c, "1.0"), "to": c} for c in wanted],
                },
                "meta": {"message": "success"},
            }
        )

    async def _devices(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "compatible_devices")
        if guard is not None:
            return guard
        return web.json_response({"data": DEVICES})

    # ------------------------------------------------------------------ PressOne voice

    def _voice_auth(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("Pressone-X-Api-Key", "")
        bearer = request.headers.get("Authorization", "")
        expected = self.voice_api_key
        if not key or bearer != f"Bearer {key}" or (expected is not None and key != expected):
            return web.json_response({"detail": "Invalid API key."}, status=401)
        return None

    async def _voice_numbers(self, request: web.Request) -> web.StreamResponse:
        denied = self._voice_auth(request)
        if denied is not None:
            return denied
        size = int(request.query.get("page_size", "10"))
        numbers = [
            {"phone_number": f"+234800000{n:04d}", "country_code": "NG"}
            for n in range(25)
            if f"+234800000{n:04d}"
            not in {u.get("phone_number") for u in self.voice_users.values()}
        ]
        return web.json_response({"data": numbers[:size], "total": len(numbers), "page_size": size})

    async def _voice_claim(self, request: web.Request) -> web.StreamResponse:
        denied = self._voice_auth(request)
        if denied is not None:
            return denied
        body = await self._body(request)
        email = body.get("email")
        if not email:
            return web.json_response({"email": ["This field is required."]}, status=400)
        user = {
            "id": len(self.voice_users) + 1,
            "email": email,
            "mobile": body.get("mobile"),
            "first_name": body.get("first_name"),
            "last_name": body.get("last_name"),
            "phone_number": body.get("phone_number"),
            "subscription": {"status": "trial", "plan": "basic", "renewed": 0},
        }
        self.voice_users[str(email)] = user
        return web.json_response({"message": "Number claimed", "data": user}, status=201)

    async def _voice_renew(self, request: web.Request) -> web.StreamResponse:
        denied = self._voice_auth(request)
        if denied is not None:
            return denied
        body = await self._body(request)
        user = self.voice_users.get(str(body.get("email")))
        if user is None:
            return web.json_response(
                {"message": "No number was claimed with this email."}, status=404
            )
        user["subscription"] = {
            **user["subscription"],
            "status": "active",
            "renewed": user["subscription"]["renewed"] + 1,
        }
        return web.json_response({"message": "Subscription renewed", "data": user})

    async def _voice_users(self, request: web.Request) -> web.StreamResponse:
        denied = self._voice_auth(request)
        if denied is not None:
            return denied
        users = list(self.voice_users.values())
        for key in ("email", "mobile"):
            if request.query.get(key):
                users = [u for u in users if u.get(key) == request.query[key]]
        return web.json_response({"data": users, "total": len(users)})

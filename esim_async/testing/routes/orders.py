"""Order endpoints: ``/orders`` (sync, async, list, one, top-up), ``/future-orders``,
``/cancel-future-orders`` and the vouchers.

Behaviour follows the documented rules: quantity 1-50, business codes for the sandbox's error
packages, code 73 for recycled eSIMs, future orders due the day after tomorrow at the earliest.
"""

from __future__ import annotations

import re
import secrets
import string
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from ..catalogue import PACKAGES, topups_for
from ..fleet import INSTALL_WINDOW, Fleet, SimRecord, stamp
from ..guard import Routes, guarded
from ..http import (
    business,
    invalid,
    new_request_id,
    not_found,
    now_stamp,
    ok,
    paginate,
    read_body,
    recycled,
    sim_json,
    utc_now,
)

__all__ = [
    "ERROR_PACKAGES",
    "MAX_QUANTITY",
    "MAX_VOUCHER_QUANTITY",
    "OrderRoutes",
    "whole_number",
]

#: Sandbox error-simulation packages -> (business code, reason).
ERROR_PACKAGES = {
    "test-insufficient-balance-7days-1gb": (11, "Insufficient Airalo Credit: 0.00 USD"),
    "test-maintenance-mode-7days-1gb": (
        13,
        "The requested operator is currently undergoing maintenance. Please try again later.",
    ),
    "test-not-enough-7days-1gb": (
        33,
        "Insufficient stock of eSIMs remaining: 0. Please try your request again later.",
    ),
    "test-out-of-stock-7days-1gb": (
        34,
        "The requested eSIM package is invalid or it is currently out of stock. Please try "
        "again later.",
    ),
}
#: Most eSIMs one order (or future order) may ask for.
MAX_QUANTITY = 50
#: Most codes one voucher line may ask for (the official SDK's cap).
MAX_VOUCHER_QUANTITY = 100
_WHOLE = re.compile(r"[+-]?[0-9]+")


def whole_number(value: Any) -> int | None:
    """``value`` as Laravel's ``integer`` rule reads it: an int, an integral float or a string
    of ASCII digits; ``None`` for anything else (a fraction, text, a list...)."""
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        return int(value.strip())
    return None


class OrderRoutes(Routes):
    """Handlers for orders, future orders and vouchers."""

    __slots__ = ()

    def routes(self, prefix: str) -> list[web.RouteDef]:
        return [
            web.post(prefix + "/orders", self.create_order),
            web.post(prefix + "/orders-async", self.create_async_order),
            web.get(prefix + "/orders", self.list_orders),
            web.post(prefix + "/orders/topups", self.topup),
            web.get(prefix + "/orders/{order_id}", self.get_order),
            web.post(prefix + "/future-orders", self.create_future_order),
            web.get(prefix + "/future-orders", self.list_future_orders),
            web.post(prefix + "/cancel-future-orders", self.cancel_future_orders),
            web.post(prefix + "/voucher/esim", self.esim_voucher),
            web.post(prefix + "/voucher/airmoney", self.airmoney_voucher),
        ]

    # ------------------------------------------------------------------ building orders

    def new_sims(self, package: dict[str, Any], quantity: int) -> list[SimRecord]:
        """``quantity`` fresh, not yet installed eSIMs on ``package``, added to the fleet."""
        state = self.state
        sims = []
        now = utc_now()
        for _ in range(quantity):
            iccid = Fleet.make_iccid(next(state.iccid_numbers))
            # Not installed yet: it can be until the end of the install window.
            sim = SimRecord(
                iccid,
                "not_active",
                package["amount"],
                package["amount"],
                "NOT_ACTIVE",
                stamp(now + INSTALL_WINDOW),
                package["is_unlimited"],
                created_at=stamp(now),
            )
            sim.package_id = package["id"]
            state.fleet.add(sim)
            sims.append(sim)
        return sims

    def record_order(
        self,
        package: dict[str, Any],
        quantity: int,
        sims: list[SimRecord],
        description: str | None,
        kind: str,
    ) -> dict[str, Any]:
        """A completed order in the documented shape, numbered and kept in ``state.orders``."""
        state = self.state
        order_id = next(state.order_ids)
        order = {
            "id": order_id,
            "code": f"{utc_now():%Y%m%d}-{order_id:06d}",
            "currency": "USD",
            "package_id": package["id"],
            "quantity": quantity,
            "type": kind,
            "description": description,
            "esim_type": "Prepaid",
            "validity": package["day"],
            "package": package["title"],
            "data": package["data"],
            "price": package["price"],
            "net_price": package["net_price"],
            "pricing_model": "net_pricing",
            "created_at": now_stamp(),
            "manual_installation": "<p>Settings &gt; Cellular &gt; Add Plan</p>",
            "qrcode_installation": "<p>Scan the QR code</p>",
            "installation_guides": {"en": "https://emulator.test/guide"},
            "text": package["text"],
            "voice": package["voice"],
            "brand_settings_name": None,
            "sims": [{k: v for k, v in sim_json(s).items() if k != "order"} for s in sims],
            "status": {"name": "Completed", "slug": "completed"},
        }
        state.orders[order_id] = order
        return order

    @staticmethod
    def validate_order(body: dict[str, Any]) -> web.Response | tuple[dict[str, Any], int]:
        """The (package, quantity) an order body asks for, or the 422 that refuses it."""
        package_id = body.get("package_id")
        if package_id in ERROR_PACKAGES:
            return business(*ERROR_PACKAGES[str(package_id)])
        errors: dict[str, str] = {}
        found = PACKAGES.get(str(package_id)) if package_id else None
        if not package_id:
            errors["package_id"] = "The package id field is required."
        elif found is None or found[1]["type"] != "sim":
            errors["package_id"] = "The selected package is invalid."
        asked = whole_number(body.get("quantity"))
        quantity = asked or 0
        if asked is None:
            errors["quantity"] = "The quantity must be an integer."
        elif quantity > MAX_QUANTITY:
            errors["quantity"] = f"The quantity may not be greater than {MAX_QUANTITY}."
        elif quantity < 1:
            errors["quantity"] = "The quantity must be at least 1."
        if body.get("to_email") and not body.get("sharing_option"):
            errors["sharing_option"] = (
                "The sharing option field is required when to email is present."
            )
        if errors or found is None:
            return invalid(errors)
        return found[1], quantity

    # ------------------------------------------------------------------ orders

    @guarded("orders")
    async def create_order(self, request: web.Request) -> web.StreamResponse:
        """``POST /orders``: the eSIMs are made at once and join the fleet."""
        body = await self.recorded_body(request, "orders")
        checked = self.validate_order(body)
        if isinstance(checked, web.Response):
            return checked
        package, quantity = checked
        sims = self.new_sims(package, quantity)
        order = self.record_order(package, quantity, sims, body.get("description"), "sim")
        return ok(order)

    @guarded("orders_async")
    async def create_async_order(self, request: web.Request) -> web.StreamResponse:
        """``POST /orders-async``: 202 with a request id; the order is POSTed to the webhook."""
        state = self.state
        body = await self.recorded_body(request, "orders_async")
        checked = self.validate_order(body)
        if isinstance(checked, web.Response):
            return checked
        opted_in = state.opted_in_url("async_orders")
        if not body.get("webhook_url") and not opted_in:
            return web.json_response(
                {"reason": "User is not opted in and no webhook URL provided."}, status=422
            )
        package, quantity = checked
        request_id = new_request_id()
        state.async_requests[request_id] = {"package": package, "quantity": quantity, "body": body}
        url = body.get("webhook_url") or opted_in
        if state.deliver_async_orders and url:
            sims = self.new_sims(package, quantity)
            order = self.record_order(package, quantity, sims, body.get("description"), "sim")
            payload = {"data": {**order, "request_id": request_id}, "meta": {"message": "success"}}
            webhooks = self.webhooks
            webhooks.schedule(
                str(url), payload, webhooks.secret_for(request), state.async_order_delay
            )
        return ok({"request_id": request_id, "accepted_at": now_stamp()}, status=202)

    @guarded("orders")
    async def list_orders(self, request: web.Request) -> web.StreamResponse:
        """``GET /orders``: newest first, filtered by description, code and ICCID (LIKE)."""
        q = request.query
        orders = sorted(self.state.orders.values(), key=lambda o: -int(o["id"]))

        def like(field: str, value: str | None, order: dict[str, Any]) -> bool:
            return value is None or value.lower() in str(order.get(field) or "").lower()

        desc, code = q.get("filter[description]"), q.get("filter[code]")
        iccid = q.get("filter[iccid]")
        orders = [
            o
            for o in orders
            if like("description", desc, o)
            and like("code", code, o)
            and (iccid is None or any(iccid in s["iccid"] for s in o["sims"]))
        ]
        return web.json_response(paginate(request, orders, base="/orders"))

    @guarded("order")
    async def get_order(self, request: web.Request) -> web.StreamResponse:
        """``GET /orders/{order_id}``."""
        try:
            order = self.state.orders.get(int(request.match_info["order_id"]))
        except ValueError:
            order = None
        if order is None:
            return not_found()
        return ok(order)

    @guarded("topup_order")
    async def topup(self, request: web.Request) -> web.StreamResponse:
        """``POST /orders/topups``: only a top-up offered for that eSIM; a lapsed eSIM
        restarts with the top-up's validity."""
        state = self.state
        body = await self.recorded_body(request, "topup_order")
        errors = {
            f: f"The {f.replace('_', ' ')} field is required."
            for f in ("package_id", "iccid")
            if not body.get(f)
        }
        if errors:
            return invalid(errors)
        sim = state.fleet.get(str(body["iccid"]))
        if sim is None:
            return invalid({"iccid": "The selected iccid is invalid."})
        if sim.status == "RECYCLED":
            return recycled(sim)
        offered = {p["id"]: p for p in topups_for(sim.package_id)}
        package = offered.get(str(body["package_id"]))
        if package is None:
            return invalid({"package_id": "invalid topup package"})
        sim.topups.append(package["id"])
        sim.remaining += package["amount"]
        sim.total += package["amount"]
        if sim.status in ("FINISHED", "EXPIRED"):
            # The top-up starts now and runs its own validity.
            now = utc_now()
            sim.status = "ACTIVE"
            sim.activated_at = stamp(now)
            sim.expired_at = stamp(now + timedelta(days=int(package["day"])))
        order = self.record_order(package, 1, [], body.get("description"), "topup")
        return ok(order)

    # ------------------------------------------------------------------ future orders

    @guarded("future_orders")
    async def create_future_order(self, request: web.Request) -> web.StreamResponse:
        """``POST /future-orders``: due ``"Y-m-d H:i"`` (UTC), the day after tomorrow or later."""
        state = self.state
        body = await self.recorded_body(request, "future_orders")
        errors: dict[str, str] = {}
        found = PACKAGES.get(str(body.get("package_id", "")))
        if found is None:
            return business(*ERROR_PACKAGES["test-out-of-stock-7days-1gb"])
        quantity = whole_number(body.get("quantity", 0)) or 0
        if not 1 <= quantity <= MAX_QUANTITY:
            errors["quantity"] = "The quantity must be at least 1."
        try:
            due = datetime.strptime(str(body.get("due_date")), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
        except ValueError:
            errors["due_date"] = "The due date does not match the format Y-m-d H:i."
        else:
            if due.date() < (utc_now() + timedelta(days=2)).date():
                errors["due_date"] = (
                    "Minimum due date must be at least the day after tomorrow in UTC timezone."
                )
        if errors:
            return invalid(errors)
        request_id = new_request_id()
        item = {
            "request_id": request_id,
            "quantity": quantity,
            "description": body.get("description") or "",
            "status": "pending",
            "package_id": body["package_id"],
            "due_date": body["due_date"],
            "latest_cancellation_date": (due - timedelta(days=1)).strftime("%Y-%m-%d %H:%M"),
        }
        state.future_orders[request_id] = item
        return ok({k: item[k] for k in ("request_id", "due_date", "latest_cancellation_date")})

    @guarded("future_orders")
    async def list_future_orders(self, request: web.Request) -> web.StreamResponse:
        """``GET /future-orders``: by ``status`` (default ``pending``), paginated."""
        status = request.query.get("status", "pending")
        items = [f for f in self.state.future_orders.values() if f["status"] == status]
        return web.json_response(paginate(request, items, base="/future-orders"))

    @guarded("cancel_future_orders")
    async def cancel_future_orders(self, request: web.Request) -> web.StreamResponse:
        """``POST /cancel-future-orders``: every id must exist and still be pending."""
        state = self.state
        body = await read_body(request)
        ids = body.get("request_ids") or []
        errors = {}
        for n, rid in enumerate(ids):
            if len(str(rid)) != 25:
                errors[f"request_ids.{n}"] = "Each request ID must be exactly 25 characters long."
            elif rid not in state.future_orders:
                errors[f"request_ids.{n}"] = f"Request ID: {rid} does not exist."
            elif state.future_orders[rid]["status"] != "pending":
                errors[f"request_ids.{n}"] = (
                    f"Request ID: {rid} is already processed and can not be cancelled."
                )
        if errors or not ids:
            return invalid(errors or {"request_ids": "The request ids field is required."})
        for rid in ids:
            state.future_orders[rid]["status"] = "cancelled"
        return ok([], "Future orders cancelled successfully")

    # ------------------------------------------------------------------ vouchers

    @guarded("voucher_esim")
    async def esim_voucher(self, request: web.Request) -> web.StreamResponse:
        """``POST /voucher/esim``: codes for catalogue packages, 1 to
        :data:`MAX_VOUCHER_QUANTITY` per line (422 naming the line otherwise)."""
        body = await self.recorded_body(request, "voucher_esim")
        out = []
        lines = body.get("vouchers") or []
        if not isinstance(lines, list):
            return invalid({"vouchers": "The vouchers must be an array."})
        for n, line in enumerate(lines):
            if not isinstance(line, dict):
                return invalid({f"vouchers.{n}": f"The vouchers.{n} must be an array."})
            if str(line.get("package_id")) not in PACKAGES:
                return invalid(
                    {f"vouchers.{n}.package_id": f"The selected vouchers.{n}.package_id is invalid"}
                )
            quantity = whole_number(line.get("quantity", 1))
            if quantity is None or not 1 <= quantity <= MAX_VOUCHER_QUANTITY:
                return invalid(
                    {
                        f"vouchers.{n}.quantity": f"The vouchers.{n}.quantity must be an integer "
                        f"between 1 and {MAX_VOUCHER_QUANTITY}."
                    }
                )
            codes = [
                "".join(secrets.choice(string.ascii_uppercase) for _ in range(8))
                for _ in range(quantity)
            ]
            out.append(
                {
                    "package_id": line["package_id"],
                    "codes": codes,
                    "booking_reference": line.get("booking_reference"),
                }
            )
        return ok(out)

    @guarded("voucher_airmoney")
    async def airmoney_voucher(self, request: web.Request) -> web.StreamResponse:
        """``POST /voucher/airmoney``: echoes the voucher, with a code if none was given."""
        body = await self.recorded_body(request, "voucher_airmoney")
        return ok(
            {
                "id": len(self.state.write_log),
                "code": body.get("voucher_code") or f"AIR{secrets.token_hex(3).upper()}",
                "usage_limit": body.get("usage_limit"),
                "amount": body.get("amount"),
                "is_paid": bool(body.get("is_paid")),
                "created_at": now_stamp(),
            }
        )

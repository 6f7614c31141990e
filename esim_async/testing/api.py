"""The emulator's catalogue, order and eSIM endpoints (everything but token and usage).

Shapes follow the providers' documented payloads; behaviour follows their documented rules:
quantity 1-50, business codes for the sandbox's error packages, code 73 for recycled eSIMs,
Laravel pagination (``limit``/``page``; pages >= 2 of the catalogue can key items by index).
"""

from __future__ import annotations

import itertools
import json
import secrets
import string
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .catalogue import catalogue_entries, find_package, topups_for
from .fleet import INSTALL_WINDOW, Fleet, SimRecord, stamp

if TYPE_CHECKING:
    from ..limits import Rate

__all__ = ["ApiRoutes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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
_NOT_FOUND = {"data": [], "meta": {"message": "messages.resource_not_found"}}
_ALPHABET = string.ascii_letters + string.digits + "-_"


def _now() -> str:
    return stamp(datetime.now(UTC))


def _iso(when: str | None) -> str | None:
    """A ``"YYYY-MM-DD HH:MM:SS"`` UTC stamp as ISO-8601 with offset (package history dates)."""
    if when is None:
        return None
    return datetime.strptime(when, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).isoformat()


def _invalid(fields: dict[str, str]) -> web.Response:
    return web.json_response(
        {"data": fields, "meta": {"message": "the parameter is invalid"}}, status=422
    )


def _business(code: int, reason: str) -> web.Response:
    return web.json_response({"code": code, "reason": reason}, status=422)


def _paginate(
    request: web.Request, items: list[Any], *, base: str, object_pages: bool = False
) -> dict[str, Any]:
    try:
        limit = int(request.query.get("limit", "25"))
        page = int(request.query.get("page", "1"))
    except ValueError:
        raise web.HTTPUnprocessableEntity(
            text=json.dumps(
                {
                    "data": {"limit": "The limit must be an integer."},
                    "meta": {"message": "the parameter is invalid"},
                }
            ),
            content_type="application/json",
        ) from None
    limit = max(1, limit)
    last = max(1, -(-len(items) // limit))
    chunk = items[(page - 1) * limit : page * limit]
    start = (page - 1) * limit
    data: Any = chunk
    if object_pages and page >= 2:
        # The documented quirk: later catalogue pages key items by their index.
        data = {str(start + i): item for i, item in enumerate(chunk)}
    # `links` deliberately name another host: clients must not follow them.
    other = "https://sandbox-partners-api.airalo.com/v1"
    return {
        "data": data,
        "links": {
            "first": f"{other}{base}?page=1",
            "last": f"{other}{base}?page={last}",
            "prev": f"{other}{base}?page={page - 1}" if page > 1 else None,
            "next": f"{other}{base}?page={page + 1}" if page < last else None,
        },
        "meta": {
            "message": "success",
            "current_page": page,
            "from": start + 1 if chunk else None,
            "last_page": last,
            "path": f"{other}{base}",
            "per_page": str(limit),
            "to": start + len(chunk) if chunk else None,
            "total": len(items),
        },
    }


class ApiRoutes:
    """Handlers mixed into :class:`~esim_async.testing.Emulator`."""

    fleet: Fleet
    orders: dict[int, dict[str, Any]]
    async_requests: dict[str, dict[str, Any]]
    packages_page_as_object: bool
    write_log: list[tuple[str, dict[str, Any]]]
    _order_ids: itertools.count[int]
    _iccid_numbers: itertools.count[int]

    # provided by the Emulator
    async def _guard(
        self,
        request: web.Request,
        endpoint: str,
        limits: tuple[tuple[str, str, Rate | None], ...] = (),
    ) -> web.StreamResponse | None:
        raise NotImplementedError

    def _limit(self, name: str) -> Rate | None:
        raise NotImplementedError

    def api_routes(self, prefix: str) -> list[web.RouteDef]:
        return [
            web.get(prefix + "/packages", self._packages),
            web.get(prefix + "/packages/{slug}/product-information", self._product_information),
            web.post(prefix + "/orders", self._create_order),
            web.post(prefix + "/orders-async", self._create_async_order),
            web.get(prefix + "/orders", self._list_orders),
            web.post(prefix + "/orders/topups", self._topup),
            web.get(prefix + "/orders/{order_id}", self._get_order),
            web.get(prefix + "/sims", self._list_sims),
            web.get(prefix + "/sims/{iccid}", self._get_sim),
            web.get(prefix + "/sims/{iccid}/topups", self._sim_topups),
            web.get(prefix + "/sims/{iccid}/packages", self._package_history),
            web.get(prefix + "/sims/{iccid}/instructions", self._instructions),
            web.put(prefix + "/sims/{iccid}/brand", self._brand),
        ]

    # ------------------------------------------------------------------ helpers

    async def _body(self, request: web.Request) -> dict[str, Any]:
        """A JSON or form body as a dict (form ``name[]`` fields become lists)."""
        if request.content_type == "application/json":
            body = await request.json()
            return body if isinstance(body, dict) else {}
        form = await request.post()
        out: dict[str, Any] = {}
        for key in form:
            values = [str(v) for v in form.getall(key)]
            if key.endswith("[]"):
                out[key[:-2]] = values
            else:
                out[key] = values[-1]
        return out

    def _sim_json(self, sim: SimRecord) -> dict[str, Any]:
        return {
            "id": int(sim.iccid[-6:]),
            "created_at": sim.created_at,
            "iccid": sim.iccid,
            "lpa": "lpa.emulator.test",
            "imsis": None,
            "matching_id": f"M{sim.iccid[-8:]}",
            "qrcode": f"LPA:1$lpa.emulator.test$M{sim.iccid[-8:]}",
            "qrcode_url": f"https://emulator.test/qr/{sim.iccid}",
            "direct_apple_installation_url": None,
            "voucher_code": None,
            "airalo_code": None,
            "apn_type": "automatic",
            "apn_value": None,
            "is_roaming": True,
            "confirmation_code": None,
            "order": None,
            "brand_settings_name": sim.brand_settings_name,
            "recycled": sim.status == "RECYCLED",
            "recycled_at": sim.recycled_at if sim.status == "RECYCLED" else None,
        }

    def _order_json(
        self,
        package: dict[str, Any],
        quantity: int,
        sims: list[SimRecord],
        description: str | None,
        kind: str,
    ) -> dict[str, Any]:
        order_id = next(self._order_ids)
        order = {
            "id": order_id,
            "code": f"{datetime.now(UTC):%Y%m%d}-{order_id:06d}",
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
            "created_at": _now(),
            "manual_installation": "<p>Settings &gt; Cellular &gt; Add Plan</p>",
            "qrcode_installation": "<p>Scan the QR code</p>",
            "installation_guides": {"en": "https://emulator.test/guide"},
            "text": package["text"],
            "voice": package["voice"],
            "brand_settings_name": None,
            "sims": [{k: v for k, v in self._sim_json(s).items() if k != "order"} for s in sims],
            "status": {"name": "Completed", "slug": "completed"},
        }
        self.orders[order_id] = order
        return order

    def _new_sims(self, package: dict[str, Any], quantity: int) -> list[SimRecord]:
        sims = []
        now = datetime.now(UTC)
        for _ in range(quantity):
            iccid = Fleet.make_iccid(next(self._iccid_numbers))
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
            self.fleet.add(sim)
            sims.append(sim)
        return sims

    def _validate_order(self, body: dict[str, Any]) -> web.Response | tuple[dict[str, Any], int]:
        package_id = body.get("package_id")
        if package_id in ERROR_PACKAGES:
            return _business(*ERROR_PACKAGES[str(package_id)])
        errors: dict[str, str] = {}
        found = find_package(str(package_id)) if package_id else None
        if not package_id:
            errors["package_id"] = "The package id field is required."
        elif found is None or found[1]["type"] != "sim":
            errors["package_id"] = "The selected package is invalid."
        try:
            quantity = int(body.get("quantity", ""))
        except (TypeError, ValueError):
            quantity = 0
            errors["quantity"] = "The quantity must be an integer."
        else:
            if quantity > 50:
                errors["quantity"] = "The quantity may not be greater than 50."
            elif quantity < 1:
                errors["quantity"] = "The quantity must be at least 1."
        if body.get("to_email") and not body.get("sharing_option"):
            errors["sharing_option"] = (
                "The sharing option field is required when to email is present."
            )
        if errors or found is None:
            return _invalid(errors)
        return found[1], quantity

    # ------------------------------------------------------------------ catalogue

    async def _packages(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(
            request, "packages", (("packages", "all", self._limit("packages")),)
        )
        if guard is not None:
            return guard
        q = request.query
        kind = q.get("filter[type]")
        if kind is not None and kind not in ("local", "global"):
            return _invalid(
                {
                    "filter.type": "The selected type is not supported. Supported "
                    "values:local, global."
                }
            )
        entries = catalogue_entries(
            type=kind, country=q.get("filter[country]"), include_topup=q.get("include") == "topup"
        )
        body = _paginate(
            request, entries, base="/packages", object_pages=self.packages_page_as_object
        )
        body["pricing"] = {"model": "net_pricing", "discount_percentage": 0}
        return web.json_response(body)

    async def _product_information(self, request: web.Request) -> web.StreamResponse:
        slug = request.match_info["slug"]
        guard = await self._guard(
            request,
            "product_information",
            (("product_information", slug, self._limit("product_information")),),
        )
        if guard is not None:
            return guard
        found = find_package(slug)
        if found is None:
            return web.json_response(
                {"data": [], "meta": {"message": f"Package not found for slug: {slug}"}},
                status=404,
            )
        _, package = found
        eur = package["prices"]["recommended_retail_price"]["EUR"]
        return web.json_response(
            {
                "data": {
                    "package_id": slug,
                    "product_name": package["title"],
                    "product_description": package["title"],
                    "service_internet": True,
                    "service_telephony": False,
                    "service_sms": False,
                    "network_providers": ["Emulated Networks"],
                    "network_technologies": ["4G", "5G"],
                    "data_allowance_mb": str(package["amount"]),
                    "data_allowance_display": package["data"],
                    "validity_days": package["day"],
                    "voice_minutes": 0,
                    "sms_included": 0,
                    "retail_price_eur": f"{eur:.2f}",
                    "is_unlimited": package["is_unlimited"],
                    "is_fair_usage_policy": False,
                    "activation_policy": "first-usage",
                    "is_roaming": True,
                    "pib_version": 1,
                    "pib_version_date": "2026-06-29T11:34:59+00:00",
                    "version_hash": secrets.token_hex(8),
                }
            }
        )

    # ------------------------------------------------------------------ orders

    async def _create_order(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "orders")
        if guard is not None:
            return guard
        body = await self._body(request)
        self.write_log.append(("orders", body))
        checked = self._validate_order(body)
        if isinstance(checked, web.Response):
            return checked
        package, quantity = checked
        sims = self._new_sims(package, quantity)
        order = self._order_json(package, quantity, sims, body.get("description"), "sim")
        return web.json_response({"data": order, "meta": {"message": "success"}})

    async def _create_async_order(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "orders_async")
        if guard is not None:
            return guard
        body = await self._body(request)
        self.write_log.append(("orders_async", body))
        checked = self._validate_order(body)
        if isinstance(checked, web.Response):
            return checked
        if not body.get("webhook_url") and not getattr(self, "async_webhook_url", None):
            return web.json_response(
                {"reason": "User is not opted in and no webhook URL provided."}, status=422
            )
        package, quantity = checked
        request_id = "".join(secrets.choice(_ALPHABET) for _ in range(25))
        self.async_requests[request_id] = {"package": package, "quantity": quantity, "body": body}
        url = body.get("webhook_url") or getattr(self, "async_webhook_url", None)
        if getattr(self, "deliver_async_orders", False) and url:
            sims = self._new_sims(package, quantity)
            order = self._order_json(package, quantity, sims, body.get("description"), "sim")
            payload = {"data": {**order, "request_id": request_id}, "meta": {"message": "success"}}
            sender: Any = self
            sender.schedule_async_order(
                str(url), payload, sender._secret_for(request), sender.async_order_delay
            )
        return web.json_response(
            {
                "data": {"request_id": request_id, "accepted_at": _now()},
                "meta": {"message": "success"},
            },
            status=202,
        )

    async def _list_orders(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "orders")
        if guard is not None:
            return guard
        q = request.query
        orders = sorted(self.orders.values(), key=lambda o: -int(o["id"]))

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
        return web.json_response(_paginate(request, orders, base="/orders"))

    async def _get_order(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "order")
        if guard is not None:
            return guard
        try:
            order = self.orders.get(int(request.match_info["order_id"]))
        except ValueError:
            order = None
        if order is None:
            return web.json_response(_NOT_FOUND, status=404)
        return web.json_response({"data": order, "meta": {"message": "success"}})

    async def _topup(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "topup_order")
        if guard is not None:
            return guard
        body = await self._body(request)
        self.write_log.append(("topup_order", body))
        errors = {
            f: f"The {f.replace('_', ' ')} field is required."
            for f in ("package_id", "iccid")
            if not body.get(f)
        }
        if errors:
            return _invalid(errors)
        sim = self.fleet.get(str(body["iccid"]))
        if sim is None:
            return _invalid({"iccid": "The selected iccid is invalid."})
        if sim.status == "RECYCLED":
            return _business(
                73,
                f"The eSIM with iccid {sim.iccid} has been recycled. It can no "
                "longer be used or topped up.",
            )
        offered = {p["id"]: p for p in topups_for(sim.package_id)}
        package = offered.get(str(body["package_id"]))
        if package is None:
            return _invalid({"package_id": "invalid topup package"})
        sim.topups.append(package["id"])
        sim.remaining += package["amount"]
        sim.total += package["amount"]
        if sim.status in ("FINISHED", "EXPIRED"):
            # The top-up starts now and runs its own validity.
            now = datetime.now(UTC)
            sim.status = "ACTIVE"
            sim.activated_at = stamp(now)
            sim.expired_at = stamp(now + timedelta(days=int(package["day"])))
        order = self._order_json(package, 1, [], body.get("description"), "topup")
        order["sims"] = []
        return web.json_response({"data": order, "meta": {"message": "success"}})

    # ------------------------------------------------------------------ eSIMs

    async def _list_sims(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "sims")
        if guard is not None:
            return guard
        needle = request.query.get("filter[iccid]")
        sims = [
            self._sim_json(s)
            for s in self.fleet.sims.values()
            if needle is None or needle in s.iccid
        ]
        return web.json_response(_paginate(request, sims, base="/sims"))

    def _sim_or_404(self, request: web.Request) -> SimRecord | web.Response:
        sim = self.fleet.get(request.match_info["iccid"])
        if sim is None:
            return web.json_response(_NOT_FOUND, status=404)
        return sim

    async def _get_sim(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "sim")
        if guard is not None:
            return guard
        sim = self._sim_or_404(request)
        if isinstance(sim, web.Response):
            return sim
        return web.json_response({"data": self._sim_json(sim), "meta": {"message": "succes"}})

    async def _sim_topups(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "sim_topups")
        if guard is not None:
            return guard
        sim = self._sim_or_404(request)
        if isinstance(sim, web.Response):
            return sim
        if sim.status == "RECYCLED":
            return _business(
                73,
                f"The eSIM with iccid {sim.iccid} has been recycled. It can no "
                "longer be used or topped up.",
            )
        offered = topups_for(sim.package_id)
        if not offered:
            return web.json_response({"data": []})
        return web.json_response(
            {"pricing": {"model": "net_pricing", "discount_percentage": 0}, "data": offered}
        )

    async def _package_history(self, request: web.Request) -> web.StreamResponse:
        iccid = request.match_info["iccid"]
        guard = await self._guard(
            request,
            "package_history",
            (("package_history", iccid, self._limit("package_history")),),
        )
        if guard is not None:
            return guard
        sim = self._sim_or_404(request)
        if isinstance(sim, web.Response):
            return sim
        entries = []
        for n, pid in enumerate([sim.package_id, *sim.topups]):
            found = find_package(pid)
            if found is None:
                continue
            package = found[1]
            entries.append(
                {
                    "id": 700 + n,
                    "status": sim.status if n == len(sim.topups) else "FINISHED",
                    "remaining": package["amount"] if n == len(sim.topups) else 0,
                    "activated_at": _iso(sim.activated_at),
                    "expired_at": _iso(sim.expired_at),
                    "finished_at": None,
                    "package": {
                        k: package[k]
                        for k in (
                            "id",
                            "type",
                            "price",
                            "net_price",
                            "amount",
                            "day",
                            "is_unlimited",
                            "title",
                            "data",
                            "short_info",
                        )
                    },
                }
            )
        return web.json_response(
            {"pricing": {"model": "net_pricing", "discount_percentage": 0}, "data": entries}
        )

    async def _instructions(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "instructions")
        if guard is not None:
            return guard
        sim = self._sim_or_404(request)
        if isinstance(sim, web.Response):
            return sim
        language = request.headers.get("Accept-Language", "en").upper()
        qr = self._sim_json(sim)["qrcode"]
        steps = {
            "1": "Go to Settings > Cellular > Add Cellular Plan.",
            "2": "Scan the QR code.",
            "3": "Label the eSIM.",
        }
        device = {
            "model": None,
            "version": "16,17",
            "installation_via_qr_code": {
                "steps": steps,
                "qr_code_data": qr,
                "qr_code_url": f"https://emulator.test/qr/{sim.iccid}",
            },
            "installation_manual": {
                "steps": steps,
                "smdp_address_and_activation_code": "lpa.emulator.test",
            },
            "network_setup": {
                "steps": {"1": "Enable data roaming."},
                "apn_type": "automatic",
                "apn_value": None,
                "is_roaming": True,
            },
        }
        return web.json_response(
            {
                "data": {
                    "instructions": {"language": language, "ios": [device], "android": [device]}
                },
                "meta": {"message": "success"},
            }
        )

    async def _brand(self, request: web.Request) -> web.StreamResponse:
        guard = await self._guard(request, "brand")
        if guard is not None:
            return guard
        sim = self._sim_or_404(request)
        if isinstance(sim, web.Response):
            return sim
        body = await self._body(request)
        if "brand_settings_name" not in body:
            return _invalid(
                {"brand_settings_name": "The brand settings name field must be present."}
            )
        sim.brand_settings_name = body["brand_settings_name"] or None
        return web.json_response(
            {
                "data": {"brand_settings_name": sim.brand_settings_name},
                "meta": {"message": "success"},
            }
        )

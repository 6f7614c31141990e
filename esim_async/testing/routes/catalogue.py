"""Catalogue endpoints: ``GET /packages``, ``GET /packages/{slug}/product-information`` and
``GET /compatible-devices-lite``."""

from __future__ import annotations

import secrets

from aiohttp import web

from ..catalogue import PACKAGES, PRICING, catalogue_entries
from ..guard import Routes, guarded
from ..http import invalid, paginate

__all__ = ["DEVICES", "CatalogueRoutes"]

#: What ``GET /compatible-devices-lite`` lists.
DEVICES = [
    {"os": "android", "brand": "Samsung", "name": "Galaxy S21 5G"},
    {"os": "android", "brand": "Google", "name": "Pixel 8"},
    {"os": "ios", "brand": "Apple", "name": "iPhone 12 Pro Max"},
    {"os": "ios", "brand": "Apple", "name": "iPad mini 5th Gen"},
]


class CatalogueRoutes(Routes):
    """Handlers for the package catalogue and the device list."""

    __slots__ = ()

    def routes(self, prefix: str) -> list[web.RouteDef]:
        return [
            web.get(prefix + "/packages", self.packages),
            web.get(prefix + "/packages/{slug}/product-information", self.product_information),
            web.get(prefix + "/compatible-devices-lite", self.devices),
        ]

    @guarded("packages", limited=True)
    async def packages(self, request: web.Request) -> web.StreamResponse:
        """``GET /packages``: filtered by type and country, paginated, top-ups on request."""
        state = self.state
        q = request.query
        kind = q.get("filter[type]")
        if kind is not None and kind not in ("local", "global"):
            return invalid(
                {
                    "filter.type": "The selected type is not supported. Supported "
                    "values:local, global."
                }
            )
        entries = catalogue_entries(
            type=kind, country=q.get("filter[country]"), include_topup=q.get("include") == "topup"
        )
        body = paginate(
            request, entries, base="/packages", object_pages=state.packages_page_as_object
        )
        body["pricing"] = dict(PRICING)
        return web.json_response(body)

    @guarded("product_information", limited=True, key="slug")
    async def product_information(self, request: web.Request) -> web.StreamResponse:
        """``GET /packages/{slug}/product-information``: limited per package."""
        slug = request.match_info["slug"]
        found = PACKAGES.get(slug)
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

    @guarded("compatible_devices")
    async def devices(self, request: web.Request) -> web.StreamResponse:
        """``GET /compatible-devices-lite``: the whole list, unpaginated."""
        return web.json_response({"data": DEVICES})

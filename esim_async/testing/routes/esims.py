"""eSIM endpoints: ``/sims/{iccid}/usage`` and the eSIM list, details, top-ups offered,
package history, installation instructions and brand.

Usage is limited per company and per ICCID and cached by the server for ``state.cache_ttl``
seconds, as the providers do.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from ..catalogue import PACKAGES, PRICING, topups_for
from ..fleet import SimRecord
from ..guard import Handler, Routes, guard, guarded
from ..http import invalid, not_found, ok, paginate, read_body, recycled, sim_json
from ..http import language as accept_language

__all__ = ["EsimRoutes"]

#: The package fields package history shows.
HISTORY_PACKAGE_FIELDS = (
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

_json = msgspec.json.Encoder()
SimHandler = Callable[["EsimRoutes", web.Request, SimRecord], Awaitable[web.StreamResponse]]


def iso(when: str | None) -> str | None:
    """A ``"YYYY-MM-DD HH:MM:SS"`` UTC stamp as ISO-8601 with offset (package history dates)."""
    if when is None:
        return None
    return datetime.strptime(when, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).isoformat()


def of_known_sim(handler: SimHandler) -> Handler[EsimRoutes]:
    """A handler of the eSIM the path names, given its record; 404 for an unknown ICCID."""

    @functools.wraps(handler)
    async def run(self: EsimRoutes, request: web.Request) -> web.StreamResponse:
        sim = self.state.fleet.get(request.match_info["iccid"])
        return not_found() if sim is None else await handler(self, request, sim)

    return run


class EsimRoutes(Routes):
    """Handlers for usage and the other per-eSIM endpoints."""

    __slots__ = ()

    def routes(self, prefix: str) -> list[web.RouteDef]:
        return [
            web.get(prefix + "/sims/{iccid}/usage", self.usage),
            web.get(prefix + "/sims", self.list_sims),
            web.get(prefix + "/sims/{iccid}", self.get_sim),
            web.get(prefix + "/sims/{iccid}/topups", self.sim_topups),
            web.get(prefix + "/sims/{iccid}/packages", self.package_history),
            web.get(prefix + "/sims/{iccid}/instructions", self.instructions),
            web.put(prefix + "/sims/{iccid}/brand", self.brand),
        ]

    # ------------------------------------------------------------------ usage

    async def usage(self, request: web.Request) -> web.StreamResponse:
        """``GET /sims/{iccid}/usage``: counted per ICCID, limited, then served from the
        server's cache while it is fresh.

        The company limit is checked first, then the ICCID limit, each counting the arrival
        when it admits it (as stacked Laravel throttles do): a request the ICCID limit refuses
        has used a place in the company window.
        """
        state = self.state
        iccid = request.match_info["iccid"]
        state.stats.usage_by_iccid[iccid] += 1
        state.stats.usage_arrivals.append(state.clock.now())
        limits = state.limits
        answered = await guard(
            state,
            request,
            "usage",
            (
                ("usage_company", "all", limits.usage_company),
                ("usage_iccid", iccid, limits.usage_iccid),
            ),
        )
        if answered is not None:
            return answered
        now = state.clock.now()
        cached = state.usage_cache.get(iccid)
        if cached is not None and cached[0] > now:
            body = cached[1]
        else:
            sim = state.fleet.get(iccid)
            if sim is None:
                return not_found()
            body = _json.encode({"data": sim.usage(), "meta": {"message": "api.succes"}})
            state.usage_cache[iccid] = (now + state.cache_ttl, body)
        headers = {}
        if limits.usage_company is not None:
            window = state.windows.get("usage_company", "all")
            headers["X-RateLimit-Limit"] = str(limits.usage_company.count)
            headers["X-RateLimit-Remaining"] = str(window.remaining() if window else 0)
        return web.Response(body=body, content_type="application/json", headers=headers)

    # ------------------------------------------------------------------ eSIMs

    @guarded("sims")
    async def list_sims(self, request: web.Request) -> web.StreamResponse:
        """``GET /sims``: the fleet, filtered by ICCID (LIKE), paginated."""
        needle = request.query.get("filter[iccid]")
        sims = [
            sim_json(s)
            for s in self.state.fleet.sims.values()
            if needle is None or needle in s.iccid
        ]
        return web.json_response(paginate(request, sims, base="/sims"))

    @guarded("sim")
    @of_known_sim
    async def get_sim(self, request: web.Request, sim: SimRecord) -> web.StreamResponse:
        """``GET /sims/{iccid}``."""
        return ok(sim_json(sim), "succes")

    @guarded("sim_topups")
    @of_known_sim
    async def sim_topups(self, request: web.Request, sim: SimRecord) -> web.StreamResponse:
        """``GET /sims/{iccid}/topups``: the top-ups offered for the eSIM's package."""
        if sim.status == "RECYCLED":
            return recycled(sim)
        offered = topups_for(sim.package_id)
        if not offered:
            return web.json_response({"data": []})
        return web.json_response({"pricing": dict(PRICING), "data": offered})

    @guarded("package_history", limited=True, key="iccid")
    @of_known_sim
    async def package_history(self, request: web.Request, sim: SimRecord) -> web.StreamResponse:
        """``GET /sims/{iccid}/packages``: the eSIM's package, then its top-ups; limited per
        ICCID."""
        entries = []
        for n, pid in enumerate([sim.package_id, *sim.topups]):
            found = PACKAGES.get(pid)
            if found is None:
                continue
            package = found[1]
            current = n == len(sim.topups)
            entries.append(
                {
                    "id": 700 + n,
                    "status": sim.status if current else "FINISHED",
                    "remaining": package["amount"] if current else 0,
                    "activated_at": iso(sim.activated_at),
                    "expired_at": iso(sim.expired_at),
                    "finished_at": None,
                    "package": {k: package[k] for k in HISTORY_PACKAGE_FIELDS},
                }
            )
        return web.json_response({"pricing": dict(PRICING), "data": entries})

    @guarded("instructions")
    @of_known_sim
    async def instructions(self, request: web.Request, sim: SimRecord) -> web.StreamResponse:
        """``GET /sims/{iccid}/instructions``: in the ``Accept-Language`` asked for."""
        language = accept_language(request)
        qr = sim_json(sim)["qrcode"]
        steps = {
            "1": "Go to Settings > Cellular > Add Cellular Plan.",
            "2": "Scan the QR code.",
            "3": "Label the eSIM.",
        }
        device: dict[str, Any] = {
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
        return ok({"instructions": {"language": language, "ios": [device], "android": [device]}})

    @guarded("brand")
    @of_known_sim
    async def brand(self, request: web.Request, sim: SimRecord) -> web.StreamResponse:
        """``PUT /sims/{iccid}/brand``: the key must be present; empty or null unbrands."""
        body = await read_body(request)
        if "brand_settings_name" not in body:
            return invalid(
                {"brand_settings_name": "The brand settings name field must be present."}
            )
        sim.brand_settings_name = body["brand_settings_name"] or None
        return ok({"brand_settings_name": sim.brand_settings_name})

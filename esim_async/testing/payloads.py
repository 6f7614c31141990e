"""Payload shapes built from the emulator's records, shared by the order and eSIM routes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .fleet import SimRecord
from .http import business

__all__ = ["recycled", "sim_json"]


def sim_json(sim: SimRecord) -> dict[str, Any]:
    """An eSIM as ``GET /sims/{iccid}`` (and an order's ``sims`` list) shows it."""
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


def recycled(sim: SimRecord) -> web.Response:
    """Business code 73: the eSIM was recycled and can no longer be used or topped up."""
    return business(
        73,
        f"The eSIM with iccid {sim.iccid} has been recycled. It can no "
        "longer be used or topped up.",
    )

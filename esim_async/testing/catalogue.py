"""A small deterministic package catalogue in the providers' shapes, for the emulator."""

from __future__ import annotations

from typing import Any

__all__ = ["CATALOGUE", "catalogue_entries", "find_package", "topups_for"]

_RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79}

# (slug, country_code, title, operator id, operator title, type, [(GB, days, price)], unlimited)
_ENTRIES: list[tuple[str, str, str, int, str, str, list[tuple[int, int, float]]]] = [
    (
        "united-states",
        "US",
        "United States",
        1180,
        "Change",
        "local",
        [(1, 7, 4.5), (3, 30, 11.0), (10, 30, 26.0)],
    ),
    ("france", "FR", "France", 826, "Élan", "local", [(1, 7, 4.5), (5, 30, 14.0)]),
    ("germany", "DE", "Germany", 901, "Hallo Mobil", "local", [(1, 7, 5.0), (3, 30, 12.5)]),
    ("japan", "JP", "Japan", 1022, "Moshi Moshi", "local", [(1, 7, 4.5), (20, 30, 39.0)]),
    ("turkey", "TR", "Türkiye", 1304, "Merhaba", "local", [(1, 7, 4.5), (10, 30, 24.0)]),
    (
        "united-kingdom",
        "GB",
        "United Kingdom",
        1412,
        "Uki Mobile",
        "local",
        [(2, 15, 7.5), (5, 30, 13.0)],
    ),
    ("europe", "", "Europe", 2001, "Eurolink", "global", [(1, 7, 5.0), (5, 30, 17.0)]),
    ("world", "", "Discover Global", 2002, "Discover+", "global", [(1, 7, 9.0), (3, 30, 24.0)]),
]


def _prices(price: float, net: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "recommended_retail_price": {c: round(price * r, 2) for c, r in _RATES.items()}
    }
    if net is not None:
        out["net_price"] = {c: round(net * r, 2) for c, r in _RATES.items()}
    return out


def _package(operator: str, gb: int, days: int, price: float, kind: str) -> dict[str, Any]:
    slug = operator.lower().replace(" ", "-").replace("+", "-plus").replace("é", "e")
    pid = f"{slug}-{days}days-{gb}gb" + ("-topup" if kind == "topup" else "")
    net = round(price * 0.8, 2)
    return {
        "id": pid,
        "type": kind,
        "price": price,
        "net_price": net,
        "amount": gb * 1024,
        "day": days,
        "is_unlimited": False,
        "title": f"{gb} GB - {days} days",
        "data": f"{gb} GB",
        "voice": None,
        "text": None,
        "short_info": None,
        "prices": _prices(price, net),
    }


def _build() -> list[dict[str, Any]]:
    entries = []
    for slug, cc, title, op_id, op_title, op_type, plans in _ENTRIES:
        packages = [_package(op_title, gb, d, p, "sim") for gb, d, p in plans]
        packages += [_package(op_title, gb, d, round(p * 0.9, 2), "topup") for gb, d, p in plans]
        cheapest = min(p for _, _, p in plans)
        entries.append(
            {
                "slug": slug,
                "country_code": cc,
                "title": title,
                "image": {"width": 132, "height": 99, "url": f"https://cdn.example/{slug}.png"},
                "min_price": _prices(cheapest, round(cheapest * 0.8, 2)),
                "operators": [
                    {
                        "id": op_id,
                        "title": op_title,
                        "type": op_type,
                        "plan_type": "data",
                        "is_roaming": op_type == "global",
                        "rechargeability": True,
                        "packages": packages,
                        "activation_policy": "first-usage",
                        "install_window_days": 180,
                        "topup_grace_window_days": 30,
                        "coverages": [
                            {
                                "name": cc or slug,
                                "code": cc,
                                "networks": [{"name": op_title, "types": ["4G", "5G"]}],
                            }
                        ],
                    }
                ],
            }
        )
    return entries


#: Every catalogue entry, with sim and topup packages.
CATALOGUE: list[dict[str, Any]] = _build()


def catalogue_entries(
    *, type: str | None = None, country: str | None = None, include_topup: bool = False
) -> list[dict[str, Any]]:
    """Entries filtered as ``GET /packages`` filters them."""
    out = []
    for entry in CATALOGUE:
        op_type = entry["operators"][0]["type"]
        if type is not None and op_type != type:
            continue
        if country is not None and entry["country_code"] != country.upper():
            continue
        if include_topup:
            out.append(entry)
            continue
        ops = [
            {**op, "packages": [p for p in op["packages"] if p["type"] == "sim"]}
            for op in entry["operators"]
        ]
        out.append({**entry, "operators": ops})
    return out


def find_package(package_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(entry, package) for a package id."""
    for entry in CATALOGUE:
        for op in entry["operators"]:
            for package in op["packages"]:
                if package["id"] == package_id:
                    return entry, package
    return None


def topups_for(package_id: str) -> list[dict[str, Any]]:
    """The top-ups offered for an eSIM whose package is ``package_id``."""
    found = find_package(package_id)
    if found is None:
        return []
    entry, _ = found
    return [p for op in entry["operators"] for p in op["packages"] if p["type"] == "topup"]

"""A small deterministic package catalogue in the providers' shapes, for the emulator.

Each operator carries what the official SDKs read when they flatten the catalogue: the countries
it covers (``countries[].country_code``: one for a local operator, several for a regional or
global one), its image, ``info`` lines and ``other_info``, and per package the fair-usage fields.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CATALOGUE", "COUNTRY_TITLES", "PACKAGES", "PRICING", "catalogue_entries", "topups_for"]

_RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79}

#: Country code -> name, for every country the catalogue covers.
COUNTRY_TITLES = {
    "US": "United States",
    "FR": "France",
    "DE": "Germany",
    "JP": "Japan",
    "TR": "Türkiye",
    "GB": "United Kingdom",
    "IT": "Italy",
    "ES": "Spain",
}
#: Countries a regional or global entry covers, by slug.
_REGIONS = {
    "europe": ("FR", "DE", "GB", "IT", "ES"),
    "world": ("US", "FR", "DE", "JP", "TR", "GB", "IT", "ES"),
}
_CDN = "https://cdn.emulator.test"

# (slug, country_code, title, operator id, operator title, type, [(GB, days, price)])
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


def _image(path: str) -> dict[str, Any]:
    return {"width": 132, "height": 99, "url": f"{_CDN}/{path}.png"}


def _country(code: str) -> dict[str, Any]:
    """An operator's ``countries[]`` item."""
    return {
        "country_code": code,
        "title": COUNTRY_TITLES[code],
        "image": _image(f"countries/{code.lower()}"),
    }


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
        "qr_installation": "<p>Settings &gt; Cellular &gt; Add eSIM &gt; Scan the QR code</p>",
        "manual_installation": "<p>Settings &gt; Cellular &gt; Add eSIM &gt; Enter details</p>",
        "is_fair_usage_policy": False,
        "fair_usage_policy": None,
        "prices": _prices(price, net),
    }


def _operator(
    slug: str, codes: tuple[str, ...], op_id: int, op_title: str, op_type: str
) -> dict[str, Any]:
    """An operator without its packages, with every field the SDKs read."""
    countries = [_country(c) for c in codes]
    many = len(codes) > 1
    where = f" in {len(codes)} countries." if many else "."
    return {
        "id": op_id,
        "style": "dark" if many else "light",
        "gradient_start": "#0f1b3f",
        "gradient_end": "#194281",
        "type": op_type,
        "is_prepaid": True,
        "title": op_title,
        "esim_type": "Prepaid",
        "warning": None,
        "apn_type": "automatic",
        "apn_value": None,
        "is_roaming": op_type == "global",
        "info": [
            "LTE data-only eSIM.",
            "Rechargeable online with no expiry.",
            f"Operates on the {op_title} network{where}",
        ],
        "image": _image(f"operators/{slug}"),
        "plan_type": "data",
        "activation_policy": "first-usage",
        "is_kyc_verify": False,
        "rechargeability": True,
        "other_info": f"Covers {len(codes)} countries." if many else None,
        "coverages": [
            {
                "name": c["country_code"],
                "code": c["country_code"],
                "networks": [{"name": op_title, "types": ["4G", "5G"]}],
            }
            for c in countries
        ],
        "install_window_days": 180,
        "topup_grace_window_days": 30,
        "apn": {
            "ios": {"apn_type": "automatic", "apn_value": None},
            "android": {"apn_type": "automatic", "apn_value": None},
        },
        "countries": countries,
    }


def _build() -> list[dict[str, Any]]:
    entries = []
    for slug, cc, title, op_id, op_title, op_type, plans in _ENTRIES:
        packages = [_package(op_title, gb, d, p, "sim") for gb, d, p in plans]
        packages += [_package(op_title, gb, d, round(p * 0.9, 2), "topup") for gb, d, p in plans]
        cheapest = min(p for _, _, p in plans)
        codes = (cc,) if cc else _REGIONS[slug]
        operator = _operator(slug, codes, op_id, op_title, op_type)
        entries.append(
            {
                "slug": slug,
                "country_code": cc,
                "title": title,
                "image": _image(slug),
                "min_price": _prices(cheapest, round(cheapest * 0.8, 2)),
                "operators": [{**operator, "packages": packages}],
            }
        )
    return entries


#: Every catalogue entry, with sim and topup packages.
CATALOGUE: list[dict[str, Any]] = _build()
#: Package id -> (entry, package), for every package of the catalogue.
PACKAGES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    p["id"]: (e, p) for e in CATALOGUE for op in e["operators"] for p in op["packages"]
}
#: The ``pricing`` object of the catalogue and of an eSIM's top-ups and package history.
PRICING = {"model": "net_pricing", "discount_percentage": 0}


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


def topups_for(package_id: str) -> list[dict[str, Any]]:
    """The top-ups offered for an eSIM whose package is ``package_id``."""
    found = PACKAGES.get(package_id)
    if found is None:
        return []
    entry, _ = found
    return [p for op in entry["operators"] for p in op["packages"] if p["type"] == "topup"]

"""Every network method of the official Python SDK (``airalo-sdk``), each outcome checked.

:func:`run_every_method` builds an ``airalo.Airalo`` against a base URL and calls each of its
methods that talk to the API, checking what comes back against what the emulator holds. The SDK
is synchronous (``urllib``); callers run this in a thread. Its only change is the URL constant
(``ApiConstants.PRODUCTION_URL``), which the caller sets before calling.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from esim_async.testing import Fleet
from esim_async.testing.catalogue import CATALOGUE, topups_for

__all__ = ["Expected", "expected_for", "run_every_method"]


@dataclass
class Expected:
    """What the emulator holds, for checking what the SDK decoded."""

    client_id: str
    client_secret: str
    #: ICCID -> usage status the emulator reports.
    statuses: dict[str, str]
    #: A sim package and another one, for orders.
    package_id: str
    other_package_id: str
    #: An eSIM and a top-up offered for it.
    topup_iccid: str
    topup_package_id: str
    #: Country codes of the local catalogue entries, slugs of the global ones.
    local_countries: set[str] = field(default_factory=set)
    global_slugs: set[str] = field(default_factory=set)
    webhook_url: str = "http://127.0.0.1:9/hook"


def expected_for(fleet: Fleet, client_id: str, client_secret: str) -> Expected:
    """What the SDKs should find on an emulator serving ``fleet`` and its catalogue."""
    sims = list(fleet.sims.values())
    active = [s for s in sims if s.status == "ACTIVE"]
    others = [s for s in sims if s.status in ("EXPIRED", "FINISHED", "NOT_ACTIVE")]
    chosen = [*active[:2], *others[:1]]
    sim_packages = [
        p["id"]
        for entry in CATALOGUE
        for op in entry["operators"]
        for p in op["packages"]
        if p["type"] == "sim"
    ]
    return Expected(
        client_id=client_id,
        client_secret=client_secret,
        statuses={s.iccid: s.status for s in chosen},
        package_id=sim_packages[0],
        other_package_id=sim_packages[3],
        topup_iccid=active[0].iccid,
        topup_package_id=topups_for(active[0].package_id)[0]["id"],
        local_countries={e["country_code"] for e in CATALOGUE if e["country_code"]},
        global_slugs={e["slug"] for e in CATALOGUE if not e["country_code"]},
    )


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _flat_items(result: Any) -> list[dict[str, Any]]:
    _check(isinstance(result, dict), f"no packages: {result!r}")
    items = result["data"]
    _check(isinstance(items, list) and len(items) > 0, "empty package list")
    for item in items:
        _check(bool(item["package_id"]) and bool(item["slug"]), f"incomplete package {item}")
        countries = item["countries"]
        _check(isinstance(countries, list) and len(countries) > 0, f"no countries in {item}")
        _check(all(isinstance(c, str) and c for c in countries), f"bad countries in {item}")
    return list(items)


def run_every_method(expected: Expected) -> dict[str, str]:
    """Call every network method of the SDK; ``{method: "ok" | "FAIL: why"}``."""
    from airalo import Airalo  # the caller has pointed ApiConstants at the emulator

    outcomes: dict[str, str] = {}
    state: dict[str, Any] = {}

    def attempt(name: str, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception as exc:
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            outcomes[name] = f"FAIL: {last[:400]}"
        else:
            outcomes[name] = "ok"

    def init() -> None:
        sdk = Airalo({"client_id": expected.client_id, "client_secret": expected.client_secret})
        token = sdk.get_access_token()
        _check(isinstance(token, str) and len(token) > 20, f"token {token!r}")
        state["sdk"] = sdk
        state["token"] = token

    attempt("Airalo() + get_access_token", init)
    sdk = state.get("sdk")
    if sdk is None:
        return outcomes
    iccids = list(expected.statuses)
    active = next(i for i, s in expected.statuses.items() if s == "ACTIVE")

    def all_packages() -> None:
        nested = sdk.get_all_packages()
        _check(nested is not None, "no catalogue")
        entries = nested["data"]
        types = {p["type"] for e in entries for op in e["operators"] for p in op["packages"]}
        _check(types == {"sim", "topup"}, f"package types {types}")
        items = _flat_items(sdk.get_all_packages(flat=True))
        codes = {c for item in items for c in item["countries"]}
        _check(expected.local_countries <= codes, f"countries {codes}")

    def sim_packages() -> None:
        items = _flat_items(sdk.get_sim_packages(flat=True))
        _check({i["type"] for i in items} == {"sim"}, "top-ups among sim packages")

    def local_packages() -> None:
        items = _flat_items(sdk.get_local_packages(flat=True))
        _check(all(len(i["countries"]) == 1 for i in items), "a local package in many countries")
        _check({i["countries"][0] for i in items} == expected.local_countries, "countries")

    def global_packages() -> None:
        items = _flat_items(sdk.get_global_packages(flat=True))
        _check({i["slug"] for i in items} == expected.global_slugs, "global slugs")
        _check(all(len(i["countries"]) > 1 for i in items), "a global package in one country")

    def country_packages() -> None:
        items = _flat_items(sdk.get_country_packages("us", flat=True))
        _check(all(i["countries"] == ["US"] for i in items), "non-US package for US")

    def order() -> None:
        body = sdk.order(expected.package_id, 2, "compat order")
        data = body["data"]
        _check(data["package_id"] == expected.package_id and data["quantity"] == 2, str(data))
        _check(len(data["sims"]) == 2 and all(s["iccid"] for s in data["sims"]), "sims")
        state["ordered_iccid"] = data["sims"][0]["iccid"]

    cloud = {
        "to_email": "ops@example.com",
        "sharing_option": ["link", "pdf"],
        "copy_address": ["cc@example.com"],
    }

    def order_shared() -> None:
        data = sdk.order_with_email_sim_share(expected.package_id, 1, cloud)["data"]
        _check(data["quantity"] == 1 and len(data["sims"]) == 1, str(data))

    def order_async() -> None:
        data = sdk.order_async(expected.package_id, 1, expected.webhook_url)["data"]
        _check(len(data["request_id"]) == 25 and data["accepted_at"], str(data))

    def order_bulk() -> None:
        result = sdk.order_bulk({expected.package_id: 1, expected.other_package_id: 2})
        _check(set(result) == {expected.package_id, expected.other_package_id}, str(result))
        _check(result[expected.other_package_id]["data"]["quantity"] == 2, str(result))

    def order_bulk_shared() -> None:
        result = sdk.order_bulk_with_email_sim_share({expected.package_id: 1}, cloud)
        _check(len(result[expected.package_id]["data"]["sims"]) == 1, str(result))

    def order_async_bulk() -> None:
        result = sdk.order_async_bulk(
            {expected.package_id: 1, expected.other_package_id: 1}, expected.webhook_url
        )
        _check(all(len(r["data"]["request_id"]) == 25 for r in result.values()), str(result))

    def topup() -> None:
        data = sdk.topup(expected.topup_package_id, expected.topup_iccid)["data"]
        _check(data["package_id"] == expected.topup_package_id, str(data))
        _check(data["type"] == "topup", str(data))

    def instructions() -> None:
        body = sdk.get_installation_instructions({"iccid": active, "language": "en"})
        found = body["data"]["instructions"]
        _check(found["ios"] and found["android"], str(found))
        _check(found["ios"][0]["installation_via_qr_code"]["qr_code_data"], "no QR code data")

    def future_order() -> None:
        due = (datetime.now(UTC) + timedelta(days=5)).strftime("%Y-%m-%d %H:%M")
        data = sdk.create_future_order(
            {"package_id": expected.package_id, "quantity": 1, "due_date": due}
        )["data"]
        _check(len(data["request_id"]) == 25 and data["due_date"] == due, str(data))
        state["future"] = data["request_id"]

    def cancel_future_order() -> None:
        body = sdk.cancel_future_order({"request_ids": [state["future"]]})
        _check("cancel" in body["meta"]["message"].lower(), str(body))

    def devices() -> None:
        data = sdk.get_compatible_devices()["data"]
        _check(all(d["brand"] and d["name"] for d in data) and len(data) > 0, str(data))

    def usage() -> None:
        data = sdk.sim_usage(active)["data"]
        _check(data["status"] == "ACTIVE" and isinstance(data["remaining"], int), str(data))

    def usage_bulk() -> None:
        result = sdk.sim_usage_bulk(iccids)
        got = {i: result[i]["data"]["status"] for i in iccids}
        _check(got == expected.statuses, f"{got} != {expected.statuses}")

    def sim_topups() -> None:
        data = sdk.get_sim_topups(expected.topup_iccid)["data"]
        ids = {p["id"] for p in data}
        _check(expected.topup_package_id in ids, str(ids))
        _check({p["type"] for p in data} == {"topup"}, str(data))

    def package_history() -> None:
        data = sdk.get_sim_package_history(expected.topup_iccid)["data"]
        _check(len(data) >= 1 and data[0]["package"]["id"], str(data))

    def exchange_rates() -> None:
        data = sdk.get_exchange_rates({"to": "EUR,GBP"})["data"]
        _check({r["to"] for r in data["rates"]} == {"EUR", "GBP"}, str(data))

    def voucher() -> None:
        data = sdk.create_voucher({"amount": 10, "quantity": 1, "usage_limit": 5, "is_paid": True})
        data = data["data"]
        _check(data["amount"] == 10 and data["code"] and data["is_paid"] is True, str(data))

    def esim_voucher() -> None:
        payload = {"vouchers": [{"package_id": expected.package_id, "quantity": 2}]}
        data = sdk.create_esim_voucher(payload)["data"]
        _check(data[0]["package_id"] == expected.package_id, str(data))
        _check(len(data[0]["codes"]) == 2, str(data))

    def refresh() -> None:
        token = sdk.refresh_token()
        _check(isinstance(token, str) and token != state["token"], "token not refreshed")

    for name, call in [
        ("get_all_packages", all_packages),
        ("get_sim_packages", sim_packages),
        ("get_local_packages", local_packages),
        ("get_global_packages", global_packages),
        ("get_country_packages", country_packages),
        ("order", order),
        ("order_with_email_sim_share", order_shared),
        ("order_async", order_async),
        ("order_bulk", order_bulk),
        ("order_bulk_with_email_sim_share", order_bulk_shared),
        ("order_async_bulk", order_async_bulk),
        ("topup", topup),
        ("get_installation_instructions", instructions),
        ("create_future_order", future_order),
        ("cancel_future_order", cancel_future_order),
        ("get_compatible_devices", devices),
        ("sim_usage", usage),
        ("sim_usage_bulk", usage_bulk),
        ("get_sim_topups", sim_topups),
        ("get_sim_package_history", package_history),
        ("get_exchange_rates", exchange_rates),
        ("create_voucher", voucher),
        ("create_esim_voucher", esim_voucher),
        ("refresh_token", refresh),
    ]:
        attempt(name, call)
    return outcomes

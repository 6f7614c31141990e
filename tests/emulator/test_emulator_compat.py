"""The emulator accepts what the real API accepts and answers with what the official SDKs read.

The official SDKs send JSON bodies (Node, also for the token), form bodies (Python's token),
form bodies labelled as JSON with PHP-style ``name[0]`` keys (PHP), and extra headers; the real
API takes them all. What the SDKs read from the answers (``operators[].countries[].country_code``
above all, which every SDK's package flattening needs) must be there.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgspec
import pytest

from esim_async.models import Country, Envelope
from esim_async.testing import Emulator, Fleet, ServerLimits

CREDENTIALS = {"client_id": "id", "client_secret": "s", "grant_type": "client_credentials"}
PACKAGE = "change-7days-1gb"


async def bearer(http: aiohttp.ClientSession, url: str) -> dict[str, str]:
    async with http.post(url + "/v2/token", data=CREDENTIALS) as resp:
        assert resp.status == 200
        return {"Authorization": "Bearer " + (await resp.json())["data"]["access_token"]}


async def post(
    http: aiohttp.ClientSession,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    async with http.post(url, headers=headers, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_the_token_takes_json_as_well_as_form_bodies() -> None:
    async with (
        Emulator(limits=ServerLimits.unlimited()) as emu,
        aiohttp.ClientSession() as http,
    ):
        url = emu.url + "/v2/token"
        # The Node SDK: JSON, with its own headers.
        sdk_headers = {"airalo-nodejs-sdk": "1.2.2", "airalo-signature": "0" * 128}
        status, body = await post(http, url, json=CREDENTIALS, headers=sdk_headers)
        assert status == 200 and body["data"]["token_type"] == "Bearer"
        assert len(body["data"]["access_token"]) > 20
        # The Python SDK: form-urlencoded.
        status, body = await post(http, url, data=CREDENTIALS)
        assert status == 200 and body["data"]["access_token"]
        # Validation is the same whatever the encoding.
        status, body = await post(http, url, json={"client_secret": "s"})
        assert status == 422
        assert body["data"] == {"client_id": "The client id field is required."}
        status, body = await post(http, url, json={**CREDENTIALS, "grant_type": "password"})
        assert status == 401
        assert emu.stats.tokens_issued == 2


async def test_writes_take_json_form_multipart_and_php_style_bodies() -> None:
    async with (
        Emulator(fleet=Fleet.generate(3, seed=5), limits=ServerLimits.unlimited()) as emu,
        aiohttp.ClientSession() as http,
    ):
        auth = await bearer(http, emu.url)
        orders = emu.url + "/v2/orders"
        share = {"to_email": "ops@example.com", "sharing_option": ["link", "pdf"]}

        status, body = await post(
            http, orders, json={"package_id": PACKAGE, "quantity": 2, **share}, headers=auth
        )
        assert status == 200 and len(body["data"]["sims"]) == 2

        form = [
            ("package_id", PACKAGE),
            ("quantity", "1"),
            ("to_email", "ops@example.com"),
            ("sharing_option[]", "link"),
            ("sharing_option[]", "pdf"),
        ]
        status, body = await post(http, orders, data=form, headers=auth)
        assert status == 200 and body["data"]["quantity"] == 1

        multipart = aiohttp.FormData()
        for key, value in form:
            multipart.add_field(key, value)
        status, body = await post(http, orders, data=multipart, headers=auth)
        assert status == 200 and body["data"]["quantity"] == 1

        # The PHP SDK: http_build_query's indexed keys, sent with a JSON content type.
        php = urlencode(
            {
                "package_id": PACKAGE,
                "quantity": 3,
                "type": "sim",
                "to_email": "ops@example.com",
                "sharing_option[0]": "link",
                "sharing_option[1]": "pdf",
            }
        )
        status, body = await post(
            http, orders, data=php, headers={**auth, "Content-Type": "application/json"}
        )
        assert status == 200 and body["data"]["quantity"] == 3

        bodies = [b for endpoint, b in emu.write_log if endpoint == "orders"]
        assert [b["sharing_option"] for b in bodies] == [["link", "pdf"]] * 4
        assert [int(b["quantity"]) for b in bodies] == [2, 1, 1, 3]

        # Nested PHP arrays: a list of objects.
        vouchers = urlencode(
            {
                "vouchers[0][package_id]": PACKAGE,
                "vouchers[0][quantity]": 2,
                "vouchers[1][package_id]": PACKAGE,
                "vouchers[1][quantity]": 1,
            }
        )
        status, body = await post(
            http,
            emu.url + "/v2/voucher/esim",
            data=vouchers,
            headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200
        assert [len(v["codes"]) for v in body["data"]] == [2, 1]


async def test_a_body_that_is_neither_json_nor_form_is_refused_as_missing_fields() -> None:
    async with (
        Emulator(fleet=Fleet.generate(3, seed=5), limits=ServerLimits.unlimited()) as emu,
        aiohttp.ClientSession() as http,
    ):
        auth = await bearer(http, emu.url)
        status, body = await post(
            http,
            emu.url + "/v2/orders",
            data=b"\xff\xfe{not json",
            headers={**auth, "Content-Type": "application/json"},
        )
        assert status == 422 and "package_id" in body["data"]
        status, body = await post(
            http,
            emu.url + "/v2/token",
            data=b"[1, 2]",
            headers={"Content-Type": "application/json"},
        )
        assert status == 422 and "client_id" in body["data"]


async def test_get_requests_with_the_sdks_headers_are_answered() -> None:
    fleet = Fleet.generate(3, seed=5)
    async with (
        Emulator(fleet=fleet, limits=ServerLimits.unlimited()) as emu,
        aiohttp.ClientSession() as http,
    ):
        auth = await bearer(http, emu.url)
        iccid = fleet.iccids()[0]
        # Node sends an empty Content-Type for exchange rates and a JSON one on every GET;
        # Python sends an empty Accept-Language when no language is given.
        for headers, expected in [
            ({"Content-Type": "", "Accept": "application/json"}, "EN"),
            ({"Content-Type": "application/json", "Accept-Language": ""}, "EN"),
            ({"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}, "DE"),
        ]:
            async with http.get(
                emu.url + f"/v2/sims/{iccid}/instructions", headers={**auth, **headers}
            ) as resp:
                assert resp.status == 200
                body = await resp.json()
                assert body["data"]["instructions"]["language"] == expected
            async with http.get(
                emu.url + "/v2/finance/exchange-rates?to=EUR", headers={**auth, **headers}
            ) as resp:
                assert resp.status == 200
                assert (await resp.json())["data"]["rates"][0]["to"] == "EUR"


#: Operator fields the official SDKs read (Python and Node ``flatten``, PHP ``Operator``).
OPERATOR_FIELDS = {
    "id",
    "title",
    "type",
    "plan_type",
    "activation_policy",
    "is_roaming",
    "rechargeability",
    "info",
    "image",
    "other_info",
    "countries",
    "coverages",
    "packages",
    "style",
    "gradient_start",
    "gradient_end",
    "is_prepaid",
    "esim_type",
    "warning",
    "apn_type",
    "apn_value",
    "is_kyc_verify",
}
#: Package fields the SDKs read.
PACKAGE_FIELDS = {
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
    "voice",
    "text",
    "is_fair_usage_policy",
    "fair_usage_policy",
}


@pytest.mark.parametrize("query", ["", "?include=topup", "?filter[type]=global"])
async def test_catalogue_operators_carry_what_the_sdks_read(query: str) -> None:
    async with (
        Emulator(limits=ServerLimits.unlimited()) as emu,
        aiohttp.ClientSession() as http,
    ):
        auth = await bearer(http, emu.url)
        async with http.get(emu.url + "/v2/packages" + query, headers=auth) as resp:
            assert resp.status == 200
            raw = await resp.read()
    entries = msgspec.json.decode(raw)["data"]
    assert entries
    for entry in entries:
        for operator in entry["operators"]:
            assert set(operator) >= OPERATOR_FIELDS, OPERATOR_FIELDS - set(operator)
            assert isinstance(operator["info"], list) and operator["info"]
            assert operator["image"]["url"].startswith("https://")
            codes = [c["country_code"] for c in operator["countries"]]
            assert all(c["title"] and c["image"]["url"] for c in operator["countries"])
            if entry["country_code"]:
                assert codes == [entry["country_code"]]
            else:
                assert len(codes) > 1 and len(set(codes)) == len(codes)
            assert {c["code"] for c in operator["coverages"]} == set(codes)
            for package in operator["packages"]:
                assert set(package) >= PACKAGE_FIELDS, PACKAGE_FIELDS - set(package)

    # Our own models decode the same answer, countries included (lax, as the client decodes).
    decoded = msgspec.json.Decoder(Envelope[list[Country]], strict=False).decode(raw).data
    for entry in decoded:
        for operator in entry.operators:
            assert operator.countries and all(c.country_code for c in operator.countries)
            assert operator.image is not None and operator.info


def test_form_fields_read_the_way_laravel_reads_them() -> None:
    from esim_async.testing.http import MAX_FORM_DEPTH, form_fields

    deep = "d" + "[x]" * (MAX_FORM_DEPTH + 1)
    fields = form_fields(
        [
            ("iccids[]", "1"),
            ("iccids[]", "2"),
            ("vouchers[1][package_id]", "b"),
            ("vouchers[0][package_id]", "a"),
            ("vouchers[0][quantity]", "2"),
            ("quantity", "1"),
            ("quantity", "3"),
            (deep, "kept as it came"),
        ]
    )
    assert fields == {
        "iccids": ["1", "2"],
        "vouchers": [{"package_id": "a", "quantity": "2"}, {"package_id": "b"}],
        "quantity": "3",
        deep: "kept as it came",
    }

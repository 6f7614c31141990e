"""Catalogue pages whose ``data`` is an object keyed by index keep the numeric order."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from aioresponses import aioresponses

from esim_async import AiraloClient, ManualClock

BASE = "https://partners-api.airalo.com"
TOKEN = {"data": {"access_token": "tok", "expires_in": 3600}, "meta": {"message": "success"}}
PACKAGES = re.compile(r"^https://partners-api\.airalo\.com/v2/packages\?.*$")


@pytest.fixture
def mocked() -> Any:
    with aioresponses() as m:
        m.post(f"{BASE}/v2/token", payload=TOKEN, repeat=True)
        yield m


@pytest.fixture
async def client() -> Any:
    async with AiraloClient("id", "secret", clock=ManualClock(), max_retries=0) as c:
        yield c


def entries(payload: Any, indexes: range) -> dict[int, dict[str, Any]]:
    """One catalogue entry per index, its slug naming the index."""
    template = json.loads(payload("airalo/packages_200.json"))["data"][0]
    out = {}
    for i in indexes:
        entry = copy.deepcopy(template)
        entry["slug"] = f"country-{i}"
        out[i] = entry
    return out


def page_body(payload: Any, data: Any, page: int, last: int) -> dict[str, Any]:
    body = json.loads(payload("airalo/packages_200.json"))
    body["data"] = data
    body["meta"]["current_page"] = page
    body["meta"]["last_page"] = last
    return body


def keyed_as_text(items: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``data`` keyed by index, the keys in text order ("0", "1", "10", "11", "12", "2"...)."""
    return {str(i): items[i] for i in sorted(items, key=str)}


async def test_page_keyed_zero_to_twelve_keeps_numeric_order(mocked, client, payload) -> None:
    items = entries(payload, range(13))
    data = keyed_as_text(items)
    assert list(data)[:4] == ["0", "1", "10", "11"]  # the body really is in text order
    mocked.get(PACKAGES, payload=page_body(payload, data, 2, 2))
    page = await client.packages.page(2)
    assert [c.slug for c in page.items] == [f"country-{i}" for i in range(13)]


async def test_list_across_list_and_keyed_pages_keeps_numeric_order(
    mocked, client, payload
) -> None:
    items = entries(payload, range(25))
    first = [items[i] for i in range(5)]
    second = keyed_as_text({i: items[i] for i in range(5, 18)})  # "10".."17" before "5"
    third = keyed_as_text({i: items[i] for i in range(18, 25)})
    for n, data in enumerate((first, second, third), start=1):
        mocked.get(PACKAGES, payload=page_body(payload, data, n, 3))
    got = [c.slug async for c in client.packages.list(page_size=13)]
    assert got == [f"country-{i}" for i in range(25)]

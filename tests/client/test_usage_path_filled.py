"""Where usage requests go: the usage path template with the ICCID filled in, whatever its
shape (the client splits a template of one plain ``{iccid}`` once instead of formatting it)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from aioresponses import aioresponses
from yarl import URL

from esim_async import AiraloClient, ManualClock

BASE = "https://partners-api.airalo.com"
ICCID = "8944465400000267299"
USAGE_OK = {"data": {"remaining": 512, "total": 1024, "status": "ACTIVE"}, "meta": {}}
TOKEN_OK = {"data": {"access_token": "tok", "expires_in": 3600, "token_type": "Bearer"}}


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


@pytest.mark.parametrize(
    "template",
    [
        None,  # the provider's own: /v2/sims/{iccid}/usage
        "/cusomter/v2/sims/{iccid}/usage",
        "/{iccid}",
        "/sims/{iccid}/usage/{iccid}",
        "/sims/{{iccid}}/{iccid}/usage",
    ],
)
async def test_usage_goes_to_the_template_with_the_iccid_filled_in(
    mocked: aioresponses, template: str | None
) -> None:
    mocked.post(f"{BASE}/v2/token", payload=TOKEN_OK, repeat=True)
    mocked.get(re.compile(r".*"), payload=USAGE_OK, repeat=True)
    options = {} if template is None else {"usage_path": template}
    async with AiraloClient("id", "secret", clock=ManualClock(), **options) as client:
        for _ in range(2):
            usage = await client.sims.usage(ICCID, refresh=True)
            assert usage.remaining == 512
    path = (template or "/v2/sims/{iccid}/usage").format(iccid=ICCID)
    got = [url for method, url in mocked.requests if method == "GET"]
    assert got == [URL(BASE + path)]
    assert len(mocked.requests[("GET", URL(BASE + path))]) == 2

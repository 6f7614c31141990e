"""The sweep's records and summary when the provider echoes the credentials back."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from esim_async import AiraloClient
from esim_async.sweep import RECORD_USAGE_FIELDS

TOKEN = "tok-observe-SENTINEL-5d2e9a"
SECRET = "secret-observe-SENTINEL-77f1"
ICCIDS = ["8944000000000000011", "8944000000000000022", "8944000000000000033"]


@pytest.fixture
async def echoing() -> AsyncIterator[str]:
    """A provider that puts the request's Authorization header (and the secret it was given)
    into the status it answers, and into its error reasons."""
    seen: list[str] = []

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        seen.append(str(form.get("client_secret", "")))
        data = {"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"}
        return web.json_response({"data": data})

    async def usage(request: web.Request) -> web.Response:
        echo = f"{request.headers.get('Authorization')} {' '.join(seen)}"
        if request.match_info["iccid"].endswith("33"):
            return web.json_response({"code": 1, "reason": f"refused {echo}"}, status=422)
        data = {"remaining": 10, "total": 100, "status": f"ACTIVE {echo}"}
        return web.json_response({"data": data})

    app = web.Application()
    app.router.add_post("/v2/token", token)
    app.router.add_get("/v2/sims/{iccid}/usage", usage)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_records_and_summary_never_hold_an_echoed_token_or_secret(echoing: str) -> None:
    async with AiraloClient("id", SECRET, base_url=echoing, max_retries=0) as client:
        async with client.sims.usage_many(ICCIDS) as results:
            records = [r.as_record() async for r in results]
        summary = results.summary
    assert len(records) == 3 and summary.total == 3 and summary.errors == 1
    lines = [json.dumps(r) for r in records]
    table = io.StringIO()
    rows = csv.DictWriter(table, fieldnames=list(records[0]))
    rows.writerows(records)
    shown = "\n".join([*lines, table.getvalue(), repr(summary), *summary.by_status])
    assert TOKEN not in shown
    assert SECRET not in shown
    assert set(RECORD_USAGE_FIELDS) <= set(records[0])
    assert sum(summary.by_status.values()) == 2

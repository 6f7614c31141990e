"""OpenTelemetry instrumentation (esim_async.otel) against the bundled emulator."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan

from esim_async import AiraloClient, Rate
from esim_async.instrument import RouteTable
from esim_async.testing import Emulator, Fleet
from tests.telemetry import Telemetry as MemoryTelemetry

SECRET = "otel-SENTINEL-secret-9f3"
USAGE_ROUTE = "/v2/sims/{iccid}/usage"


class Telemetry(MemoryTelemetry):
    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if name is None or s.name == name]

    def metrics(self) -> dict[str, list[Any]]:
        """Metric name -> its data points."""
        found: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found

    def total(self, name: str, **attrs: Any) -> float:
        points = self.metrics().get(name, [])
        return sum(
            p.value for p in points if all(p.attributes.get(k) == v for k, v in attrs.items())
        )


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.tracer_provider.shutdown()
    t.meter_provider.shutdown()


@pytest.fixture
async def emu() -> Any:
    async with Emulator(fleet=Fleet.generate(10, seed=3)) as emu:
        yield emu


def _all_attribute_values(spans: list[ReadableSpan]) -> list[str]:
    return [str(v) for s in spans for v in (s.attributes or {}).values()]


async def test_usage_call_span_has_http_and_esim_attributes(emu: Any, telemetry: Telemetry) -> None:
    iccid = emu.fleet.iccids()[0]
    async with AiraloClient("id", SECRET, base_url=emu.url) as client:
        telemetry.instrument(client)
        await client.sims.usage(iccid)
    usage = telemetry.finished(f"GET {USAGE_ROUTE}")
    assert len(usage) == 1
    attrs = usage[0].attributes or {}
    assert attrs["http.request.method"] == "GET"
    assert attrs["url.full"] == f"{emu.url}/v2/sims/{iccid}/usage"
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["http.response.status_code"] == 200
    assert attrs["esim.endpoint"] == "usage"
    assert attrs["esim.iccid"] == iccid
    assert attrs["esim.attempts"] == 1
    assert attrs["esim.cache"] == "miss"
    assert "error.type" not in attrs
    assert "http.request.resend_count" not in attrs
    assert usage[0].kind.name == "CLIENT"
    # The token request is a span of its own, not folded into the usage call.
    token = [
        s for s in telemetry.finished() if (s.attributes or {}).get("esim.endpoint") == "token"
    ]
    assert len(token) == 1
    assert token[0].name == "POST /v2/token"
    assert telemetry.total("esim.requests", **{"esim.endpoint": "usage"}) == 1
    assert telemetry.total("esim.cache.misses") == 1
    durations = telemetry.metrics()["http.client.request.duration"]
    assert sum(p.count for p in durations) == 2  # token + usage


async def test_cache_hit_is_a_span_without_a_request(emu: Any, telemetry: Telemetry) -> None:
    iccid = emu.fleet.iccids()[1]
    async with AiraloClient("id", SECRET, base_url=emu.url) as client:
        telemetry.instrument(client)
        await client.sims.usage(iccid)
        await client.sims.usage(iccid)
    spans = telemetry.finished(f"GET {USAGE_ROUTE}")
    assert [(s.attributes or {})["esim.cache"] for s in spans] == ["miss", "hit"]
    hit = spans[1].attributes or {}
    assert hit["esim.attempts"] == 0
    assert "http.response.status_code" not in hit
    assert telemetry.total("esim.cache.hits", **{"esim.cache": "hit"}) == 1
    assert telemetry.total("esim.cache.misses") == 1
    assert telemetry.total("esim.requests", **{"esim.endpoint": "usage"}) == 1


async def test_concurrent_calls_coalesce(emu: Any, telemetry: Telemetry) -> None:
    iccid = emu.fleet.iccids()[2]
    emu.inject("usage", "slow")
    async with AiraloClient("id", SECRET, base_url=emu.url) as client:
        telemetry.instrument(client)
        await asyncio.gather(*(client.sims.usage(iccid) for _ in range(3)))
    kinds = sorted(
        (s.attributes or {})["esim.cache"] for s in telemetry.finished(f"GET {USAGE_ROUTE}")
    )
    assert kinds == ["coalesced", "coalesced", "miss"]
    assert telemetry.total("esim.cache.hits", **{"esim.cache": "coalesced"}) == 2
    assert telemetry.total("esim.requests", **{"esim.endpoint": "usage"}) == 1


async def test_429_is_retried_and_recorded(emu: Any, telemetry: Telemetry) -> None:
    iccid = emu.fleet.iccids()[3]
    emu.inject("usage", "429")
    async with AiraloClient("id", SECRET, base_url=emu.url) as client:
        telemetry.instrument(client)
        await client.sims.usage(iccid)
    (span,) = telemetry.finished(f"GET {USAGE_ROUTE}")
    attrs = span.attributes or {}
    assert attrs["esim.attempts"] == 2
    assert attrs["http.request.resend_count"] == 1
    assert attrs["http.response.status_code"] == 200
    assert "error.type" not in attrs
    assert telemetry.total("esim.rate_limited", **{"esim.endpoint": "usage"}) == 1
    assert telemetry.total("esim.retries", **{"esim.endpoint": "usage"}) == 1


async def test_failed_call_records_error_type(emu: Any, telemetry: Telemetry) -> None:
    iccid = emu.fleet.iccids()[4]
    emu.inject("usage", "500", "500")
    async with AiraloClient("id", SECRET, base_url=emu.url, max_retries=1) as client:
        telemetry.instrument(client)
        with pytest.raises(Exception, match="500"):
            await client.sims.usage(iccid)
    (span,) = telemetry.finished(f"GET {USAGE_ROUTE}")
    attrs = span.attributes or {}
    assert attrs["error.type"] == "500"
    assert attrs["http.response.status_code"] == 500
    assert attrs["esim.attempts"] == 2
    assert span.status.status_code.name == "ERROR"


async def test_budget_wait_under_a_tight_limit(emu: Any, telemetry: Telemetry) -> None:
    iccids = emu.fleet.iccids()[:3]
    async with AiraloClient("id", SECRET, base_url=emu.url, company_rate=Rate(1, 0.2)) as client:
        telemetry.instrument(client)
        await asyncio.gather(*(client.sims.usage(i) for i in iccids))
    spans = telemetry.finished(f"GET {USAGE_ROUTE}")
    assert len(spans) == 3
    waited = [s for s in spans if (s.attributes or {})["esim.budget_wait_s"] > 0]
    assert len(waited) >= 2  # one of three goes at once; the others wait for budget
    assert telemetry.total("esim.budget_wait", **{"esim.endpoint": "usage"}) > 0


async def test_limiter_effective_rate_gauge(emu: Any, telemetry: Telemetry) -> None:
    async with AiraloClient("id", SECRET, base_url=emu.url) as client:
        telemetry.instrument(client)
        await client.sims.usage(emu.fleet.iccids()[5])
        points = telemetry.metrics()["esim.limiter.effective_rate"]
        rates = {p.attributes["esim.endpoint"]: p.value for p in points}
        assert rates["usage"] == pytest.approx(5.0, rel=0.5)
        assert set(client.rate_limit_state()) >= set(rates)


async def test_no_secret_or_token_in_any_attribute(emu: Any, telemetry: Telemetry) -> None:
    async with AiraloClient("id", SECRET, base_url=emu.url) as client:
        telemetry.instrument(client)
        await client.sims.usage(emu.fleet.iccids()[6])
        async for _ in client.packages.list():
            break
    tokens = [str(t) for t in emu.state.tokens]
    assert tokens
    values = _all_attribute_values(telemetry.finished())
    assert values
    for value in values:
        assert SECRET not in value
        assert not any(token in value for token in tokens)
        assert "?" not in value  # no query string in url.full


async def test_switching_off(emu: Any, telemetry: Telemetry) -> None:
    async with AiraloClient("id", SECRET, base_url=emu.url) as client:
        telemetry.instrument(client)
        client.set_instrumentation(None)
        await client.sims.usage(emu.fleet.iccids()[7])
    assert telemetry.finished() == []


def test_route_table_names_templates() -> None:
    table = RouteTable(
        [
            ("sim", "/v2/sims/{iccid}"),
            ("usage", "/v2/sims/{iccid}/usage"),
            ("sims", "/v2/sims"),
            ("topups", "/v2/sims/topups"),
        ]
    )
    assert table.resolve("/v2/sims/123/usage") == ("usage", "/v2/sims/{iccid}/usage")
    assert table.resolve("/v2/sims/123") == ("sim", "/v2/sims/{iccid}")
    assert table.resolve("/v2/sims") == ("sims", "/v2/sims")
    assert table.resolve("/v2/other") == (None, "/v2/other")


def test_importing_the_package_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, esim_async, esim_async.client, esim_async.transport, esim_async.cache\n"
        "bad = [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr

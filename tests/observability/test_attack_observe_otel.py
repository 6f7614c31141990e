"""OpenTelemetry instrumentation against a hostile telemetry pipeline: a span processor or a
meter that raises must never break a call, nor turn a placed order into an error."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from esim_async import AiraloClient, Rate
from esim_async.otel import instrument
from esim_async.testing import Emulator, Fleet

SECRET = "otel-attack-SENTINEL-4c1"


class Broken(SpanProcessor):
    """A span processor that raises where it is told to."""

    def __init__(self, *, on_start: bool = False, on_end: bool = False) -> None:
        self.raise_on_start = on_start
        self.raise_on_end = on_end
        self.calls = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.calls += 1
        if self.raise_on_start:
            raise RuntimeError("processor broken at start")

    def on_end(self, span: ReadableSpan) -> None:
        self.calls += 1
        if self.raise_on_end:
            raise RuntimeError("processor broken at end")


class _BrokenInstrument:
    def add(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("meter broken")

    record = add


class _BrokenMeter:
    def __getattr__(self, name: str) -> Any:
        if name.startswith("create_"):
            return lambda *args, **kwargs: _BrokenInstrument()
        raise AttributeError(name)


class BrokenMeterProvider:
    """A meter provider whose instruments raise at every measurement."""

    def get_meter(self, *args: Any, **kwargs: Any) -> Any:
        return _BrokenMeter()


@pytest.fixture
async def emu() -> Any:
    async with Emulator(fleet=Fleet.generate(6, seed=11)) as emu:
        yield emu


@pytest.fixture
def meter_provider() -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    yield provider
    provider.shutdown()


@pytest.mark.parametrize(("start", "end"), [(True, False), (False, True)])
async def test_a_raising_span_processor_does_not_break_a_usage_call(
    emu: Any, meter_provider: MeterProvider, start: bool, end: bool
) -> None:
    broken = Broken(on_start=start, on_end=end)
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(broken)
    iccid = emu.fleet.iccids()[0]
    async with AiraloClient("id", SECRET, base_url=emu.url) as client:
        instrument(client, tracer_provider=tracer_provider, meter_provider=meter_provider)
        usage = await asyncio.wait_for(client.sims.usage(iccid), 5)
        again = await asyncio.wait_for(client.sims.usage(iccid), 5)  # a cache hit
    assert usage.status is not None and again == usage
    assert broken.calls > 0  # the processor did run (and raise)
    assert emu.stats.usage_by_iccid[iccid] == 1
    tracer_provider.shutdown()


async def test_a_span_processor_raising_after_an_order_does_not_lose_the_order(
    emu: Any, meter_provider: MeterProvider
) -> None:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(Broken(on_end=True))
    async with AiraloClient("id", SECRET, base_url=emu.url) as client:
        instrument(client, tracer_provider=tracer_provider, meter_provider=meter_provider)
        order = await asyncio.wait_for(
            client.orders.create("change-7days-1gb", 1, description="otel-1"), 5
        )
    # The provider placed the order: the caller gets it (an error would invite a second one).
    assert order.id in emu.state.orders
    assert len(emu.state.orders) == 1
    tracer_provider.shutdown()


async def test_a_raising_meter_does_not_break_calls_and_spans_still_record(emu: Any) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    iccids = emu.fleet.iccids()[:3]
    emu.inject("usage", "429")
    async with AiraloClient("id", SECRET, base_url=emu.url) as client:
        instrument(client, tracer_provider=tracer_provider, meter_provider=BrokenMeterProvider())
        first = await asyncio.wait_for(asyncio.gather(*(client.sims.usage(i) for i in iccids)), 5)
        cached = await asyncio.wait_for(client.sims.usage(iccids[0]), 5)
        order = await asyncio.wait_for(
            client.orders.create("change-7days-1gb", 1, description="otel-2"), 5
        )
    assert len(first) == 3 and cached == first[0]
    assert len(emu.state.orders) == 1 and order.id in emu.state.orders
    usage_spans = [s for s in spans.get_finished_spans() if s.name.endswith("/usage")]
    assert len(usage_spans) == 4  # three calls and the cache hit, each one span
    tracer_provider.shutdown()


def _rates(reader: InMemoryMetricReader) -> list[tuple[dict[str, Any], float]]:
    """The data points of the gauge ``esim.limiter.effective_rate``."""
    data = reader.get_metrics_data()
    points: list[tuple[dict[str, Any], float]] = []
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "esim.limiter.effective_rate":
                    points += [(dict(p.attributes), p.value) for p in metric.data.data_points]
    return points


async def test_the_rate_gauge_reports_a_client_instrumented_after_another_is_gone() -> None:
    # Both use one meter provider (as two clients on the global providers do): the gauge of
    # the second must not be lost to the first's registration.
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    tracer_provider = TracerProvider()
    async with Emulator(fleet=Fleet.generate(2, seed=5)) as emu:
        first = AiraloClient("id", SECRET, base_url=emu.url, company_rate=Rate(7, 1.0))
        async with first:
            instrument(first, tracer_provider=tracer_provider, meter_provider=meter_provider)
            await asyncio.wait_for(first.sims.usage(emu.fleet.iccids()[0]), 5)
        del first
        gc.collect()
        async with AiraloClient(
            "id", SECRET, base_url=emu.url, company_rate=Rate(3, 1.0)
        ) as second:
            instrument(second, tracer_provider=tracer_provider, meter_provider=meter_provider)
            await asyncio.wait_for(second.sims.usage(emu.fleet.iccids()[1]), 5)
            usage = [rate for attrs, rate in _rates(reader) if attrs["esim.endpoint"] == "usage"]
    assert usage == [pytest.approx(3.0)]
    meter_provider.shutdown()
    tracer_provider.shutdown()


async def test_the_rate_gauge_reports_two_live_clients_of_two_servers() -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    async with (
        Emulator(fleet=Fleet.generate(1, seed=6)) as one,
        Emulator(fleet=Fleet.generate(1, seed=7)) as two,
        AiraloClient("id", SECRET, base_url=one.url, company_rate=Rate(7, 1.0)) as a,
        AiraloClient("id", SECRET, base_url=two.url, company_rate=Rate(3, 1.0)) as b,
    ):
        instrument(a, meter_provider=meter_provider)
        instrument(b, meter_provider=meter_provider)
        usage = sorted(rate for attrs, rate in _rates(reader) if attrs["esim.endpoint"] == "usage")
    assert usage == [pytest.approx(3.0), pytest.approx(7.0)]
    meter_provider.shutdown()


async def test_switching_off_stops_the_rate_gauge_too() -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    async with (
        Emulator(fleet=Fleet.generate(1, seed=8)) as emu,
        AiraloClient("id", SECRET, base_url=emu.url) as client,
    ):
        otel = instrument(client, meter_provider=meter_provider)
        assert [a for a, _ in _rates(reader) if a["esim.endpoint"] == "usage"]
        client.set_instrumentation(None)
        off = _rates(reader)
        client.set_instrumentation(otel)  # and on again
        on = [a for a, _ in _rates(reader) if a["esim.endpoint"] == "usage"]
    assert off == []
    assert on
    meter_provider.shutdown()


class _FailingState:
    """An instrumentable client whose limiter state cannot be read."""

    base_url = "http://127.0.0.1:9"

    def set_instrumentation(self, instrumentation: Any) -> None:
        self.instrumentation = instrumentation

    def rate_limit_state(self) -> dict[str, Any]:
        raise RuntimeError("state unavailable")


async def test_a_client_whose_state_fails_hides_no_other_clients_rates(emu: Any) -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    broken = _FailingState()
    async with AiraloClient("id", SECRET, base_url=emu.url, company_rate=Rate(3, 1.0)) as client:
        instrument(broken, meter_provider=meter_provider)
        instrument(client, meter_provider=meter_provider)
        usage = [rate for attrs, rate in _rates(reader) if attrs["esim.endpoint"] == "usage"]
    assert usage == [pytest.approx(3.0)]
    meter_provider.shutdown()


def test_without_opentelemetry_the_client_works_and_instrument_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "import asyncio\n"
        "from esim_async import AiraloClient\n"
        "from esim_async.otel import instrument\n"
        "from esim_async.testing import Emulator, Fleet\n"
        "async def main():\n"
        "    async with Emulator(fleet=Fleet.generate(1, seed=1)) as emu:\n"
        "        async with AiraloClient('id', 'secret', base_url=emu.url) as client:\n"
        "            try:\n"
        "                instrument(client)\n"
        "            except ImportError as exc:\n"
        "                assert 'esim-async[otel]' in str(exc), exc\n"
        "            else:\n"
        "                raise AssertionError('instrument() without OpenTelemetry')\n"
        "            await client.sims.usage(emu.fleet.iccids()[0])\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr

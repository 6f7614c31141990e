"""OpenTelemetry's SDK with in-memory exporters, for the tests that trace a client."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from esim_async.otel import OpenTelemetry, instrument


class Telemetry:
    """OpenTelemetry spans and metrics of a client, kept in memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def instrument(self, client: Any) -> OpenTelemetry:
        return instrument(
            client, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

"""Prometheus metrics for the fleet monitor and the webhook receiver.

Install the extra (``pip install "esim-async[metrics]"``) and serve ``/metrics``::

    from esim_async.metrics import MonitorCollector, serve_metrics

    registry = CollectorRegistry()
    registry.register(MonitorCollector(monitor, client))
    async with serve_metrics(registry, "127.0.0.1", 9108):
        ...

The collectors read live values at every scrape (nothing is copied in between), and the page
is served by ``aiohttp`` on the running event loop, so values are read on the loop that changes
them.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .clock import MonotonicClock
from .models.usage import Usage

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from .client import BaseClient
    from .monitor import FleetMonitor

__all__ = [
    "NEAR_MARGIN",
    "FleetSummary",
    "MonitorCollector",
    "WebhookCollector",
    "fleet_summary",
    "is_near",
    "metrics_app",
    "new_registry",
    "serve_metrics",
    "summarise",
]

#: An eSIM is near a threshold when its data used is within this fraction of the next one.
NEAR_MARGIN = 0.05
#: Receiver counters that are refusals, and the HTTP status each gets.
REFUSALS = {"rejected": 401, "too_large": 413, "malformed": 400}


def is_near(
    usage: Usage | None,
    fired: Iterable[float],
    thresholds: Iterable[float],
    margin: float = NEAR_MARGIN,
) -> bool:
    """True when ``usage`` is at most ``margin`` (fraction of data) below the next threshold
    not reported yet (``fired``: the thresholds already reported for its package)."""
    if usage is None or usage.is_unlimited or not usage.raw_total:
        return False
    if usage.raw_remaining is None:
        return False
    total = usage.raw_total
    used = (total - max(0, usage.raw_remaining)) / total
    done = set(fired)
    for threshold in sorted(thresholds):
        if threshold not in done:
            return used >= threshold - margin
    return False


@dataclass(slots=True)
class FleetSummary:
    """The state of a tracked fleet at one moment (counts and reading ages in seconds)."""

    tracked: int = 0
    #: eSIMs by the status of their last reading (``unread`` before the first, ``missing``
    #: after a 404).
    by_status: Counter[str] = field(default_factory=Counter)
    near_threshold: int = 0
    #: Age of the most recent reading of any eSIM (``None``: nothing read yet).
    freshest_age: float | None = None
    #: Age of the oldest last reading of any eSIM read at least once.
    stalest_age: float | None = None


def summarise(
    rows: Iterable[tuple[Usage | None, datetime | None, Iterable[float], bool]],
    thresholds: Iterable[float],
    now: datetime | None = None,
) -> FleetSummary:
    """A :class:`FleetSummary` of ``(usage, read_at, fired, missing)`` rows."""
    marks = tuple(thresholds)
    now = now if now is not None else datetime.fromtimestamp(MonotonicClock().wall(), UTC)
    summary = FleetSummary()
    for usage, read_at, fired, missing in rows:
        summary.tracked += 1
        if missing:
            status = "missing"
        elif usage is None:
            status = "unread"
        else:
            status = str(usage.status)
        summary.by_status[status] += 1
        if not missing and is_near(usage, fired, marks):
            summary.near_threshold += 1
        if read_at is not None:
            age = max(0.0, (now - read_at).total_seconds())
            if summary.freshest_age is None or age < summary.freshest_age:
                summary.freshest_age = age
            if summary.stalest_age is None or age > summary.stalest_age:
                summary.stalest_age = age
    return summary


def fleet_summary(monitor: FleetMonitor, now: datetime | None = None) -> FleetSummary:
    """The :class:`FleetSummary` of what ``monitor`` knows now."""

    def rows() -> Iterator[tuple[Usage | None, datetime | None, Iterable[float], bool]]:
        for iccid in monitor.tracked():
            sim = monitor.snapshot(iccid)
            if sim is not None:
                yield sim.usage, sim.read_at, sim.fired, sim.missing

    return summarise(rows(), monitor.thresholds, now)


def _families() -> Any:
    try:
        from prometheus_client import core
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            'metrics need prometheus_client: pip install "esim-async[metrics]"'
        ) from exc
    return core


class MonitorCollector:
    """A Prometheus collector of a running :class:`~esim_async.monitor.FleetMonitor` and its
    client: reads, errors, events by kind, eSIMs tracked and near a threshold, the ages of the
    freshest and stalest readings, the usage limiter's effective rate and waiters, and 429s."""

    def __init__(self, monitor: FleetMonitor, client: BaseClient) -> None:
        self._monitor = monitor
        self._client = client

    def collect(self) -> Iterator[Any]:
        """The metric families, read live (called by the registry at every scrape)."""
        core = _families()
        stats = self._monitor.stats
        reads = core.CounterMetricFamily(
            "esim_monitor_reads", "Usage readings received by the monitor."
        )
        reads.add_metric([], stats.reads)
        yield reads
        errors = core.CounterMetricFamily(
            "esim_monitor_read_errors", "Usage reads that failed (retried later)."
        )
        errors.add_metric([], stats.errors)
        yield errors
        events = core.CounterMetricFamily(
            "esim_monitor_events", "Events emitted by the monitor, by kind.", labels=["kind"]
        )
        for kind, count in sorted(stats.events.items()):
            events.add_metric([kind], count)
        yield events
        summary = fleet_summary(self._monitor)
        tracked = core.GaugeMetricFamily(
            "esim_monitor_tracked_esims",
            "eSIMs tracked, by the status of their last reading.",
            labels=["status"],
        )
        for status, count in sorted(summary.by_status.items()):
            tracked.add_metric([status], count)
        yield tracked
        near = core.GaugeMetricFamily(
            "esim_monitor_near_threshold_esims",
            f"eSIMs within {NEAR_MARGIN:.0%} of data of their next threshold.",
        )
        near.add_metric([], summary.near_threshold)
        yield near
        for name, age, text in (
            ("freshest", summary.freshest_age, "the most recent reading"),
            ("stalest", summary.stalest_age, "the oldest last reading of an eSIM"),
        ):
            if age is not None:
                gauge = core.GaugeMetricFamily(
                    f"esim_monitor_{name}_reading_age_seconds", f"Age of {text}."
                )
                gauge.add_metric([], age)
                yield gauge
        yield from _client_families(core, self._client)


def _client_families(core: Any, client: BaseClient) -> Iterator[Any]:
    rate = core.GaugeMetricFamily(
        "esim_rate_limit_effective_per_second",
        "Requests per second the client's limiter admits now, by endpoint.",
        labels=["endpoint"],
    )
    waiters = core.GaugeMetricFamily(
        "esim_rate_limit_waiters",
        "Requests waiting for the client's limiter, by endpoint.",
        labels=["endpoint"],
    )
    for endpoint, state in sorted(client.rate_limit_state().items()):
        if state.effective_per_second is not None:
            rate.add_metric([endpoint], state.effective_per_second)
        waiters.add_metric([endpoint], state.waiters)
    yield rate
    yield waiters
    limited = core.CounterMetricFamily(
        "esim_rate_limited_responses", "429 responses received by the client."
    )
    limited.add_metric([], client.stats.rate_limited)
    yield limited


class WebhookCollector:
    """A Prometheus collector of a webhook receiver: events received by type, duplicates and
    refusals by HTTP status.

    Args:
        stats: the receiver's counters (``app[RECEIVER].stats``), read at every scrape.
        by_type: new events by type name, kept by the caller's handler.
    """

    def __init__(self, stats: Mapping[str, int], by_type: Mapping[str, int]) -> None:
        self._stats = stats
        self._by_type = by_type

    def collect(self) -> Iterator[Any]:
        """The metric families, read live (called by the registry at every scrape)."""
        core = _families()
        received = core.CounterMetricFamily(
            "esim_webhook_requests", "Notifications received (verified or not)."
        )
        received.add_metric([], self._stats.get("received", 0))
        yield received
        events = core.CounterMetricFamily(
            "esim_webhook_events", "New verified events, by type.", labels=["type"]
        )
        for name, count in sorted(self._by_type.items()):
            events.add_metric([name], count)
        yield events
        duplicates = core.CounterMetricFamily(
            "esim_webhook_duplicates", "Redelivered notifications answered without handling."
        )
        duplicates.add_metric([], self._stats.get("duplicates", 0))
        yield duplicates
        refusals = core.CounterMetricFamily(
            "esim_webhook_refusals", "Notifications refused, by HTTP status.", labels=["status"]
        )
        for key, status in sorted(REFUSALS.items(), key=lambda item: item[1]):
            refusals.add_metric([str(status)], self._stats.get(key, 0))
        yield refusals


def metrics_app(registry: CollectorRegistry) -> web.Application:
    """An ``aiohttp`` application serving ``registry`` at ``/metrics`` (text format)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


@contextlib.asynccontextmanager
async def serve_metrics(
    registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 9108
) -> AsyncIterator[int]:
    """Serve ``registry`` at ``http://host:port/metrics`` for the duration of the block;
    yields the bound port (useful with ``port=0``)."""
    runner = web.AppRunner(
        metrics_app(registry), access_log=None, handle_signals=False, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        yield int(bound)
    finally:
        await runner.cleanup()


def new_registry(*collectors: Any) -> CollectorRegistry:
    """A registry holding only ``collectors`` (no process or platform metrics)."""
    try:
        from prometheus_client import CollectorRegistry
    except ImportError as exc:
        raise RuntimeError(
            'metrics need prometheus_client: pip install "esim-async[metrics]"'
        ) from exc
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry

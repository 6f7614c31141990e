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
import functools
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .clock import MonotonicClock
from .models.usage import Usage, UsageStatus

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
    "status_labels",
    "summarise",
]

#: An eSIM is near a threshold when its data used is within this fraction of the next one.
NEAR_MARGIN = 0.05
#: Label values of statuses the provider does not document, kept by name at most (the rest
#: are counted as :data:`OTHER_STATUS`), and the form such a value must have to be kept.
MAX_NEW_STATUSES = 8
_STATUS_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
#: The label value of every other status.
OTHER_STATUS = "other"
#: Receiver counters that are refusals, and the HTTP status each gets.
REFUSALS = {"rejected": 401, "too_large": 413, "malformed": 400}
_MISSING = 'metrics need prometheus_client: pip install "esim-async[metrics]"'


def is_near(
    usage: Usage | None,
    fired: Iterable[float],
    thresholds: Iterable[float],
    margin: float = NEAR_MARGIN,
) -> bool:
    """True when ``usage`` is at most ``margin`` (fraction of data) below the next threshold
    not reported yet (``fired``: the thresholds already reported for its package)."""
    if usage is None or usage.is_unlimited or not usage.raw_total or usage.raw_remaining is None:
        return False
    total = usage.raw_total
    used = (total - max(0, usage.raw_remaining)) / total
    done = set(fired)
    target = min((t for t in thresholds if t not in done), default=None)
    return target is not None and used >= target - margin


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
    ages = []
    for usage, read_at, fired, missing in rows:
        summary.tracked += 1
        status = "missing" if missing else "unread" if usage is None else str(usage.status)
        summary.by_status[status] += 1
        if not missing and is_near(usage, fired, marks):
            summary.near_threshold += 1
        if read_at is not None:
            ages.append(max(0.0, (now - read_at).total_seconds()))
    if ages:
        summary.freshest_age, summary.stalest_age = min(ages), max(ages)
    return summary


def status_labels(by_status: Mapping[str, int]) -> Counter[str]:
    """``by_status`` with a bounded set of keys, for a metric label: the documented statuses
    (and ``unread``, ``missing``), at most :data:`MAX_NEW_STATUSES` others shaped like a status
    name (the most common first), and the rest summed as :data:`OTHER_STATUS`."""
    fixed = {*UsageStatus.__members__, "unread", "missing"}
    labels: Counter[str] = Counter()
    new = [s for s in by_status if s not in fixed and _STATUS_NAME.fullmatch(s)]
    kept = set(sorted(new, key=lambda s: (-by_status[s], s))[:MAX_NEW_STATUSES])
    for status, count in by_status.items():
        labels[status if status in fixed or status in kept else OTHER_STATUS] += count
    return labels


def fleet_summary(monitor: FleetMonitor, now: datetime | None = None) -> FleetSummary:
    """The :class:`FleetSummary` of what ``monitor`` knows now."""
    sims = (monitor.snapshot(iccid) for iccid in monitor.tracked())
    rows = ((s.usage, s.read_at, s.fired, s.missing) for s in sims if s is not None)
    return summarise(rows, monitor.thresholds, now)


def _families() -> Any:
    try:
        from prometheus_client import core
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(_MISSING) from exc
    return core


def _family(
    cls: Any, name: str, text: str, value: float = 0.0, *, label: str = "", samples: Any = ()
) -> Any:
    """A metric family of class ``cls``: one ``value``, or with a ``label``, one sample per
    ``(label value, value)`` of ``samples``."""
    family = cls(name, text, labels=[label] if label else None)
    for key, sample in samples if label else [((), value)]:
        family.add_metric([str(key)] if label else [], sample)
    return family


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
        counter = functools.partial(_family, core.CounterMetricFamily)
        gauge = functools.partial(_family, core.GaugeMetricFamily)
        stats, summary = self._monitor.stats, fleet_summary(self._monitor)
        yield counter("esim_monitor_reads", "Usage readings received by the monitor.", stats.reads)
        yield counter(
            "esim_monitor_read_errors", "Usage reads that failed (retried later).", stats.errors
        )
        yield counter(
            "esim_monitor_events",
            "Events emitted by the monitor, by kind.",
            label="kind",
            samples=sorted(stats.events.items()),
        )
        yield gauge(
            "esim_monitor_tracked_esims",
            "eSIMs tracked, by the status of their last reading.",
            label="status",
            samples=sorted(status_labels(summary.by_status).items()),
        )
        yield gauge(
            "esim_monitor_near_threshold_esims",
            f"eSIMs within {NEAR_MARGIN:.0%} of data of their next threshold.",
            summary.near_threshold,
        )
        for name, age, text in (
            ("freshest", summary.freshest_age, "the most recent reading"),
            ("stalest", summary.stalest_age, "the oldest last reading of an eSIM"),
        ):
            if age is not None:
                yield gauge(f"esim_monitor_{name}_reading_age_seconds", f"Age of {text}.", age)
        limiters = sorted(self._client.rate_limit_state().items())
        yield gauge(
            "esim_rate_limit_effective_per_second",
            "Requests per second the client's limiter admits now, by endpoint.",
            label="endpoint",
            samples=[
                (n, s.effective_per_second)
                for n, s in limiters
                if s.effective_per_second is not None
            ],
        )
        yield gauge(
            "esim_rate_limit_waiters",
            "Requests waiting for the client's limiter, by endpoint.",
            label="endpoint",
            samples=[(n, s.waiters) for n, s in limiters],
        )
        yield counter(
            "esim_rate_limited_responses",
            "429 responses received by the client.",
            self._client.stats.rate_limited,
        )


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
        counter = functools.partial(_family, _families().CounterMetricFamily)
        stats = self._stats
        yield counter(
            "esim_webhook_requests",
            "Notifications received (verified or not).",
            stats.get("received", 0),
        )
        yield counter(
            "esim_webhook_events",
            "New verified events, by type.",
            label="type",
            samples=sorted(self._by_type.items()),
        )
        yield counter(
            "esim_webhook_duplicates",
            "Redelivered notifications answered without handling.",
            stats.get("duplicates", 0),
        )
        yield counter(
            "esim_webhook_refusals",
            "Notifications refused, by HTTP status.",
            label="status",
            samples=sorted((status, stats.get(key, 0)) for key, status in REFUSALS.items()),
        )


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
async def serve_app(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``app`` at ``http://host:port`` for the duration of the block; yields the bound
    port (useful with ``port=0``)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield int(runner.addresses[0][1] if runner.addresses else port)
    finally:
        await runner.cleanup()


def serve_metrics(
    registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 9108
) -> contextlib.AbstractAsyncContextManager[int]:
    """Serve ``registry`` at ``http://host:port/metrics`` for the duration of the block;
    yields the bound port (useful with ``port=0``)."""
    return serve_app(metrics_app(registry), host, port)


def new_registry(*collectors: Any) -> CollectorRegistry:
    """A registry holding only ``collectors`` (no process or platform metrics)."""
    registry: CollectorRegistry = _families().CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry

"""The Prometheus collectors with odd values from the provider: label values stay few and
every eSIM is counted once."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import generate_latest, parser

from esim_async.metrics import MonitorCollector, new_registry
from esim_async.models.usage import Usage, UsageStatus

NOW = datetime(2026, 11, 1, tzinfo=UTC)


class FakeMonitor:
    """What the collector reads of a monitor: its stats, thresholds and tracked eSIMs."""

    def __init__(self, statuses: list[str]) -> None:
        self.stats = SimpleNamespace(reads=len(statuses), errors=0, events=Counter())
        self.thresholds = (0.75, 0.9)
        self._sims = {
            f"89440000000000{n:05d}": SimpleNamespace(
                usage=Usage(raw_remaining=500, raw_total=1000, status=UsageStatus(status)),
                read_at=NOW,
                fired=(),
                missing=False,
            )
            for n, status in enumerate(statuses)
        }

    def tracked(self) -> list[str]:
        return list(self._sims)

    def snapshot(self, iccid: str) -> Any:
        return self._sims.get(iccid)


class FakeClient:
    stats = SimpleNamespace(rate_limited=0)

    def rate_limit_state(self) -> dict[str, Any]:
        return {}


def tracked_by_status(monitor: FakeMonitor) -> dict[str, float]:
    registry = new_registry(MonitorCollector(monitor, FakeClient()))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {
        sample.labels["status"]: sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "esim_monitor_tracked_esims"
    }


def test_a_status_per_esim_does_not_make_a_label_value_per_esim() -> None:
    # The provider sends free text as the status (a new value per eSIM): the gauge keeps a
    # bounded set of label values and still counts every eSIM once.
    statuses = ["ACTIVE"] * 3 + ["FINISHED"] + [f"Suspended until day {n}" for n in range(200)]
    by_status = tracked_by_status(FakeMonitor(statuses))
    assert sum(by_status.values()) == len(statuses)
    assert by_status["ACTIVE"] == 3 and by_status["FINISHED"] == 1
    assert len(by_status) <= 16


def test_a_few_new_statuses_keep_their_names() -> None:
    statuses = ["ACTIVE", "SUSPENDED", "SUSPENDED", "PORTED_OUT"]
    assert tracked_by_status(FakeMonitor(statuses)) == {
        "ACTIVE": 1.0,
        "SUSPENDED": 2.0,
        "PORTED_OUT": 1.0,
    }

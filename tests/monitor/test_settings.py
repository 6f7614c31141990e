"""What the monitor takes from its client: the cache TTL, the usage limits and the clock, from
``client.config``, or from ``rate_limit_state()`` and the monitor's own arguments without it."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest

from esim_async import AiraloClient, InvalidRequestError, LimiterState, ManualClock, Rate
from esim_async.monitor import FleetMonitor
from esim_async.monitor.settings import read_client


def test_the_view_follows_the_clients_config() -> None:
    clock = ManualClock()
    client = AiraloClient(
        "id",
        "secret",
        cache_ttl=2.0,
        company_rate=Rate(50, 1.0),
        iccid_rate=Rate(10, 0.5),
        clock=clock,
        sandbox=True,
        sandbox_rate=Rate(600, 60.0),
    )
    view = read_client(client)
    assert (view.cache_ttl, view.company, view.per_key) == (2.0, Rate(50, 1.0), Rate(10, 0.5))
    assert view.account == Rate(600, 60.0)
    assert view.clock.now() == clock.now()
    # One account on one host: the lease of a sandbox and of production never collide.
    assert view.account_name == f"airalo:id@{client.config.base_url}"
    assert view.unit == 2.0  # the cache outlasts the per-eSIM spacing (0.05 s)
    # The budget: the tightest of the company (50/s) and account (10/s) limits, less margin.
    per_second, burst = view.budget(0.5)
    assert per_second == pytest.approx(0.5 * 600 / (60.0 * 1.02))
    assert burst == 300
    monitor = FleetMonitor(client)
    assert monitor.unit == 2.0


def stub_client(state: LimiterState, profile_ttl: float = 1200.0) -> Any:
    """A client-like object without ``config``: only the public surface before it existed."""
    return SimpleNamespace(
        profile=SimpleNamespace(name="stub", cache_ttl=profile_ttl),
        client_id="id",
        rate_limit_state=lambda: {"usage": state},
    )


def test_without_config_the_limits_come_from_rate_limit_state() -> None:
    state = LimiterState("usage", Rate(5, 1.0), Rate(10, 60.0), 5.0, -math.inf, 0.0, 0, 0)
    clock = ManualClock()
    view = read_client(stub_client(state), cache_ttl=0.5, clock=clock)
    assert (view.company, view.per_key, view.cache_ttl) == (Rate(5, 1.0), Rate(10, 60.0), 0.5)
    assert view.clock is clock
    assert view.unit == pytest.approx(60.0 * 1.02 / 10)  # the per-eSIM limit is the longer
    # Without a cache_ttl argument, the provider's documented cache time.
    assert read_client(stub_client(state, profile_ttl=1200.0)).cache_ttl == 1200.0


def test_a_client_with_neither_a_cache_nor_limits_is_refused() -> None:
    state = LimiterState("usage", None, None, None, -math.inf, 0.0, 0, 0)
    with pytest.raises(InvalidRequestError, match="cache TTL or usage limits"):
        _ = read_client(stub_client(state), cache_ttl=0.0).unit

"""``EndpointLimiter.admit_now``: the request its limits let go at once, without a wait."""

from __future__ import annotations

import pytest

from esim_async import ManualClock
from esim_async.limits import EndpointLimiter, LimiterClosedError, Rate


def _lifted(clock: ManualClock) -> EndpointLimiter:
    return EndpointLimiter("usage", shared=None, per_key=None, clock=clock, stamp_sends=True)


async def test_lifted_limits_admit_a_request_at_once() -> None:
    clock = ManualClock()
    limiter = _lifted(clock)
    slot = limiter.admit_now("8944465400000267221")
    assert slot is not None and slot.sent  # nothing to stamp or give back
    assert clock.now() == 0.0
    await limiter.aclose()


async def test_a_window_is_never_admitted_without_acquire() -> None:
    clock = ManualClock()
    shared = EndpointLimiter("usage", shared=Rate(5, 1.0), per_key=None, clock=clock)
    per_key = EndpointLimiter("usage", shared=None, per_key=Rate(10, 60.0), clock=clock)
    assert shared.admit_now(None) is None
    assert per_key.admit_now("8944465400000267221") is None
    assert per_key.admit_now(None) is not None  # no key: no window counts it
    await shared.aclose()
    await per_key.aclose()


async def test_a_cool_down_holds_back_what_admit_now_would_let_go() -> None:
    clock = ManualClock()
    limiter = _lifted(clock)
    await limiter.penalize(5.0, cap=60.0)
    assert limiter.admit_now(None) is None  # acquire waits the cool-down out
    clock.advance(5.0)
    assert limiter.admit_now(None) is not None
    await limiter.aclose()


async def test_a_closed_limiter_admits_nothing() -> None:
    limiter = _lifted(ManualClock())
    await limiter.aclose()
    assert limiter.admit_now(None) is None
    with pytest.raises(LimiterClosedError):
        await limiter.acquire(None)

"""The independent arrival log used to check the emulator's zero-429 claims."""

from __future__ import annotations

import re

import pytest

from esim_async import Rate

from ..arrivals import ArrivalLog, max_in_any_window, most_crowded_window


class Ticks:
    """A clock the test sets."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def log_of(entries: list[tuple[float, str]]) -> ArrivalLog:
    ticks = Ticks()
    log = ArrivalLog(clock=ticks)
    for t, path in entries:
        ticks.now = t
        log.record("GET", path)
    return log


def usage(iccid: str) -> str:
    return f"/v2/sims/{iccid}/usage"


def test_windows_are_half_open() -> None:
    assert max_in_any_window([], 1.0) == 0
    assert max_in_any_window([0.0, 0.5, 1.0, 1.5], 1.0) == 2
    assert max_in_any_window([0.0, 0.5, 0.999, 1.5], 1.0) == 3
    assert most_crowded_window([0.0, 3.0, 3.25, 3.5, 9.0], 1.0) == (3, 3.0)


def test_usage_arrivals_by_iccid_and_company_wide() -> None:
    log = log_of(
        [
            (0.0, usage("111")),
            (0.1, "/v2/token"),
            (0.2, usage("222")),
            (0.3, "/customer/v2/sims/111/usage"),
            (0.4, "/cusomter/v2/sims/333/usage"),
            (0.5, "/v2/sims/111/packages"),
        ]
    )
    assert log.count() == 4
    assert log.times() == [0.0, 0.2, 0.3, 0.4]
    assert log.times_by_key() == {"111": [0.0, 0.3], "222": [0.2], "333": [0.4]}
    assert log.violations(company=Rate(4, 1.0), per_key=Rate(2, 1.0)) == []
    problems = log.violations(company=Rate(3, 1.0), per_key=Rate(1, 0.3))
    assert problems == [
        "company-wide: 4 arrivals in [0.000000, 1.000000), limit 3 per 1.0 s",
    ]
    problems = log.violations(per_key=Rate(1, 0.31))
    assert problems == ["key 111: 2 arrivals in [0.000000, 0.310000), limit 1 per 0.31 s"]
    with pytest.raises(AssertionError, match="key 111"):
        log.assert_usage_within(iccid=Rate(1, 1.0))
    log.assert_usage_within(company=Rate(4, 0.4), iccid=Rate(2, 60.0))


def test_other_endpoints_by_pattern() -> None:
    history = re.compile(r"/sims/(?P<key>[^/]+)/packages$")
    log = log_of([(0.0, "/v2/sims/1/packages"), (5.0, "/v2/sims/1/packages"), (6.0, usage("1"))])
    assert log.times_by_key(history) == {"1": [0.0, 5.0]}
    assert log.violations(per_key=Rate(1, 900.0), pattern=history) == [
        "key 1: 2 arrivals in [0.000000, 900.000000), limit 1 per 900.0 s"
    ]

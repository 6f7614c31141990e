"""The emulator's windows, looked up by limit name and key."""

from __future__ import annotations

from esim_async.limits import Rate
from esim_async.testing.limits import Windows


def test_a_window_is_found_by_name_and_key_once_an_arrival_opened_it() -> None:
    windows = Windows()
    assert windows.get("usage_company", "all") is None
    assert windows.hit("usage_company", "all", Rate(5, 1.0), "sliding", 0.0) is None
    window = windows.get("usage_company", "all")
    assert window is not None
    assert window.remaining() == 4
    assert windows.get("usage_company", "other") is None
    windows.reset("usage_company")
    assert windows.get("usage_company", "all") is None

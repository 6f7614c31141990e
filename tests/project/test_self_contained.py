"""The suite needs nothing beside the repository, and a hang fails a test instead of CI."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_payload_fixtures_live_in_the_repository() -> None:
    from tests.conftest import PAYLOADS

    assert PAYLOADS.is_relative_to(ROOT)
    assert (PAYLOADS / "airalo" / "usage_200.json").is_file()


def test_every_payload_a_test_reads_is_in_the_repository() -> None:
    import re

    from tests.conftest import PAYLOADS

    names = set()
    for path in (ROOT / "tests").rglob("*.py"):
        names.update(re.findall(r'payload\("([^"]+)"\)', path.read_text()))
    assert names, "no payload reads found"
    missing = sorted(n for n in names if not (PAYLOADS / n).is_file())
    assert missing == []


def test_a_per_test_timeout_is_configured(pytestconfig: pytest.Config) -> None:
    # pytest-timeout is installed with the test extras and has a default limit in force.
    assert pytestconfig.pluginmanager.hasplugin("timeout")
    assert float(pytestconfig.getini("timeout")) > 0

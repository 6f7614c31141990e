"""The README's runnable examples run as written (the ones that start the emulator)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
RUNNABLE = [b for b in BLOCKS if "Emulator(" in b and "asyncio.run(" in b]


def test_readme_has_runnable_examples() -> None:
    assert len(RUNNABLE) >= 2


@pytest.mark.parametrize("code", RUNNABLE, ids=[f"example{i}" for i in range(len(RUNNABLE))])
def test_readme_example_runs(code: str) -> None:
    # A fresh interpreter, as a reader would run it (asyncio.run needs no running loop).
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_readme_test_command_matches_ci() -> None:
    ci = (README.parent / ".ci" / "run").read_text()
    command = 'pip install ".[test]" && python -m pytest'
    assert command in ci
    assert command in README.read_text()

"""``esim-async monitor --emulator --db``: the side file that keeps the demonstration fleet's
life between runs is only a hint. A damaged one starts a fresh fleet instead of a crash, and
a sound one is resumed from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from esim_async.cli import main

SMALL = ["--emulator", "--emulator-size", "5", "--duration", "0.3", "--quiet"]


def run_monitor(db: Path) -> int:
    result = CliRunner().invoke(main, ["monitor", *SMALL, "--db", str(db)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code


@pytest.mark.parametrize(
    "text",
    [
        "[1]",
        "null",
        '{"elapsed": "soon"}',
        '{"elapsed": 5, "generated_at": "not a date"}',
        '{"generated_at": 7}',
        "{cut short",
    ],
)
def test_a_damaged_side_file_starts_a_fresh_fleet(tmp_path: Path, text: str) -> None:
    db = tmp_path / "fleet.db"
    side = tmp_path / "fleet.db.emulator.json"
    side.write_text(text)
    assert run_monitor(db) == 0
    saved = json.loads(side.read_text())  # written anew at the end of the run
    assert isinstance(saved["elapsed"], float) and 0.0 <= saved["elapsed"] < 60
    assert isinstance(saved["generated_at"], str)


def test_a_sound_side_file_is_resumed(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    side = tmp_path / "fleet.db.emulator.json"
    side.write_text('{"elapsed": 1000.0, "generated_at": "2026-01-02T03:04:05+00:00"}')
    assert run_monitor(db) == 0
    saved = json.loads(side.read_text())
    assert 1000.0 < saved["elapsed"] < 1060.0
    assert saved["generated_at"].startswith("2026-01-02T03:04:05")

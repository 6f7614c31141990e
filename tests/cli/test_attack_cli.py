"""The command line on bad files and paths: a file that cannot be read or written, a malformed
ICCID, a file that is not a monitor's store. Each is a usage error (exit 2) naming what is
wrong, without a traceback, before any request is made or anything is written."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from esim_async.cli import main

GOOD = "89103000000000000017"
#: Nothing listens there: a request would fail, and none should be made.
NOWHERE = "http://127.0.0.1:9"
ENV = {"AIRALO_CLIENT_ID": "id", "AIRALO_CLIENT_SECRET": "secret"}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=ENV, catch_exceptions=False)
    return result.exit_code, result.stderr


def monitor(*args: str) -> tuple[int, str]:
    return run("monitor", "--base-url", NOWHERE, "--duration", "0", *args)


@pytest.fixture
def fleet_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.txt"
    path.write_text(GOOD + "\n")
    return path


def test_monitor_with_a_missing_iccids_file_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    code, err = monitor("--iccids", str(missing))
    assert code == 2
    assert "nope.txt" in err and "Traceback" not in err


def test_sweep_with_a_missing_iccids_file_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    code, err = run("sweep", "--base-url", NOWHERE, "--iccids", str(missing), "--quiet")
    assert code == 2
    assert "nope.txt" in err


def test_a_malformed_iccid_in_the_file_is_named_and_nothing_is_stored(tmp_path: Path) -> None:
    listed = tmp_path / "fleet.txt"
    listed.write_text(f"{GOOD}\n8910-not-an-iccid\n")
    db = tmp_path / "fleet.db"
    code, err = monitor("--iccids", str(listed), "--db", str(db))
    assert code == 2
    assert "8910-not-an-iccid" in err and "line 2" in err
    assert not db.exists()


def test_a_store_in_a_missing_directory_is_a_usage_error(tmp_path: Path, fleet_file: Path) -> None:
    code, err = monitor("--iccids", str(fleet_file), "--db", str(tmp_path / "no" / "fleet.db"))
    assert code == 2
    assert "fleet.db" in err


def test_a_file_that_is_not_a_store_is_refused_and_left_alone(
    tmp_path: Path, fleet_file: Path
) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("my notes, not a database\n" * 20)
    before = notes.read_bytes()
    code, err = monitor("--iccids", str(fleet_file), "--db", str(notes))
    assert code == 2
    assert "notes.db" in err
    code, err = run("monitor", "status", "--db", str(notes))
    assert code == 2
    assert "notes.db" in err
    assert notes.read_bytes() == before


def test_status_reads_the_store_without_writing_to_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    code, err = run("monitor", "status", "--db", str(empty), "--json")
    assert code == 0, err
    assert empty.stat().st_size == 0  # nothing created in a file given to be read
    # Another program's database is not the monitor's: refused, untouched.
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    before = other.read_bytes()
    code, err = run("monitor", "status", "--db", str(other))
    assert code == 2
    assert "other.db" in err
    assert other.read_bytes() == before


def test_an_events_file_that_cannot_be_opened_is_refused_before_tracking(
    tmp_path: Path, fleet_file: Path
) -> None:
    db = tmp_path / "fleet.db"
    code, err = monitor(
        "--iccids", str(fleet_file), "--db", str(db), "--events", str(tmp_path / "no" / "e.jsonl")
    )
    assert code == 2
    assert "e.jsonl" in err
    assert not db.exists()


def test_resume_of_a_csv_cut_mid_row_answers_the_cut_iccid_again(tmp_path: Path) -> None:
    """A CSV output cut short in the middle of a row (the process killed mid-write): that row
    is no answer, its eSIM is read again; every eSIM ends with exactly one complete row."""
    import csv
    import io

    from esim_async.cli import RECORD_FIELDS
    from esim_async.testing import Fleet

    fleet = Fleet.generate(6, seed=2026).iccids()
    source = tmp_path / "iccids.txt"
    source.write_text("\n".join(fleet) + "\n")
    out = tmp_path / "out.csv"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RECORD_FIELDS)
    writer.writeheader()
    writer.writerow({"iccid": fleet[0], "status": "ACTIVE", "remaining": 10, "total": 100})
    cut = f"{fleet[1]},ACTIVE,4"  # the rest of the row never reached the disk
    out.write_text(buffer.getvalue() + cut)
    code, err = run(
        "sweep",
        "--emulator",
        "--emulator-size",
        "6",
        "--company-rate",
        "40/1",
        "--iccids",
        str(source),
        "--out",
        str(out),
        "--format",
        "csv",
        "--resume",
    )
    assert code == 0, err
    assert "1 skipped" in err
    with out.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if None not in r.values()]
    assert sorted(r["iccid"] for r in rows) == sorted(fleet)

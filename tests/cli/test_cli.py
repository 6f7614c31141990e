"""The esim-async command line: outputs, --resume, exit codes, credentials."""

from __future__ import annotations

import asyncio
import csv
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from esim_async.cli import main
from esim_async.testing import Emulator, Fleet, ServerLimits

FAST = ["--company-rate", "40/1", "--iccid-rate", "10/60"]


@pytest.fixture
def served() -> Iterator[Emulator]:
    """An emulator on its own loop in a thread, for commands that run their own loop."""
    emu = Emulator(fleet=Fleet.generate(12, seed=1), limits=ServerLimits.unlimited())
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        async with emu:
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield emu
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    loop.close()


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_sweep_emulator_writes_one_line_per_iccid(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    code, _, err = run("sweep", "--emulator", "--emulator-size", "30", *FAST, "--out", str(out))
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 30
    assert len({r["iccid"] for r in records}) == 30
    assert all(r["error"] is None for r in records)
    assert "Sweep summary" in err
    assert "429s from the emulator: 0" in err


def test_sweep_csv_and_exit_code_on_errors(tmp_path: Path) -> None:
    fleet = Fleet.generate(10, seed=2026).iccids()
    source = tmp_path / "iccids.txt"
    source.write_text("# fleet\n" + "\n".join(fleet) + "\n\nnot-an-iccid\n8999999999999999999\n")
    out = tmp_path / "out.csv"
    code, _, err = run(
        "sweep",
        "--emulator",
        "--emulator-size",
        "10",
        *FAST,
        "--iccids",
        str(source),
        "--out",
        str(out),
        "--format",
        "csv",
    )
    assert code == 1  # two ICCIDs ended in error
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    errors = {r["iccid"]: r["error"] for r in rows if r["error"]}
    assert errors == {"not-an-iccid": "InvalidIccidError", "8999999999999999999": "NotFoundError"}
    assert "errors" in err


def test_sweep_stdout_jsonl_when_piped() -> None:
    code, out, _ = run("sweep", "--emulator", "--emulator-size", "5", *FAST, "--quiet")
    assert code == 0
    assert len(out.splitlines()) == 5
    assert all(json.loads(line)["status"] for line in out.splitlines())


def test_resume_skips_answered_iccids(tmp_path: Path) -> None:
    fleet = Fleet.generate(20, seed=2026).iccids()
    source = tmp_path / "iccids.txt"
    source.write_text("\n".join(fleet) + "\n")
    out = tmp_path / "out.jsonl"
    # An earlier run answered 8, failed one, and was cut off mid-line.
    earlier = [json.dumps({"iccid": i, "status": "ACTIVE", "error": None}) for i in fleet[:8]]
    earlier.append(json.dumps({"iccid": fleet[8], "error": "TransportError"}))
    out.write_text("\n".join(earlier) + '\n{"iccid": "89440')
    code, _, err = run(
        "sweep",
        "--emulator",
        "--emulator-size",
        "20",
        *FAST,
        "--iccids",
        str(source),
        "--out",
        str(out),
        "--resume",
    )
    assert code == 0
    assert "8 skipped" in err
    lines = out.read_text().splitlines()
    new = [json.loads(line) for line in lines[10:]]
    assert sorted(r["iccid"] for r in new) == sorted(fleet[8:])
    assert all(r["error"] is None for r in new)


def test_resume_needs_an_output_file() -> None:
    code, _, err = run("sweep", "--emulator", "--resume")
    assert code == 2
    assert "--resume needs --out" in err


def test_usage_table_and_json(served: Emulator) -> None:
    iccid = served.fleet.iccids()[0]
    env = {"AIRALO_CLIENT_ID": "cli-id", "AIRALO_CLIENT_SECRET": "CLI-SENTINEL-SECRET"}
    code, out, _ = run("usage", iccid, "--base-url", served.url, "--json", env=env)
    assert code == 0
    (record,) = json.loads(out)
    assert record["iccid"] == iccid
    assert record["status"] == served.fleet.sims[iccid].status
    code, out, _ = run("usage", iccid, "8999999999999999999", "--base-url", served.url, env=env)
    assert code == 1
    assert iccid in out and "NotFoundError" in out
    assert "CLI-SENTINEL-SECRET" not in out


def test_pressone_from_environment(served: Emulator) -> None:
    iccid = served.fleet.iccids()[1]
    env = {
        "PRESSONE_CLIENT_ID": "p",
        "PRESSONE_CLIENT_SECRET": "p-secret",
        "PRESSONE_BASE_URL": served.url,
    }
    code, out, _ = run("usage", iccid, "--provider", "pressone", "--json", env=env)
    assert code == 0
    assert json.loads(out)[0]["iccid"] == iccid


def test_missing_credentials_is_a_usage_error() -> None:
    env = {"AIRALO_CLIENT_ID": "", "AIRALO_CLIENT_SECRET": ""}
    code, _, err = run("usage", "8944000000000000001", env=env)
    assert code == 2
    assert "AIRALO_CLIENT_ID" in err


def test_secret_never_echoed_on_failure() -> None:
    code, out, err = run(
        "usage",
        "8944000000000000001",
        "--base-url",
        "http://127.0.0.1:9",
        "--client-id",
        "x",
        "--client-secret",
        "FLAG-SENTINEL-SECRET",
    )
    assert code == 1
    assert "FLAG-SENTINEL-SECRET" not in out + err


def test_emulator_command_serves_and_stops(tmp_path: Path) -> None:
    """A client reads an eSIM of the served fleet while it runs; then the command ends and
    the port is closed."""
    import socket
    import time

    from esim_async import AiraloClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ids = tmp_path / "ids.txt"
    result: dict[str, object] = {}

    def serve() -> None:
        code, out, _ = run(
            "emulator",
            "--port",
            str(port),
            "--fleet",
            "7",
            "--iccids-out",
            str(ids),
            "--duration",
            "2",
        )
        result["code"], result["out"] = code, out

    thread = threading.Thread(target=serve)
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                break
        except OSError:
            time.sleep(0.05)
    iccids = ids.read_text().split()
    assert len(iccids) == 7

    async def read_usage() -> str:
        async with AiraloClient("any-id", "any-secret", base_url=f"http://127.0.0.1:{port}") as c:
            return str((await c.sims.usage(iccids[0])).status)

    status = asyncio.run(read_usage())
    thread.join(15)
    assert not thread.is_alive()
    assert result["code"] == 0
    assert f"emulator listening on http://127.0.0.1:{port}" in str(result["out"])
    assert status == Fleet.generate(7, seed=2026).sims[iccids[0]].status  # the default seed
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        pass  # stopped: nothing listens any more


def test_webhooks_serve_prints_verified_events() -> None:
    import socket
    import time
    import urllib.request

    from esim_async.webhooks import sign

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result: dict[str, object] = {}

    def serve() -> None:
        out = CliRunner().invoke(
            main,
            ["webhooks", "serve", "--port", str(port), "--duration", "2"],
            env={"AIRALO_CLIENT_SECRET": "hook-secret"},
            catch_exceptions=False,
        )
        result["code"], result["out"] = out.exit_code, out.stdout

    thread = threading.Thread(target=serve)
    thread.start()
    body = json.dumps(
        {
            "level": "75%",
            "package_name": "p",
            "remaining_percentage": 25,
            "iccid": "87123123456889019",
        }
    ).encode()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                break
        except OSError:
            time.sleep(0.05)
    statuses = []
    for signature in (sign(body, "hook-secret"), "bad"):
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/",
            data=body,
            method="POST",
            headers={"airalo-signature": signature, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                statuses.append(resp.status)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)
    thread.join(15)
    assert statuses == [200, 401]
    assert result["code"] == 0
    (line,) = str(result["out"]).splitlines()
    event = json.loads(line)
    assert event["event"] == "LowDataEvent" and event["iccid"] == "87123123456889019"


def test_webhooks_serve_needs_the_secret() -> None:
    code, _, err = run("webhooks", "serve", "--duration", "0", env={"AIRALO_CLIENT_SECRET": ""})
    assert code == 2
    assert "AIRALO_CLIENT_SECRET" in err

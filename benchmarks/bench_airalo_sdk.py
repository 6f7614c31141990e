"""Figure 5: against the official Airalo Python SDK (``airalo-sdk`` from PyPI).

The SDK is installed only in this benchmark's own virtual environment
(``benchmarks/.venv-airalo-sdk``, created on first run), never as a dependency of esim_async. It
has no base-URL option, so the runner points it at the emulator by setting its URL constant at run
time (``ApiConstants.PRODUCTION_URL``); its files are not edited. Both clients get the same ICCIDs
against a fresh emulator (another process) with Airalo's real limits: 5 requests per second per
company and 10 per minute per ICCID, strict sliding windows. Reported: correct results, 429s
received, wall time.

    python benchmarks/bench_airalo_sdk.py           # 60 and 300 ICCIDs
    python benchmarks/bench_airalo_sdk.py --quick   # 20 ICCIDs
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import textwrap
import time
import venv
from pathlib import Path

from _common import emulator_process, fmt, parser, record

from esim_async import AiraloClient
from esim_async.testing import Fleet

VENV = Path(__file__).resolve().parent / ".venv-airalo-sdk"
PY = VENV / "bin" / "python"

RUNNER = textwrap.dedent(
    """
    import json, sys, time
    from airalo import Airalo
    from airalo.constants.api_constants import ApiConstants
    from airalo.helpers.cached import Cached

    url, path = sys.argv[1], sys.argv[2]
    iccids = open(path).read().split()
    ApiConstants.PRODUCTION_URL = url + "/v2/"  # the SDK has no base-URL option
    Cached.clear_cache()
    start = time.perf_counter()
    client = Airalo({"client_id": "bench", "client_secret": "bench-secret"})
    public_error = None
    try:
        result = client.sim_usage_bulk(iccids)
    except Exception as exc:  # the public method calls a service method that does not exist
        public_error = f"{type(exc).__name__}: {exc}"
        result = client._sim.sim_usage_bulk(iccids)
    elapsed = time.perf_counter() - start
    ok = sum(1 for v in (result or {}).values() if isinstance(v, dict) and "data" in v
             and isinstance(v["data"], dict) and "status" in v["data"])
    limited = sum(1 for v in (result or {}).values()
                  if isinstance(v, dict) and v.get("message") == "Too Many Attempts.")
    version = __import__("importlib.metadata").metadata.version("airalo-sdk")
    print(json.dumps({"ok": ok, "limited": limited, "elapsed": elapsed, "version": version,
                      "public_error": public_error}))
    """
)


def ensure_sdk() -> None:
    if PY.exists():
        return
    venv.create(VENV, with_pip=True)
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "airalo-sdk"], check=True)


def run_sdk(url: str, iccids: list[str]) -> dict[str, object]:
    runner = VENV / "runner.py"
    runner.write_text(RUNNER)
    ids = VENV / "iccids.txt"
    ids.write_text("\n".join(iccids))
    out = subprocess.run(
        [str(PY), str(runner), url, str(ids)],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


async def run_ours(url: str, iccids: list[str]) -> dict[str, object]:
    start = time.perf_counter()
    async with AiraloClient("bench", "bench-secret", base_url=url) as client:
        ok = 0
        async with client.sims.usage_many(iccids) as results:
            async for r in results:
                ok += r.ok
        return {
            "ok": ok,
            "limited": client.stats.rate_limited,
            "elapsed": time.perf_counter() - start,
        }


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    ensure_sdk()
    sizes = [20] if args.quick else [60, 300]
    rows: list[tuple[str, ...]] = [("ICCIDs", "client", "correct results", "429s", "wall s")]
    notes = []
    for n in sizes:
        iccids = Fleet.generate(n, seed=2026).iccids()
        with emulator_process("--limits", "airalo", fleet=n) as url:
            sdk = run_sdk(url, iccids)
        with emulator_process("--limits", "airalo", fleet=n) as url:
            ours = asyncio.run(run_ours(url, iccids))
        rows.append(
            (
                str(n),
                f"airalo-sdk {sdk['version']} sim_usage_bulk",
                f"{sdk['ok']}/{n}",
                str(sdk["limited"]),
                fmt(float(sdk["elapsed"]), 2),
            )
        )  # type: ignore[arg-type]
        rows.append(
            (
                str(n),
                "esim_async usage_many",
                f"{ours['ok']}/{n}",
                str(ours["limited"]),
                fmt(float(ours["elapsed"]), 2),
            )
        )  # type: ignore[arg-type]
        if sdk.get("public_error"):
            notes.append(
                f"`Airalo.sim_usage_bulk` raised `{sdk['public_error']}`; the runner "
                "called the SDK's `SimService.sim_usage_bulk` directly."
            )
    record(
        "Against the official Airalo Python SDK" + (" (quick)" if args.quick else ""),
        rows,
        " ".join(sorted(set(notes))) + " Emulator with Airalo's real limits (5/s per company, "
        "10/min per ICCID, strict sliding window); the SDK's 429 bodies come back as results.",
        enabled=not args.no_record,
    )


if __name__ == "__main__":
    main()

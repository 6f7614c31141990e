"""Figure 6: scale-out. 1, 2 and 4 processes share one budget through the Redis backend.

Every process sweeps its own share of one fleet against one emulator (another process) that
enforces a strict sliding window at the company rate R; a redis-server on 127.0.0.1 holds the
shared state. Reported: the combined rate (ICCIDs answered per second, all processes together)
against R, and 429s received. Needs ``redis-server`` on the PATH (skipped otherwise).

    python benchmarks/bench_scaleout.py           # R = 20/s, 400 ICCIDs
    python benchmarks/bench_scaleout.py --quick   # R = 20/s, 80 ICCIDs, 1 and 2 processes
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time

from _common import emulator_process, fmt, free_port, parser, record

WORKER = """
import asyncio, json, sys, time
from esim_async import AiraloClient, Rate
from esim_async.backends.redis import RedisBackend
from esim_async.testing import Fleet

async def main(redis_url, emu, size, part, parts, rate):
    ids = Fleet.generate(size, seed=2026).iccids()[part::parts]
    backend = RedisBackend.from_url(redis_url, prefix="bench")
    async with AiraloClient("bench", "bench-secret", base_url=emu, backend=backend,
                            company_rate=Rate(rate, 1.0)) as client:
        await client._auth.get()
        print("READY", flush=True)
        sys.stdin.readline()
        start = time.time()
        ok = 0
        async with client.sims.usage_many(ids) as results:
            async for r in results:
                ok += r.ok
        print(json.dumps({"ok": ok, "start": start, "end": time.time(),
                          "limited": client.stats.rate_limited}), flush=True)

a = sys.argv[1:]
asyncio.run(main(a[0], a[1], int(a[2]), int(a[3]), int(a[4]), int(a[5])))
"""


def run(processes: int, size: int, rate: int, redis_url: str) -> tuple[str, ...]:
    with emulator_process(
        "--company-rate", f"{rate}/1", "--iccid-rate", "10/60", fleet=size
    ) as url:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WORKER,
                    redis_url,
                    url,
                    str(size),
                    str(n),
                    str(processes),
                    str(rate),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in range(processes)
        ]
        for p in procs:  # every worker has its token and connections before the clock starts
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "READY"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
    answered = sum(o["ok"] for o in outs)
    elapsed = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    combined = answered / elapsed
    return (
        str(processes),
        f"{answered}/{size}",
        fmt(elapsed, 2),
        fmt(combined, 2),
        f"{rate}/s",
        f"{100 * combined / rate:.1f} %",
        str(sum(o["limited"] for o in outs)),
    )


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found: skipped (apt-get install redis-server)")
        return
    size, counts = (80, [1, 2]) if args.quick else (400, [1, 2, 4])
    rate = 20
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            rows = [run(n, size, rate, f"redis://127.0.0.1:{port}/{n}") for n in counts]
        finally:
            server.terminate()
            server.wait(10)
    record(
        "Scale-out: processes sharing one budget through Redis"
        + (" (quick)" if args.quick else ""),
        [("processes", "answered", "time s", "combined rate /s", "limit R", "of R", "429s"), *rows],
        "Each process sweeps its share of the fleet; the combined rate includes the first "
        "window's burst, so it can exceed R slightly on short runs.",
        enabled=not args.no_record,
    )


if __name__ == "__main__":
    main()

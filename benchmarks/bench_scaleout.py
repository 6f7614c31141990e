"""Figure 6: scale-out. 1, 2 and 4 processes share one budget through the Redis backend.

Every process sweeps its own share of one fleet against one emulator (another process) that
enforces a strict sliding window at the company rate R; a redis-server on 127.0.0.1 holds the
shared state. Reported: the combined rate (ICCIDs answered per second, all processes together)
against R, and 429s received, at the default 2 % margin. Four processes also run

- behind a token endpoint that takes 0.5 s (no token fetched beforehand: the first requests of
  every process wait for it);
- with connections that take 0.3 s to set up: https to the emulator through a proxy that holds
  each new connection 0.3 s before relaying (the TLS handshake ends that much later); and with
  a connector the caller passes that takes 0.3 s per connection and never reuses one;

and one process has Redis killed mid-sweep (fail closed): the time from the kill until every
remaining eSIM has its result, against the backend's ``wait`` + 1 s. Needs ``redis-server`` on
the PATH (skipped otherwise).

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
from collections.abc import Iterator
from contextlib import contextmanager

from _common import fmt, free_port, parser, record

#: The emulator (another process): strict limits, and the slow parts a scenario asks for.
EMULATOR = """
import asyncio, sys
from aiohttp import web
from esim_async import Rate
from esim_async.testing import Emulator, Fleet, ServerLimits

async def main(size, rate, scenario, cert):
    @web.middleware
    async def slow_token(request, handler):
        if request.path.endswith("/token"):
            await asyncio.sleep(0.5)
        return await handler(request)

    limits = ServerLimits(usage_company=Rate(rate, 1.0), usage_iccid=Rate(10, 60.0), token=None)
    tls = scenario == "slow-connect"
    emu = Emulator(fleet=Fleet.generate(size, seed=2026), limits=limits, tls=tls,
                   cert_out=cert if tls else None,
                   middlewares=[slow_token] if scenario == "slow-token" else [])
    url = await emu.start()
    if tls:  # every new connection waits 0.3 s before its bytes (the handshake) are relayed
        port = int(url.rsplit(":", 1)[1])

        async def pipe(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        async def relay(reader, writer):
            await asyncio.sleep(0.3)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
        url = f"https://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"
    print(url, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print(emu.stats.rate_limited, flush=True)
    await emu.stop()

a = sys.argv[1:]
asyncio.run(main(int(a[0]), int(a[1]), a[2], a[3]))
"""

WORKER = """
import asyncio, json, os, signal, ssl, sys, time
import aiohttp
from esim_async import AiraloClient, Rate
from esim_async.backends.redis import RedisBackend
from esim_async.testing import Fleet

class SlowConnector(aiohttp.TCPConnector):
    async def connect(self, req, traces, timeout):
        await asyncio.sleep(0.3)
        return await super().connect(req, traces, timeout)

async def main(redis_url, emu, size, part, parts, rate, scenario, cert, kill):
    ids = Fleet.generate(size, seed=2026).iccids()[part::parts]
    backend = RedisBackend.from_url(redis_url, prefix="bench")
    options = {}
    if scenario == "slow-connect":
        options["ssl"] = ssl.create_default_context(cafile=cert)
    if scenario == "callers-connector":
        options["connector"] = SlowConnector(force_close=True, limit=64)
    async with AiraloClient("bench", "bench-secret", base_url=emu, backend=backend,
                            company_rate=Rate(rate, 1.0), **options) as client:
        if scenario != "slow-token":
            await client._auth.get()
        print("READY", flush=True)
        sys.stdin.readline()
        start = time.time()
        ok = 0
        killed = None
        last = start
        async with client.sims.usage_many(ids) as results:
            async for r in results:
                ok += r.ok
                last = time.time()
                if kill and killed is None and ok == 20:
                    os.kill(kill, signal.SIGKILL)
                    killed = time.time()
        print(json.dumps({"ok": ok, "start": start, "end": time.time(), "wait": backend.wait,
                          "limited": client.stats.rate_limited,
                          "after_kill": None if killed is None else last - killed}), flush=True)
    if options.get("connector"):
        await options["connector"].close()

a = sys.argv[1:]
asyncio.run(main(a[0], a[1], int(a[2]), int(a[3]), int(a[4]), int(a[5]), a[6], a[7], int(a[8])))
"""


HEADER = (
    *("processes", "scenario", "answered", "time s"),
    *("combined rate /s", "limit R", "of R", "429s"),
)
KILL_HEADER = (
    *("eSIMs", "answered before the kill", "results after it"),
    *("last result after the kill, s", "target s"),
)


@contextmanager
def emulator(size: int, rate: int, scenario: str, cert: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", EMULATOR, str(size), str(rate), scenario, cert],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def run(
    processes: int, size: int, rate: int, redis_url: str, scenario: str = "plain", kill: int = 0
) -> dict[str, object]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        emulator(size, rate, scenario, f"{tmp}/cert.pem") as emu,
    ):
        assert emu.stdout is not None
        assert emu.stdin is not None
        url = emu.stdout.readline().strip()
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
                    scenario,
                    f"{tmp}/cert.pem",
                    str(kill),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in range(processes)
        ]
        for p in procs:  # every worker has its connections (and token) before the clock starts
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "READY"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
        emu.stdin.close()
        server_429s = int(emu.stdout.readline().strip() or 0)
    answered = sum(int(o["ok"]) for o in outs)
    elapsed = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    return {
        "answered": answered,
        "elapsed": elapsed,
        "limited": sum(int(o["limited"]) for o in outs),
        "server_429s": server_429s,
        "after_kill": outs[0]["after_kill"],
        "wait": outs[0]["wait"],
    }


def row(
    processes: int, scenario: str, size: int, rate: int, out: dict[str, object]
) -> tuple[str, ...]:
    combined = float(out["answered"]) / float(out["elapsed"])  # type: ignore[arg-type]
    return (
        str(processes),
        scenario,
        f"{out['answered']}/{size}",
        fmt(float(out["elapsed"]), 2),  # type: ignore[arg-type]
        fmt(combined, 2),
        f"{rate}/s",
        f"{100 * combined / rate:.1f} %",
        str(out["limited"]),
    )


@contextmanager
def redis_server(binary: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [
                *(binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--dir", tmp),
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            yield server
        finally:
            if server.poll() is None:
                server.terminate()
            server.wait(10)


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found: skipped (apt-get install redis-server)")
        return
    size, counts = (80, [1, 2]) if args.quick else (400, [1, 2, 4])
    scenarios = [] if args.quick else ["slow-token", "slow-connect", "callers-connector"]
    rate = 20
    port = free_port()
    rows = []
    with redis_server(binary, port):
        db = 0
        for n in counts:
            rows.append(
                row(n, "plain", size, rate, run(n, size, rate, f"redis://127.0.0.1:{port}/{db}"))
            )
            db += 1
        for scenario in scenarios:
            out = run(4, size, rate, f"redis://127.0.0.1:{port}/{db}", scenario)
            rows.append(row(4, scenario, size, rate, out))
            db += 1
    record(
        "Scale-out: processes sharing one budget through Redis" + (" (quick)" * args.quick),
        [
            HEADER,
            *rows,
        ],
        "Default 2 % margin. Each process sweeps its share of the fleet; the combined rate "
        "includes the first window's burst, so it can exceed R slightly on short runs. "
        "slow-token: the token endpoint answers in 0.5 s and no process has a token when the "
        "sweep starts; slow-connect: https through a proxy holding each new connection 0.3 s; "
        "callers-connector: a connector the caller passes, 0.3 s per connection, none reused.",
        enabled=not args.no_record,
    )
    if args.quick:
        return
    port = free_port()
    with redis_server(binary, port) as server:
        out = run(1, 200, rate, f"redis://127.0.0.1:{port}/0", "plain", kill=server.pid)
    after = float(out["after_kill"])  # type: ignore[arg-type]
    wait = float(out["wait"])  # type: ignore[arg-type]
    record(
        "Redis killed mid-sweep (fail closed)",
        [
            KILL_HEADER,
            ("200", "20", str(200 - 20), fmt(after, 2), f"<= {fmt(wait + 1, 1)} (wait + 1)"),
        ],
        "One process sweeps 200 eSIMs at 20/s through Redis (default wait=5 s); redis-server "
        "is SIGKILLed after the 20th answer. Every eSIM still queued gets "
        "BackendUnavailableError.",
        enabled=not args.no_record,
    )


if __name__ == "__main__":
    main()

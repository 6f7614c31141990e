"""Figure 4: memory per swept-and-cached ICCID, and release of per-ICCID limiter state.

1. N ICCIDs are swept with ``usage_many`` (cache ``maxsize`` raised to hold them, Airalo's
   per-ICCID limit of 10 per minute, so every ICCID's limiter state is still live at the end) with
   the HTTP exchange replaced by decoding the emulator's JSON for that eSIM: what stays behind is
   exactly what a real sweep leaves (cache entry, decoded ``Usage``, per-ICCID window). Measured in
   a fresh process per N: resident memory (``/proc/self/statm``) and traced Python allocations,
   before and after, divided by N.
2. 1,000,000 distinct ICCIDs pass the per-ICCID limiter on an injected clock at 5 per second; the
   live state and traced memory are sampled as they go: they stay flat because state whose window
   has passed is dropped.

    python benchmarks/bench_memory.py           # N = 50,000 and 1,000,000
    python benchmarks/bench_memory.py --quick   # N = 20,000; 200,000 ICCIDs through the limiter
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import tracemalloc
from typing import Any

import msgspec
from _common import fmt, parser, record

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def measure_sweep(n: int, traced: bool) -> dict[str, float]:
    from esim_async import AiraloClient
    from esim_async.models import Envelope
    from esim_async.testing import Fleet

    fleet = Fleet.generate(n, seed=11)
    iccids = fleet.iccids()
    bodies = {
        i: msgspec.json.encode({"data": s.usage(), "meta": {"message": "api.succes"}})
        for i, s in fleet.sims.items()
    }

    async def run() -> dict[str, float]:
        # A closed local port: a request that escaped the stub fails at once, never goes out.
        client = AiraloClient(
            "bench",
            "bench-secret",
            base_url="http://127.0.0.1:9",
            company_rate=None,
            cache_maxsize=n + 10,
        )
        decoder = msgspec.json.Decoder(Envelope[Any])

        async def fake_request(req: Any) -> Any:
            iccid = req.key
            slot = await req.limiter.acquire(iccid, req.priority)
            if slot is not None:
                slot.mark(slot.time)  # the request "goes out" at once
            return req.decoder.decode(bodies[iccid])

        client._context.send = fake_request  # every resource sends through the context
        del decoder
        gc.collect()
        base_rss = rss()
        if traced:  # tracemalloc's own bookkeeping inflates RSS: measure each in its own run
            tracemalloc.start()
        base_traced = tracemalloc.get_traced_memory()[0]
        async with client.sims.usage_many(iccids) as results:
            async for _ in results:
                pass
        gc.collect()
        allocated = tracemalloc.get_traced_memory()[0] - base_traced
        tracemalloc.stop()
        grown = rss() - base_rss
        live_keys = client.rate_limit_state()["usage"].live_keys
        cached = len(client._context.usage_endpoint.cache)
        return {
            "n": n,
            "rss_per": grown / n,
            "traced_per": allocated / n,
            "live_keys": live_keys,
            "cached": cached,
        }

    return asyncio.run(run())


def release(n: int) -> list[tuple[int, int, float]]:
    from esim_async import ManualClock, Rate
    from esim_async.limits import EndpointLimiter

    clock = ManualClock()
    limiter = EndpointLimiter("usage", shared=None, per_key=Rate(10, 60.0), clock=clock)
    samples = []

    async def run() -> None:
        tracemalloc.start()
        step = n // 5
        for i in range(n):
            clock.advance(0.2)  # 5 per second
            slot = await limiter.acquire(f"{8944000000000000000 + i}")
            slot.mark(clock.now())  # the request goes out at once
            if (i + 1) % step == 0:
                gc.collect()
                samples.append(
                    (i + 1, limiter.state().live_keys, tracemalloc.get_traced_memory()[0] / 1024)
                )
        tracemalloc.stop()

    asyncio.run(run())
    return samples


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    if os.environ.get("ESIM_BENCH_CHILD"):
        traced = os.environ.get("ESIM_BENCH_TRACED") == "1"
        print(json.dumps(measure_sweep(int(os.environ["ESIM_BENCH_CHILD"]), traced)))
        return
    sizes = [20_000] if args.quick else [50_000, 1_000_000]
    rows: list[tuple[str, ...]] = [
        (
            "ICCIDs swept",
            "cached",
            "live per-ICCID windows",
            "RSS bytes per ICCID",
            "traced bytes per ICCID",
            "target",
        )
    ]
    for n in sizes:
        m: dict[str, dict[str, float]] = {}
        for mode in ("0", "1"):
            out = subprocess.run(
                [sys.executable, __file__],
                env={**os.environ, "ESIM_BENCH_CHILD": str(n), "ESIM_BENCH_TRACED": mode},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            m[mode] = json.loads(out.strip().splitlines()[-1])
        plain, traced = m["0"], m["1"]
        rows.append(
            (
                f"{n:,}",
                f"{plain['cached']:,}",
                f"{plain['live_keys']:,}",
                fmt(plain["rss_per"], 0),
                fmt(traced["traced_per"], 0),
                "<= 1,024",
            )
        )
    n_release = 200_000 if args.quick else 1_000_000
    samples = release(n_release)
    record(
        "Memory per swept-and-cached ICCID" + (" (quick)" if args.quick else ""),
        rows,
        enabled=not args.no_record,
    )
    record(
        "Per-ICCID limiter state is released" + (" (quick)" if args.quick else ""),
        [
            ("distinct ICCIDs so far", "live per-ICCID windows", "traced KiB"),
            *[(f"{i:,}", f"{k:,}", fmt(kib, 0)) for i, k, kib in samples],
        ],
        "5 ICCIDs per second on an injected clock, Rate(10, 60): a window lives 61.2 s, so about "
        "306 are live at any time however many have passed.",
        enabled=not args.no_record,
    )


if __name__ == "__main__":
    main()

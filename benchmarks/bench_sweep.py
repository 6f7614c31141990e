"""Figure 1: sweep efficiency against the physical limit.

N uncached ICCIDs are swept against the emulator (another process, strict sliding windows) at a
company rate R. The physical limit: with at most R requests in any window of one period, the last
of N requests cannot leave before floor((N - 1) / R) periods. Reported: measured time (median over
repeats), N/R, achieved rate, efficiency against the physical minimum, and 429s received.

    python benchmarks/bench_sweep.py            # R=50/s N=1000 x3, then Airalo's R=5/s N=300
    python benchmarks/bench_sweep.py --quick    # R=50/s N=200 x1
"""

from __future__ import annotations

import asyncio
import math
import time

from _common import emulator_process, fmt, median, parser, record

from esim_async import AiraloClient, Rate
from esim_async.testing import Fleet


async def one_run(url: str, n: int, rate: Rate) -> tuple[float, int, int]:
    iccids = Fleet.generate(n, seed=2026).iccids()
    async with AiraloClient("bench", "bench-secret", base_url=url, company_rate=rate) as client:
        await client._auth.get()  # the token is not part of the sweep
        start = time.perf_counter()
        ok = 0
        async with client.sims.usage_many(iccids) as results:
            async for r in results:
                ok += r.ok
        elapsed = time.perf_counter() - start
        return elapsed, client.stats.rate_limited, ok


def scenario(n: int, per_second: int, repeats: int) -> tuple[str, ...]:
    rate = Rate(per_second, 1.0)
    times, limited, oks = [], 0, []
    for _ in range(repeats):
        with emulator_process("--company-rate", f"{per_second}/1", fleet=n) as url:
            elapsed, n429, ok = asyncio.run(one_run(url, n, rate))
        times.append(elapsed)
        limited += n429
        oks.append(ok)
    t = median(times)
    physical = math.floor((n - 1) / per_second) * rate.period
    return (
        f"{per_second}/s",
        str(n),
        str(repeats),
        fmt(t, 2),
        fmt(n / per_second, 1),
        f"{100 * (n / t) / per_second:.1f} %",
        fmt(physical, 1),
        f"{100 * physical / t:.1f} %",
        str(limited),
        f"{min(oks)}/{n}",
    )


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    header = (
        "R",
        "N",
        "runs",
        "time (median s)",
        "N/R s",
        "achieved rate / R",
        "physical min s",
        "efficiency vs physical",
        "429s",
        "answered",
    )
    rows = [scenario(200, 50, 1)] if args.quick else [scenario(1000, 50, 3), scenario(300, 5, 1)]
    record(
        "Sweep efficiency against the physical limit" + (" (quick)" if args.quick else ""),
        [header, *rows],
        "Default 2 % safety margin; the emulator enforces a strict sliding window.",
        enabled=not args.no_record,
    )


if __name__ == "__main__":
    main()

"""Figure 3: the cache-hit path.

Awaited cached ``client.sims.usage(iccid)`` calls per second on one core, and ``usage_many`` over
100,000 cached ICCIDs (answered from the cache without waiting for the limiter).

    python benchmarks/bench_cache.py           # 1,000,000 calls; usage_many over 100,000
    python benchmarks/bench_cache.py --quick   # 100,000 calls; usage_many over 10,000
"""

from __future__ import annotations

import asyncio
import time

from _common import fmt, median, parser, record

from esim_async import AiraloClient, Usage
from esim_async.cache import CacheEntry
from esim_async.testing import Fleet


def fill(client: AiraloClient, iccids: list[str]) -> None:
    clock = client.config.clock
    cache = client._context.usage_endpoint.cache
    for iccid in iccids:
        usage = Usage(raw_remaining=512, raw_total=1024, is_unlimited=False)
        cache.set(iccid, CacheEntry(usage, clock.wall(), clock.now(), False))


async def calls_per_second(n: int) -> float:
    client = AiraloClient("bench", "bench-secret")
    iccids = Fleet.generate(1000, seed=1).iccids()
    fill(client, iccids)
    rates = []
    for _ in range(5):
        start = time.process_time()
        for i in range(n):
            await client.sims.usage(iccids[i % 1000])
        rates.append(n / (time.process_time() - start))
    await client.aclose()
    return median(rates)


async def sweep_cached(n: int) -> tuple[float, int]:
    client = AiraloClient("bench", "bench-secret", cache_maxsize=n + 10)
    iccids = Fleet.generate(n, seed=3).iccids()
    fill(client, iccids)
    start = time.perf_counter()
    hits = 0
    async with client.sims.usage_many(iccids) as results:
        async for r in results:
            hits += r.from_cache
    elapsed = time.perf_counter() - start
    await client.aclose()
    return n / elapsed, hits


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    n_calls, n_sweep = (100_000, 10_000) if args.quick else (1_000_000, 100_000)
    rate = asyncio.run(calls_per_second(n_calls // 5))
    sweep_rate, hits = asyncio.run(sweep_cached(n_sweep))
    record(
        "Cache-hit path" + (" (quick)" if args.quick else ""),
        [
            ("measure", "result", "target"),
            (
                "awaited cached usage() calls per second, one core (median of 5)",
                fmt(rate, 0),
                ">= 300,000",
            ),
            (
                f"usage_many over {n_sweep:,} cached ICCIDs: results per second",
                fmt(sweep_rate, 0),
                "",
            ),
            ("... answered from the cache", f"{hits:,}/{n_sweep:,}", "all"),
        ],
        enabled=not args.no_record,
    )


if __name__ == "__main__":
    main()

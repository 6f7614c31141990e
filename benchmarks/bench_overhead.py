"""Figure 2: client CPU per request against a bare aiohttp GET + msgspec decode.

Both clients call the usage endpoint of the same emulator (in another process, limits off) at the
same concurrency. esim_async runs ``client.sims.usage(iccid, refresh=True)`` with its limits lifted
(``None``: the limiter still runs, for cool-downs, but keeps no window); the bare client sends the
same GET with the same token and decodes the same model. Rounds alternate in one run; the figure
is the median of the per-round ratios of CPU seconds per request (``time.process_time`` of this
process).

    python benchmarks/bench_overhead.py           # 9 rounds of 2,000 requests each way
    python benchmarks/bench_overhead.py --quick   # 3 rounds of 300
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgspec
from _common import emulator_process, fmt, median, parser, record

from esim_async import AiraloClient, Usage
from esim_async.models import Envelope
from esim_async.testing import Fleet

CONCURRENCY = 16


async def pump(n: int, call, iccids: list[str]) -> float:  # type: ignore[no-untyped-def]
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await call(iccids[i % len(iccids)])

    start = time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return (time.process_time() - start) / n


async def run(url: str, rounds: int, n: int) -> tuple[list[float], list[float]]:
    iccids = Fleet.generate(1000, seed=2026).iccids()
    decoder = msgspec.json.Decoder(Envelope[Usage], strict=False)
    async with AiraloClient(
        "bench", "bench-secret", base_url=url, company_rate=None, iccid_rate=None, token_rate=None
    ) as client:
        token = await client._auth.get()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as raw:

            async def bare(iccid: str) -> Usage:
                async with raw.get(f"{url}/v2/sims/{iccid}/usage") as resp:
                    return decoder.decode(await resp.read()).data

            async def ours(iccid: str) -> Usage:
                return await client.sims.usage(iccid, refresh=True)

            await pump(200, bare, iccids)  # warm both connection pools
            await pump(200, ours, iccids)
            ours_cpu, bare_cpu = [], []
            for r in range(rounds):
                order = (ours, bare) if r % 2 == 0 else (bare, ours)
                for fn in order:
                    cpu = await pump(n, fn, iccids)
                    (ours_cpu if fn is ours else bare_cpu).append(cpu)
            return ours_cpu, bare_cpu


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    rounds, n = (3, 300) if args.quick else (9, 2000)
    with emulator_process("--limits", "none", fleet=1000) as url:
        ours, bare = asyncio.run(run(url, rounds, n))
    ratios = [o / b for o, b in zip(ours, bare, strict=True)]
    rows = [
        ("client", "CPU per request (median us)"),
        ("bare aiohttp GET + msgspec decode", fmt(median(bare) * 1e6)),
        ("esim_async usage(refresh=True), limits lifted", fmt(median(ours) * 1e6)),
        ("ratio (median of per-round ratios)", f"{median(ratios):.3f}x"),
    ]
    record(
        "Client overhead against raw aiohttp" + (" (quick)" if args.quick else ""),
        rows,
        f"{rounds} alternating rounds of {n} requests each way, concurrency {CONCURRENCY}; "
        "target <= 1.3x.",
        enabled=not args.no_record,
    )


if __name__ == "__main__":
    main()

"""Sweeps across a network path whose one-way delay varies per request.

The provider counts arrivals; the client paces sends. Between the two, the emulator's path
(``Emulator(path=PathDelay(...))``) delays each request by a draw from ``[min, max]`` (order
kept within a connection) before the limits count it. N uncached eSIMs are swept at Airalo's
company rate against a strict sliding window and against Laravel's fixed window. Reported per
path and window: 429s received, sweep time, and efficiency = (N / R) / time.

    python benchmarks/bench_path.py                  # N=100 at 5/s, four paths, both windows
    python benchmarks/bench_path.py --quick          # N=25, two paths, both windows
    python benchmarks/bench_path.py --margin 0.2     # the client's rate_margin (default: its own)
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from _common import fmt, parser, record

from esim_async import AiraloClient, Rate
from esim_async.testing import Emulator, Fleet, PathDelay, ServerLimits
from esim_async.testing.limits import Algorithm

#: (label, path): no delay, constant, and two jittered paths.
PATHS: list[tuple[str, PathDelay | None]] = [
    ("clean", None),
    ("constant 30 ms", PathDelay(min=0.03)),
    ("30-90 ms", PathDelay(min=0.03, max=0.09, seed=2026)),
    ("50-200 ms", PathDelay(min=0.05, max=0.2, seed=2026)),
]
WINDOWS: tuple[Algorithm, ...] = ("sliding", "fixed")


async def one_run(
    n: int,
    per_second: int,
    path: PathDelay | None,
    algorithm: Algorithm,
    margin: float | None,
    stray: bool = False,
) -> tuple[float, int, int, int]:
    """Sweep ``n - 1`` eSIMs; return (seconds, 429s at the client, 429s at the server, answered).

    ``stray``: the server answers one 429 half-way through (a lone 429 the windows did not
    cause), to measure what the client's reaction to it costs.
    """
    fleet = Fleet.generate(n, seed=2026)
    rate = Rate(per_second, 1.0)
    limits = ServerLimits(usage_company=rate, algorithm=algorithm)
    extra: dict[str, Any] = {} if margin is None else {"rate_margin": margin}
    async with (
        Emulator(fleet=fleet, limits=limits, path=path) as emu,
        AiraloClient(
            "bench", "bench-secret", base_url=emu.url, company_rate=rate, **extra
        ) as client,
    ):
        await client.sims.usage(fleet.iccids()[0])  # the token is not part of the sweep
        iccids = fleet.iccids()[1:]
        await asyncio.sleep(rate.period * 1.5)  # that request leaves every window
        server_before = emu.stats.rate_limited
        client_before = client.stats.rate_limited
        start = time.perf_counter()
        ok = 0
        async with client.sims.usage_many(iccids) as results:
            async for r in results:
                ok += r.ok
                if stray and ok == n // 2:
                    emu.inject("usage", "429")
        elapsed = time.perf_counter() - start
        return (
            elapsed,
            client.stats.rate_limited - client_before,
            emu.stats.rate_limited - server_before,
            ok,
        )


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--margin", type=float, default=None, help="the client's rate_margin")
    p.add_argument(
        "--path",
        action="append",
        choices=[label for label, _ in PATHS],
        help="run only this path (repeatable)",
    )
    p.add_argument("--no-stray", action="store_true", help="skip the stray-429 run")
    args = p.parse_args()
    logging.getLogger("esim_async").setLevel(logging.ERROR)  # 429s are counted, not logged
    per_second = 5
    n = 26 if args.quick else 101
    paths = [PATHS[1], PATHS[3]] if args.quick else PATHS
    if args.path:
        paths = [(label, path) for label, path in PATHS if label in args.path]
    header = ("path", "window", "eSIMs", "429s", "time s", "efficiency", "answered")
    rows: list[tuple[str, ...]] = [header]
    runs = [(label, path, algorithm, False) for label, path in paths for algorithm in WINDOWS]
    if not args.no_stray:
        runs.append(("clean, 1 stray 429", None, "sliding", True))
    for label, path, algorithm, stray in runs:
        elapsed, _client429, server429, ok = asyncio.run(
            one_run(n, per_second, path, algorithm, args.margin, stray)
        )
        swept = n - 1
        rows.append(
            (
                label,
                "strict sliding" if algorithm == "sliding" else "fixed (Laravel)",
                str(swept),
                str(server429),
                fmt(elapsed, 1),
                f"{100 * (swept / per_second) / elapsed:.0f} %",
                f"{ok}/{swept}",
            )
        )
        print(" | ".join(rows[-1]), flush=True)
    margin = "default" if args.margin is None else f"{args.margin:g}"
    record(
        f"Sweeps across a jittered path, {per_second}/s"
        + (" (quick)" if args.quick else "")
        + f", rate_margin {margin}",
        rows,
        "Emulator in process with a one-way delay per request (uniform in the range, order kept"
        " per connection); 429s counted at the server; efficiency = (eSIMs / rate) / time.",
        enabled=not args.no_record,
    )


if __name__ == "__main__":
    main()

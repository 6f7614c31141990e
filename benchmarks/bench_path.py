"""Sweeps across a network path whose one-way delay varies per request.

The provider counts arrivals; the client paces sends. Between the two, the emulator's path
(``Emulator(path=PathDelay(...))``) delays each request by a draw from ``[min, max]`` (order
kept within a connection) before the limits count it. N uncached eSIMs are swept at Airalo's
company rate against a strict sliding window and against Laravel's fixed window. Reported per
path and window: 429s received, sweep time, and efficiency = (N / R) / time.

    python benchmarks/bench_path.py                  # N=100 at 5/s, five paths, both windows
    python benchmarks/bench_path.py --quick          # N=25, three paths, both windows
    python benchmarks/bench_path.py --margin 0.2     # the client's rate_margin (default: its own)
    python benchmarks/bench_path.py --spread-factor 0.5 --spread-factor 1   # share of the spread
    python benchmarks/bench_path.py --quantile 0.95 --quantile 1   # the spread's quantile

The client widens its windows by ``PATH_SPREAD_FACTOR`` times the spread of its own send ->
response-headers times (``esim_async.limits``); ``--spread-factor`` sets that share (repeat it
to compare several); ``--quantile`` sets the quantile of those times the spread is measured
from, less their minimum (``PATH_QUANTILE``; 1: the slowest). The lossy path adds a late
request now and then (a TCP retransmission) on top of a small jitter. The stray-429 runs make
the server answer one 429 half-way through a sweep; its cost is the time against the same path
without it. ``margin`` is the margin in force at the end of the sweep, as a share of the
period.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from _common import fmt, parser, record

import esim_async.limits
from esim_async import AiraloClient, Rate
from esim_async.testing import Emulator, Fleet, PathDelay, ServerLimits
from esim_async.testing.limits import Algorithm
from esim_async.testing.path import PathMiddleware


@dataclass(frozen=True)
class LossyPath(PathDelay):
    """A path of :class:`PathDelay` on which a ``share`` of the requests come ``late`` seconds
    later still (a retransmitted segment)."""

    late: float = 0.2
    share: float = 0.03


#: Draws which requests of a lossy path come late (seeded per run).
_LATE = random.Random()
_DRAW = PathMiddleware.draw


def _draw(self: PathMiddleware) -> float:
    delay = _DRAW(self)
    path = self.path
    if isinstance(path, LossyPath) and _LATE.random() < path.share:
        delay += path.late
    return delay


PathMiddleware.draw = _draw  # type: ignore[method-assign]

#: (label, path): no delay, constant, and two jittered paths.
PATHS: list[tuple[str, PathDelay | None]] = [
    ("clean", None),
    ("constant 30 ms", PathDelay(min=0.03)),
    ("30-90 ms", PathDelay(min=0.03, max=0.09, seed=2026)),
    ("50-200 ms", PathDelay(min=0.05, max=0.2, seed=2026)),
    ("30-60 ms, 3 % +200 ms", LossyPath(min=0.03, max=0.06, seed=2026)),
]
WINDOWS: tuple[Algorithm, ...] = ("sliding", "fixed")


async def one_run(
    n: int,
    per_second: int,
    path: PathDelay | None,
    algorithm: Algorithm,
    margin: float | None,
    stray: bool = False,
) -> tuple[float, int, int, int, float]:
    """Sweep ``n - 1`` eSIMs; return (seconds, 429s at the client, 429s at the server,
    answered, margin in force at the end as a share of the period).

    ``stray``: the server answers one 429 half-way through (a lone 429 the windows did not
    cause), to measure what the client's reaction to it costs.
    """
    fleet = Fleet.generate(n, seed=2026)
    _LATE.seed(2026)
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
        margin = max((s.margin for s in client.rate_limit_state().values()), default=0.0)
        return (
            elapsed,
            client.stats.rate_limited - client_before,
            emu.stats.rate_limited - server_before,
            ok,
            margin,
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
    p.add_argument("--no-stray", action="store_true", help="skip the stray-429 runs")
    p.add_argument(
        "--quantile",
        type=float,
        action="append",
        help="quantile of the send -> headers times the spread is measured from (repeatable;"
        " default: the client's)",
    )
    p.add_argument(
        "--spread-factor",
        type=float,
        action="append",
        help="share of the path's spread added to the window (repeatable; default: the client's)",
    )
    args = p.parse_args()
    logging.getLogger("esim_async").setLevel(logging.ERROR)  # 429s are counted, not logged
    per_second = 5
    n = 26 if args.quick else 101
    paths = [PATHS[1], PATHS[3], PATHS[4]] if args.quick else PATHS
    if args.path:
        paths = [(label, path) for label, path in PATHS if label in args.path]
    factors: list[float | None] = list(args.spread_factor or [None])
    quantiles: list[float | None] = list(args.quantile or [None])
    header = ("k", "q", "path", "window", "eSIMs", "429s", "time s", "efficiency", "margin")
    header += ("answered",)
    rows: list[tuple[str, ...]] = [header]
    runs = [(label, path, algorithm, False) for label, path in paths for algorithm in WINDOWS]
    if not args.no_stray:
        runs.append(("clean, 1 stray 429", None, "sliding", True))
        runs.append(("50-200 ms, 1 stray 429", PATHS[3][1], "sliding", True))
    default_factor = esim_async.limits.PATH_SPREAD_FACTOR
    default_quantile = esim_async.limits.PATH_QUANTILE
    for k, q in [(k, q) for k in factors for q in quantiles]:
        esim_async.limits.PATH_SPREAD_FACTOR = default_factor if k is None else k
        esim_async.limits.PATH_QUANTILE = default_quantile if q is None else q
        for label, path, algorithm, stray in runs:
            elapsed, _client429, server429, ok, margin = asyncio.run(
                one_run(n, per_second, path, algorithm, args.margin, stray)
            )
            swept = n - 1
            rows.append(
                (
                    f"{esim_async.limits.PATH_SPREAD_FACTOR:g}",
                    f"{esim_async.limits.PATH_QUANTILE:g}",
                    label,
                    "strict sliding" if algorithm == "sliding" else "fixed (Laravel)",
                    str(swept),
                    str(server429),
                    fmt(elapsed, 1),
                    f"{100 * (swept / per_second) / elapsed:.0f} %",
                    f"{margin:.3f}",
                    f"{ok}/{swept}",
                )
            )
            print(" | ".join(rows[-1]), flush=True)
    esim_async.limits.PATH_SPREAD_FACTOR = default_factor
    esim_async.limits.PATH_QUANTILE = default_quantile
    margin = "default" if args.margin is None else f"{args.margin:g}"
    record(
        f"Sweeps across a jittered path, {per_second}/s"
        + (" (quick)" if args.quick else "")
        + f", rate_margin {margin}, adaptive margin",
        rows,
        "Emulator in process with a one-way delay per request (uniform in the range, order kept"
        " per connection); 429s counted at the server (the stray runs include the injected one);"
        " efficiency = (eSIMs / rate) / time; k = share of the measured spread of send ->"
        " response-headers times added to each window; q = quantile of those times the spread"
        " is measured from (less their minimum); the lossy path delays 3 % of the requests"
        " 200 ms more; margin = rate_margin plus that widening"
        " at the end of the sweep, as a share of the period.",
        enabled=not args.no_record,
    )


if __name__ == "__main__":
    main()

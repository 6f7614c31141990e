"""Chaos: a sweep through 5xx, HTML bodies, dropped connections, slow responses, a token that
expires mid-sweep and a server limit lowered mid-run. Every ICCID is answered exactly once,
almost all successfully, nothing raises out of the sweep, no request breaks the client-side
limit, and the run ends by itself. Scaled by ESIM_CHAOS_SIZE (default 2,000)."""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import pytest

from esim_async import AiraloClient, EsimError, Rate
from esim_async.testing import Emulator, Faults, Fleet, ServerLimits

from ..limiter.test_limits import max_in_any_window

SIZE = int(os.environ.get("ESIM_CHAOS_SIZE", "2000"))
CLIENT_RATE = Rate(40, 0.5)  # 80 per second
MARGIN = 0.3


async def _watch_loop_lag(lags: list[float], step: float = 0.01) -> None:
    """Record how late the event loop wakes a sleeper. The emulator shares the client's loop,
    so it stamps an arrival only when the loop gets to its handler: a busy loop delays (and
    bunches) arrivals by up to the largest lag seen, like a jittery network path would."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(step)
        lags.append(loop.time() - before - step)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_chaos_sweep_answers_every_iccid_once() -> None:
    fleet = Fleet.generate(SIZE, seed=41)
    faults = Faults(server_error=0.10, html=0.03, drop=0.02, slow=0.05, slow_seconds=0.5, seed=7)
    limits = ServerLimits(usage_company=Rate(40, 0.5), usage_iccid=None, token=None)
    async with (
        Emulator(fleet=fleet, limits=limits, faults=faults) as emu,
        AiraloClient(
            "chaos",
            "chaos-secret",
            base_url=emu.url,
            company_rate=CLIENT_RATE,
            iccid_rate=None,
            rate_margin=MARGIN,
            max_retries=2,
            timeout=5.0,
            retry_after_cap=5.0,
        ) as client,
    ):
        got = []
        lags: list[float] = [0.0]
        watcher = asyncio.create_task(_watch_loop_lag(lags))
        lowered = expired = False
        async with asyncio.timeout(280):  # the run ends by itself, well before this
            async with client.sims.usage_many(fleet.iccids(), concurrency=48) as results:
                async for r in results:
                    got.append(r)
                    if not expired and len(got) >= SIZE // 3:
                        emu.expire_tokens()  # the token expires mid-sweep
                        expired = True
                    if not lowered and len(got) >= SIZE // 2:
                        emu.set_limit("usage_company", Rate(25, 0.5))  # lowered mid-run
                        lowered = True
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        counts = Counter(r.iccid for r in got)
        assert counts == Counter(fleet.iccids())  # every ICCID exactly once
        assert all((r.usage is None) != (r.error is None) for r in got)
        assert all(isinstance(r.error, EsimError) for r in got if r.error is not None)
        ok = sum(r.ok for r in got)
        assert ok >= 0.97 * SIZE, Counter(type(r.error).__name__ for r in got if r.error)
        assert sum(emu.stats.faults.values()) > 0.1 * SIZE  # the faults really happened
        assert emu.stats.tokens_issued == 2
        assert client.stats.rate_limited >= 1  # the lowered limit was noticed ...
        # ... and no request ever broke the client's own limit, as the emulator counted: sends
        # a span apart arrive at least a span less the loop's largest lag apart.
        span = CLIENT_RATE.period * (1 + MARGIN)
        window = min(CLIENT_RATE.period, span - max(lags))
        assert window > 0.4 * CLIENT_RATE.period, f"the loop lagged {max(lags):.3f} s"
        assert max_in_any_window(emu.stats.usage_arrivals, window) <= CLIENT_RATE.count

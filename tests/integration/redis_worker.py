"""A worker process for the Redis tests: sweeps a fleet through a shared RedisBackend and prints
a JSON summary. ``python -m tests.integration.redis_worker REDIS_URL EMULATOR_URL N SEED RATE``
"""

from __future__ import annotations

import asyncio
import json
import sys

from esim_async import AiraloClient, Rate
from esim_async.backends.redis import RedisBackend
from esim_async.testing import Fleet


async def main(redis_url: str, emulator_url: str, size: int, seed: int, rate: int) -> None:
    iccids = Fleet.generate(size, seed=seed).iccids()
    backend = RedisBackend.from_url(redis_url, prefix="test-mp")
    async with AiraloClient(
        "mp",
        "mp-secret",
        base_url=emulator_url,
        company_rate=Rate(rate, 1.0),
        backend=backend,
    ) as client:
        ok = errors = 0
        async with client.sims.usage_many(iccids) as results:
            async for r in results:
                if r.ok:
                    ok += 1
                else:
                    errors += 1
        print(json.dumps({"ok": ok, "errors": errors, "stats": client.stats.as_dict()}))


if __name__ == "__main__":
    url, emu, size, seed, rate = sys.argv[1:6]
    asyncio.run(main(url, emu, int(size), int(seed), int(rate)))

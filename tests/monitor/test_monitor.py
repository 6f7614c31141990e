"""The fleet monitor against the emulator, on a virtual clock: events, pacing, budget, lanes,
webhooks, tracking and task hygiene, for both providers. Every test also checks that the
emulator counted no 429."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from esim_async import InvalidIccidError, Rate
from esim_async.monitor import FleetMonitor
from esim_async.testing import SimRecord
from esim_async.webhooks import SIGNATURE_HEADER, LowDataEvent, sign, webhook_app

from ..arrivals import max_in_any_window
from .fleets import fleet, iccid, record
from .rig import Provider, our_tasks, rig, settle

PROVIDERS: tuple[Provider, ...] = ("airalo", "pressone")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_jump_to_finished_reports_every_threshold_status_and_exhaustion(
    provider: Provider,
) -> None:
    watched, other = iccid(1), iccid(2)
    f = fleet(record(1, 400), record(2, 900))
    async with rig(provider=provider, fleet=f) as r:
        monitor = r.monitor()
        assert await monitor.track([watched, other]) == 2
        async with r.running(monitor):
            await r.clock.run(25, 0.5)
            assert r.kinds(watched) == []
            r.emu.set_usage(watched, remaining=0, status="FINISHED")  # 60 % -> 100 %
            await r.clock.run(25, 0.5)
        assert r.kinds(watched) == [
            ("status", None),
            ("threshold", 0.75),
            ("threshold", 0.9),
            ("exhausted", None),
        ]
        event = next(e for e in r.events if e.kind == "threshold")
        assert event.usage is not None and event.usage.remaining == 0
        assert event.previous is not None and event.previous.remaining == 400
        assert event.detected_at.tzinfo is not None
        assert r.kinds(other) == []
        assert r.rate_limited == 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_no_eSIM_is_read_sooner_than_the_cache_ttl(provider: Provider) -> None:
    async with rig(provider=provider, size=20, cache_ttl=10.0) as r:
        monitor = r.monitor()
        await monitor.track(r.emu.fleet.iccids())
        async with r.running(monitor):
            await r.clock.run(60, 0.25)
            # A webhook asks for a read at once: still not sooner than the TTL.
            await monitor.feed(LowDataEvent(iccid=r.emu.fleet.iccids()[3], level="75%"))
            await r.clock.run(20, 0.25)
        assert len(r.arrivals) >= 20
        for sim in r.emu.fleet.iccids():
            times = r.reads(sim)
            assert all(b - a >= 10.0 - 1e-9 for a, b in itertools.pairwise(times)), times
        assert r.rate_limited == 0


async def test_a_top_up_rearms_the_thresholds_once_per_package() -> None:
    watched = iccid(1)
    async with rig(fleet=fleet(record(1, 500))) as r:
        monitor = r.monitor()
        await monitor.track([watched])
        async with r.running(monitor):
            await r.clock.run(12, 0.5)
            r.emu.set_usage(watched, remaining=200)  # 80 %
            await r.clock.run(12, 0.5)
            r.emu.set_usage(watched, remaining=150)  # 85 %: nothing new
            await r.clock.run(12, 0.5)
            r.emu.set_usage(watched, remaining=2000, total=2000)  # a top-up
            await r.clock.run(12, 0.5)
            r.emu.set_usage(watched, remaining=100)  # 95 % of the new package
            await r.clock.run(12, 0.5)
        assert r.kinds(watched) == [
            ("threshold", 0.75),
            ("topup", None),
            ("threshold", 0.75),
            ("threshold", 0.9),
        ]
        assert r.rate_limited == 0


async def test_unlimited_packages_report_status_changes_only() -> None:
    watched = iccid(1)
    async with rig(fleet=fleet(record(1, 0, 0, unlimited=True))) as r:
        monitor = r.monitor()
        await monitor.track([watched])
        async with r.running(monitor):
            await r.clock.run(12, 0.5)
            r.emu.set_usage(watched, status="EXPIRED")
            await r.clock.run(130, 1.0)
        assert r.kinds(watched) == [("status", None)]
        assert r.rate_limited == 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_installation_and_a_coming_expiry_are_reported(provider: Provider) -> None:
    waiting, expiring = iccid(1), iccid(2)
    f = fleet(record(1, 1000, status="NOT_ACTIVE"), record(2, 900, expires_in=2.0))
    async with rig(provider=provider, fleet=f) as r:
        monitor = r.monitor(expiring_within=3 * 86_400.0)
        await monitor.track([waiting, expiring])
        async with r.running(monitor):
            await r.clock.run(12, 0.5)
            r.emu.set_usage(waiting, status="ACTIVE")
            await r.clock.run(400, 2.0)
        assert r.kinds(waiting) == [("status", None)]
        installed = next(e for e in r.events if e.iccid == waiting)
        assert installed.previous is not None and installed.usage is not None
        assert (installed.previous.status, installed.usage.status) == ("NOT_ACTIVE", "ACTIVE")
        assert r.kinds(expiring) == [("expiring", None)]
        assert r.rate_limited == 0


async def test_an_unknown_eSIM_is_reported_once_and_never_read_again() -> None:
    known, unknown = iccid(1), iccid(99)
    async with rig(fleet=fleet(record(1, 900))) as r:
        monitor = r.monitor()
        await monitor.track([known, unknown])
        async with r.running(monitor):
            await r.clock.run(60, 0.5)
        assert r.kinds(unknown) == [("not_found", None)]
        assert len(r.reads(unknown)) == 1
        assert len(r.reads(known)) >= 5
        assert r.rate_limited == 0


async def test_settled_and_recycled_eSIMs_are_read_rarely_and_active_ones_often() -> None:
    # One read per second for 30 eSIMs that could each be read every 10 s: the budget binds.
    records = [record(n, 120) for n in range(1, 11)]  # active, 88 % used: close to 90 %
    records += [record(n, 0, status="FINISHED") for n in range(11, 16)]
    records += [record(n, 500, status="EXPIRED", expires_in=-1) for n in range(16, 21)]
    records += [record(n, 0, 0, status="RECYCLED") for n in range(21, 26)]
    records += [record(n, 1000, status="NOT_ACTIVE") for n in range(26, 31)]
    async with rig(fleet=fleet(*records), company=Rate(1, 1.0)) as r:
        monitor = r.monitor()
        await monitor.track([x.iccid for x in records])
        async with r.running(monitor):
            await r.clock.run(240, 1.0)
        reads = r.per_iccid()

        def mean(first: int, last: int) -> float:
            return sum(reads[iccid(n)] for n in range(first, last + 1)) / (last - first + 1)

        assert all(reads[iccid(n)] == 1 for n in range(21, 26))  # recycled: never again
        active, settled, waiting = mean(1, 10), mean(11, 20), mean(26, 30)
        assert active > 2 * waiting
        assert waiting >= settled
        assert active >= 15
        assert r.rate_limited == 0


@pytest.mark.parametrize("share", [1.0, 0.5])
async def test_the_budget_share_is_used_and_never_exceeded(share: float) -> None:
    company = Rate(10, 1.0)
    async with rig(size=100, cache_ttl=5.0, company=company, per_key=None) as r:
        monitor = r.monitor(share=share)
        await monitor.track(r.emu.fleet.iccids())
        async with r.running(monitor):
            await r.clock.run(40, 0.1)
        times = [t for t in r.reads() if 5.0 <= t < 35.0]
        allowed = share * company.count
        assert max_in_any_window(r.reads(), 1.0) <= allowed
        # Nearly the whole share is used (the client keeps a 2 % safety margin).
        assert len(times) >= 0.9 * allowed * 30
        assert r.rate_limited == 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_interactive_usage_goes_ahead_of_the_monitor(provider: Provider) -> None:
    company = Rate(1, 2.0)
    async with rig(provider=provider, size=12, company=company, per_key=None) as r:
        sims = r.emu.fleet.iccids()
        tracked, interactive = sims[:-1], sims[-1]
        monitor = r.monitor(max_in_flight=4)
        await monitor.track(tracked)
        async with r.running(monitor):
            await r.clock.run(9, 0.25)
            asked = r.clock.now()
            call = asyncio.ensure_future(r.client.sims.usage(interactive))
            await r.clock.run(12, 0.25)
            assert call.done()
            await call
        after = [i for t, i in r.arrivals if t >= asked]
        # Three bulk reads were waiting for budget: FIFO would send it fourth.
        assert interactive in after[:2], after
        assert len(after) >= 4 and monitor.stats.reads >= 5 and monitor.stats.errors == 0
        assert r.rate_limited == 0


async def test_invalid_iccids_are_rejected_before_any_request() -> None:
    async with rig(size=5) as r:
        monitor = r.monitor()
        good = r.emu.fleet.iccids()
        with pytest.raises(InvalidIccidError):
            await monitor.track([*good, "89440000300000000x6"])
        with pytest.raises(InvalidIccidError):
            await monitor.track(good[0] + "\n")
        assert len(monitor) == 0
        async with r.running(monitor):
            await r.clock.run(5, 0.5)
        assert r.arrivals == []


async def test_tracking_is_idempotent_and_untrack_stops_reading() -> None:
    async with rig(size=6) as r:
        monitor = r.monitor()
        sims = r.emu.fleet.iccids()
        assert await monitor.track(sims) == 6
        assert await monitor.track(iter(sims[:3])) == 0
        gone = sims[0]
        async with r.running(monitor):
            await r.clock.run(15, 0.5)
            assert await monitor.untrack([gone, iccid(77)]) == 1
            stop = r.clock.now()
            await r.clock.run(40, 0.5)
        assert gone not in monitor and len(monitor) == 5
        assert monitor.snapshot(gone) is None
        assert [t for t in r.reads(gone) if t > stop] == []
        assert all(len(r.reads(s)) >= 4 for s in sims[1:])
        assert r.rate_limited == 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_low_data_webhook_is_reported_at_once_and_its_eSIM_read_first(
    provider: Provider,
) -> None:
    # 30 eSIMs, one read per second: each would wait about 30 s for its turn.
    async with rig(provider=provider, size=30, company=Rate(1, 1.0), per_key=None) as r:
        monitor = r.monitor()
        sims = r.emu.fleet.iccids()
        await monitor.track(sims)
        app = webhook_app("secret", on_event=monitor.feed, ack="after_handler")
        async with r.running(monitor), TestClient(TestServer(app, host="127.0.0.1")) as http:
            await r.clock.run(40, 0.5)
            target = sims[5]
            last_read = r.reads(target)[-1]
            body = json.dumps({"iccid": target, "level": "90%", "package_name": "x"}).encode()
            headers = {SIGNATURE_HEADER: sign(body, "secret"), "Content-Type": "application/json"}
            answer = await http.post("/", data=body, headers=headers)
            assert answer.status == 200
            fed = r.clock.now()
            await settle()
            assert r.kinds(target) == [("low_data", 0.9)]
            assert r.events[-1].previous is not None
            await r.clock.run(15, 0.5)
        eligible = max(fed, last_read + 10.0)
        first_after = [i for t, i in r.arrivals if t >= eligible][:2]
        assert target in first_after, first_after
        assert [t for t in r.reads(target) if fed <= t < eligible] == []
        assert monitor.stats.webhooks == 1
        assert r.rate_limited == 0


async def test_a_webhook_for_an_untracked_eSIM_is_ignored() -> None:
    async with rig(size=3) as r:
        monitor = r.monitor()
        await monitor.track(r.emu.fleet.iccids())
        await monitor.feed(LowDataEvent(iccid=iccid(55), level="75%"))
        assert monitor.stats.webhooks == 0


async def test_a_raising_consumer_stops_the_monitor_and_leaves_no_task() -> None:
    watched = iccid(1)
    async with rig(fleet=fleet(record(1, 100))) as r:
        monitor = r.monitor()
        await monitor.track([watched])
        driver = asyncio.ensure_future(r.clock.run(30, 0.5))

        async def consume() -> None:
            async with monitor:
                async for _ in monitor.events():
                    raise RuntimeError("consumer failed")

        with pytest.raises(RuntimeError, match="consumer"):
            await consume()
        driver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await driver
        await settle()
        assert our_tasks() == []
        assert not monitor.active
        assert r.rate_limited == 0


async def test_cancelling_the_consuming_task_leaves_no_task() -> None:
    async with rig(size=10) as r:
        monitor = r.monitor()
        await monitor.track(r.emu.fleet.iccids())
        seen: list[str] = []

        async def consume() -> None:
            async with monitor:
                async for event in monitor.events():
                    seen.append(event.kind)

        task = asyncio.ensure_future(consume())
        await r.clock.run(20, 0.5)
        assert monitor.active
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await settle()
        assert our_tasks() == []
        assert not monitor.active
        reads = len(r.arrivals)
        await r.clock.run(20, 0.5)
        assert len(r.arrivals) == reads  # nothing reads any more
        assert r.rate_limited == 0


def test_thresholds_and_share_are_checked() -> None:
    from esim_async import AiraloClient

    client = AiraloClient("id", "secret", cache_ttl=1.0)
    with pytest.raises(ValueError, match="thresholds"):
        FleetMonitor(client, thresholds=(0.5, 1.5))
    with pytest.raises(ValueError, match="share"):
        FleetMonitor(client, share=0.0)
    monitor = FleetMonitor(client)
    assert monitor.unit == pytest.approx(6.12)  # the per-eSIM limit, 10 per 60 s, is longer


async def test_thresholds_given_out_of_order_and_twice_each_fire_once_in_order() -> None:
    watched = iccid(1)
    async with rig(fleet=fleet(record(1, 1000))) as r:
        monitor = r.monitor(thresholds=(0.9, 0.5, 0.9))
        await monitor.track([watched])
        async with r.running(monitor):
            await r.clock.run(12, 0.5)
            r.emu.set_usage(watched, remaining=0, status="FINISHED")  # 0 % -> 100 %
            await r.clock.run(25, 0.5)
        crossed = [threshold for kind, threshold in r.kinds(watched) if kind == "threshold"]
        assert crossed == [0.5, 0.9]
        assert r.rate_limited == 0


async def test_the_budget_goes_where_a_crossing_is_nearest() -> None:
    """Five eSIMs drain fast towards 75 %, twenty slowly from the same point, five wait for a
    top-up. The budget cannot read all thirty every unit: one threshold on the delay a read
    removes sends most reads to the fast ones, whose crossings are all found, while the
    others are still read, less."""
    fast = [record(n, 300) for n in range(1, 6)]
    slow = [record(n, 300) for n in range(6, 26)]
    finished = [record(n, 0, status="FINISHED") for n in range(26, 31)]
    async with rig(fleet=fleet(*fast, *slow, *finished), company=Rate(1, 1.0)) as r:
        monitor = r.monitor()
        await monitor.track([x.iccid for x in (*fast, *slow, *finished)])
        async with r.running(monitor):
            for step in range(1, 31):  # per unit: 5 MB for the fast ones, 1 MB for the slow
                for x in fast:
                    r.emu.set_usage(x.iccid, remaining=300 - 5 * step)
                for x in slow:
                    r.emu.set_usage(x.iccid, remaining=300 - step)
                await r.clock.run(10, 1.0)
        reads = r.per_iccid()

        def mean(group: list[SimRecord]) -> float:
            return sum(reads[x.iccid] for x in group) / len(group)

        assert mean(fast) > 1.5 * mean(slow) > 0
        assert mean(slow) > mean(finished) >= 2
        draining = {x.iccid for x in (*fast, *slow)}
        crossed = {e.iccid for e in r.events if e.kind == "threshold" and e.threshold == 0.75}
        assert crossed & draining == {x.iccid for x in fast}
        assert r.rate_limited == 0

"""Single flight whose first caller (the leader) runs the call in its own task.

Every guarantee of a shared call holds whoever runs it:

* a leader cancelled at any of the call's awaits leaves the callers still waiting an answer
  (the call is handed over to a task of its own: one request more in that rare case);
* closing ends the leader's wait at once with a ``TransportError`` (its task is not left
  cancelled), but never swallows a cancellation that came from elsewhere;
* a caller arriving while the leader is being cancelled starts a new call;
* the token refresh, shared the same way, answers every request waiting for it.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aiohttp import web

from esim_async import AiraloClient, TransportError
from esim_async.cache import SingleFlight
from esim_async.testing import Emulator, Fleet, ServerLimits


class Work:
    """A call of three awaits (each on its own gate); counts how often it started and how
    often it was cancelled."""

    def __init__(self, steps: int = 3) -> None:
        self.gates = [asyncio.Event() for _ in range(steps)]
        self.at = -1  # the await it is waiting at
        self.started = 0
        self.cancelled = 0

    async def __call__(self) -> int:
        self.started += 1
        n = self.started
        try:
            for i, gate in enumerate(self.gates):
                self.at = i
                await gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return n

    def open(self) -> None:
        for gate in self.gates:
            gate.set()


async def until(condition: Any) -> None:
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("never reached")


@pytest.mark.parametrize("followers", [0, 1, 2])
@pytest.mark.parametrize("step", [0, 1, 2])
async def test_a_leader_cancelled_at_any_await_leaves_its_followers_an_answer(
    followers: int, step: int
) -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    work = Work()
    leader = asyncio.create_task(flight.run("k", work))
    await until(lambda: work.at == 0)
    joined = [asyncio.create_task(flight.run("k", work)) for _ in range(followers)]
    await asyncio.sleep(0)
    for gate in work.gates[:step]:
        gate.set()
    await until(lambda: work.at == step)
    leader.cancel()
    await asyncio.sleep(0)
    work.open()
    results = await asyncio.wait_for(asyncio.gather(*joined), 2)
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert all(value >= 1 and was_joined for value, was_joined in results)
    assert len({value for value, _ in results}) <= 1  # the followers share one answer
    assert work.started <= (1 if followers == 0 else 2)
    await asyncio.sleep(0)
    assert len(flight) == 0
    assert await flight.run("k", work) == (work.started, False)  # nothing left in the way


async def test_a_leader_cancelled_while_its_followers_leave_runs_nothing_more() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    work = Work()
    leader = asyncio.create_task(flight.run("k", work))
    await until(lambda: work.at == 0)
    follower = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    follower.cancel()
    leader.cancel()
    for task in (leader, follower):
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.sleep(0)
    assert work.started == 1 and work.cancelled == 1
    assert len(flight) == 0


async def test_a_caller_timing_out_as_leader_gets_its_timeout_and_the_others_their_answer() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    work = Work()

    async def impatient() -> tuple[int, bool]:
        async with asyncio.timeout(0.01):
            return await flight.run("k", work)

    leader = asyncio.create_task(impatient())
    await until(lambda: work.at == 0)
    follower = asyncio.create_task(flight.run("k", work))
    with pytest.raises(TimeoutError):
        await leader
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    work.open()
    value, joined = await asyncio.wait_for(follower, 2)
    assert joined and value >= 1


async def test_closing_ends_an_inline_leader_at_once_and_leaves_its_task_usable() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    async def forever() -> int:
        await asyncio.sleep(3600)
        return 1

    async def caller() -> str:
        try:
            await flight.run("k", forever)
        except TransportError:
            # The task goes on: the close's cancellation was turned into the error.
            assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
            await asyncio.sleep(0)
            return "went on"
        return "answered"

    leader = asyncio.create_task(caller())
    await asyncio.sleep(0)
    follower = asyncio.create_task(flight.run("k", forever))
    await asyncio.sleep(0)
    await asyncio.wait_for(flight.aclose(), 2)
    assert await asyncio.wait_for(leader, 2) == "went on"
    with pytest.raises(TransportError):
        await follower
    with pytest.raises(TransportError):
        await flight.run("k", forever)


async def test_closing_never_swallows_the_leaders_own_cancellation() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    async def forever() -> int:
        await asyncio.sleep(3600)
        return 1

    for cancel_first in (True, False):
        flight = SingleFlight()
        leader = asyncio.create_task(flight.run("k", forever))
        await asyncio.sleep(0)
        follower = asyncio.create_task(flight.run("k", forever))
        await asyncio.sleep(0)
        if cancel_first:
            leader.cancel()  # its caller leaves at the moment the client closes
        closing = asyncio.create_task(flight.aclose())
        await asyncio.sleep(0)
        if not cancel_first:
            leader.cancel()
        await asyncio.wait_for(closing, 2)
        with pytest.raises(asyncio.CancelledError):
            await leader
        with pytest.raises(TransportError):
            await follower


async def test_closing_nested_flights_led_by_one_task_raises_one_transport_error() -> None:
    """A usage request leading the token refresh: both flights close; the caller gets the
    closing error, and its task is not left cancelled."""
    outer: SingleFlight[str, int] = SingleFlight()
    inner: SingleFlight[str, int] = SingleFlight()

    async def token() -> int:
        await asyncio.sleep(3600)
        return 1

    async def request() -> int:
        value, _ = await inner.run("token", token)
        return value

    async def caller() -> int:
        try:
            await outer.run("k", request)
        except TransportError:
            assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
            return 1
        return 0

    for outer_first in (True, False):
        outer, inner = SingleFlight(), SingleFlight()
        task = asyncio.create_task(caller())
        await asyncio.sleep(0)
        first, second = (outer, inner) if outer_first else (inner, outer)
        await asyncio.wait_for(asyncio.gather(first.aclose(), second.aclose()), 2)
        assert await asyncio.wait_for(task, 2) == 1


async def test_a_call_that_swallows_the_close_still_answers_and_leaves_no_cancellation() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    async def stubborn() -> int:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return 5
        return 1

    async def caller() -> tuple[tuple[int, bool], int]:
        result = await flight.run("k", stubborn)
        return result, asyncio.current_task().cancelling()  # type: ignore[union-attr]

    leader = asyncio.create_task(caller())
    await asyncio.sleep(0)
    await asyncio.wait_for(flight.aclose(), 2)
    assert await leader == ((5, False), 0)


async def test_a_caller_arriving_while_a_lone_leader_is_cancelled_starts_a_new_call() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    wind_down = asyncio.Event()
    started = 0

    async def slow_to_cancel() -> int:
        nonlocal started
        started += 1
        n = started
        try:
            await asyncio.sleep(3600 if n == 1 else 0)
        except asyncio.CancelledError:
            await wind_down.wait()
            raise
        return n

    leader = asyncio.create_task(flight.run("k", slow_to_cancel))
    await until(lambda: started == 1)
    leader.cancel()
    await asyncio.sleep(0)
    arriving = asyncio.create_task(flight.run("k", slow_to_cancel))
    await asyncio.sleep(0)
    wind_down.set()
    assert await asyncio.wait_for(arriving, 2) == (2, False)
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_a_leader_cancelled_before_it_starts_leaves_nothing() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    work = Work(steps=0)
    leader = asyncio.create_task(flight.run("k", work))
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert work.started == 0 and len(flight) == 0
    assert await flight.run("k", work) == (1, False)


async def test_a_failing_leader_hands_its_error_to_every_follower() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    gate = asyncio.Event()

    async def boom() -> int:
        await gate.wait()
        raise ValueError("boom")

    callers = [asyncio.create_task(flight.run("k", boom)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    assert len(flight) == 0


@pytest.mark.parametrize("seed", range(8))
async def test_random_cancellations_and_a_close_end_every_caller_rightly(seed: int) -> None:
    """Callers come, join, leave and are cancelled at random awaits, and the flight closes at
    a random moment: every caller ends with the answer, a ``TransportError`` or its own
    cancellation; no task is left cancelling; nothing is left in flight."""
    rng = random.Random(seed)
    flight: SingleFlight[int, int] = SingleFlight()
    runs = 0

    async def work() -> int:
        nonlocal runs
        runs += 1
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(0)
        if rng.random() < 0.1:
            raise ValueError("refused")
        return 7

    outcomes: list[str] = []

    async def caller(key: int) -> None:
        try:
            value, _ = await flight.run(key, work, fresh=rng.random() < 0.2)
        except TransportError:
            outcomes.append("closed")
        except ValueError:
            outcomes.append("refused")
        else:
            assert value == 7
            outcomes.append("answer")
        # (the task goes on with nothing of the flight's cancellations left on it)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    tasks: list[asyncio.Task[None]] = []
    close_at = rng.randint(5, 60)
    closing: asyncio.Task[None] | None = None
    for step in range(80):
        if rng.random() < 0.5:
            tasks.append(asyncio.create_task(caller(rng.randint(0, 2))))
        if tasks and rng.random() < 0.3:
            rng.choice(tasks).cancel()
        if step == close_at:
            closing = asyncio.create_task(flight.aclose())
        await asyncio.sleep(0)
    assert closing is not None
    await asyncio.wait_for(closing, 2)
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2)
    cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
    assert all(r is None or isinstance(r, asyncio.CancelledError) for r in results), results
    assert len(outcomes) + cancelled == len(tasks)
    assert len(flight) == 0
    await asyncio.sleep(0)
    assert [t for t in asyncio.all_tasks() if "flight" in t.get_name()] == []


# ------------------------------------------------------------------ through the client


class Gate:
    """Holds the emulator's answers to the requests whose path contains ``part`` until
    opened (an aiohttp middleware)."""

    def __init__(self, part: str) -> None:
        self.part = part
        self.open = asyncio.Event()
        self.arrived = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.part in request.path:
            self.arrived += 1
            await self.open.wait()
        return await handler(request)


def unlimited_client(url: str) -> AiraloClient:
    return AiraloClient(
        "id", "secret", base_url=url, token_rate=None, company_rate=None, iccid_rate=None
    )


async def test_requests_waiting_for_a_token_get_one_when_the_request_fetching_it_leaves() -> None:
    fleet = Fleet.generate(3, seed=7)
    iccids = fleet.iccids()
    gate = Gate("/token")
    async with (
        Emulator(
            fleet=fleet, limits=ServerLimits.unlimited(), middlewares=[gate.middleware]
        ) as emu,
        unlimited_client(emu.url) as client,
    ):
        first = asyncio.create_task(client.sims.usage(iccids[0]))
        for _ in range(200):
            if gate.arrived:
                break
            await asyncio.sleep(0.005)
        assert gate.arrived == 1  # its request fetches the token
        others = [asyncio.create_task(client.sims.usage(i)) for i in iccids[1:]]
        await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.sleep(0.01)
        gate.open.set()
        answers = await asyncio.wait_for(asyncio.gather(*others), 5)
        assert len(answers) == len(iccids) - 1
        with pytest.raises(asyncio.CancelledError):
            await first
        assert 1 <= client.stats.token_requests <= 2


async def test_closing_the_client_ends_an_uncached_usage_call_in_flight() -> None:
    fleet = Fleet.generate(3, seed=7)
    iccids = fleet.iccids()
    gate = Gate("/usage")
    async with Emulator(
        fleet=fleet, limits=ServerLimits.unlimited(), middlewares=[gate.middleware]
    ) as emu:
        client = unlimited_client(emu.url)
        leader = asyncio.create_task(client.sims.usage(iccids[0]))
        for _ in range(200):
            if gate.arrived:
                break
            await asyncio.sleep(0.005)
        assert gate.arrived == 1
        follower = asyncio.create_task(client.sims.usage(iccids[0]))
        await asyncio.sleep(0)
        await asyncio.wait_for(client.aclose(), 5)
        for task in (leader, follower):
            with pytest.raises(TransportError):
                await asyncio.wait_for(task, 2)
        gate.open.set()


async def test_a_usage_call_cancelled_while_others_wait_for_its_request_leaves_them_one() -> None:
    fleet = Fleet.generate(3, seed=7)
    iccid = fleet.iccids()[0]
    gate = Gate("/usage")
    async with (
        Emulator(
            fleet=fleet, limits=ServerLimits.unlimited(), middlewares=[gate.middleware]
        ) as emu,
        unlimited_client(emu.url) as client,
    ):
        leader = asyncio.create_task(client.sims.usage(iccid))
        for _ in range(200):
            if gate.arrived:
                break
            await asyncio.sleep(0.005)
        assert gate.arrived == 1  # its request is out
        followers = [asyncio.create_task(client.sims.usage(iccid)) for _ in range(2)]
        await asyncio.sleep(0.01)
        leader.cancel()
        await asyncio.sleep(0.01)
        gate.open.set()
        first, second = await asyncio.wait_for(asyncio.gather(*followers), 5)
        assert first is second
        with pytest.raises(asyncio.CancelledError):
            await leader
        assert client.stats.coalesced == 2
        assert gate.arrived == 2  # the request ran again for them
        assert await client.sims.usage(iccid) is first  # and its answer is cached

"""Client construction, lifecycle, secrets and logging."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from esim_async import (
    AiraloClient,
    InvalidRequestError,
    ManualClock,
    PressOneClient,
    Rate,
    TransportError,
)
from esim_async._secrets import register_secret

from ..arrivals import max_in_any_window
from ..landed import Landed, assert_held_back, assert_not_held


def test_pressone_requires_base_url() -> None:
    with pytest.raises(TypeError):
        PressOneClient("id", "secret")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("base_url", "fragment"),
    [
        ("https://partners-api.airalo.com/v2", "prefix"),
        ("ftp://host", "http"),
        ("https://user:pw@host", "credentials"),
        ("https://host?x=1", "query"),
        ("", "empty"),
    ],
)
def test_base_url_is_scheme_and_host(base_url: str, fragment: str) -> None:
    with pytest.raises(InvalidRequestError, match=fragment) as info:
        AiraloClient("id", "secret", base_url=base_url)
    assert info.value.field == "base_url"


@pytest.mark.parametrize(
    ("cid", "secret", "field"),
    [("", "s", "client_id"), ("id", "  ", "client_secret"), ("id", None, "client_secret")],
)
def test_missing_credentials(cid: str, secret: str | None, field: str) -> None:
    with pytest.raises(InvalidRequestError, match=field):
        AiraloClient(cid, secret)  # type: ignore[arg-type]


AIRALO = "https://partners-api.airalo.com"
PRESSONE = "https://esim.pressone.test"
USAGE_OK = {"data": {"remaining": 512, "total": 1024, "status": "ACTIVE"}, "meta": {}}


def iccids(n: int) -> list[str]:
    return [f"89444654000002672{i:02d}" for i in range(n)]


def token_ok(expires_in: float = 86400) -> dict[str, object]:
    return {"data": {"access_token": "tok-1", "expires_in": expires_in}, "meta": {}}


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


def serve_usage(
    mocked: aioresponses, landed: Landed, *, base: str = AIRALO, path: str = "/v2/sims/{}/usage"
) -> None:
    """Answer usage at ``base + path`` only (any other path fails the call)."""
    pattern = re.compile("^" + re.escape(base + path).replace(r"\{\}", r"(\d+)") + "$")
    mocked.get(pattern, payload=USAGE_OK, repeat=True, callback=landed.record("usage"))


async def test_airalo_holds_the_sixth_esim_of_a_second_back(mocked: aioresponses) -> None:
    """The default company limit is 5 per second: five eSIMs go at once, the sixth waits."""
    clock = ManualClock()
    landed = Landed(clock)
    mocked.post(f"{AIRALO}/v2/token", payload=token_ok(), repeat=True)
    serve_usage(mocked, landed)
    async with AiraloClient("id", "secret", clock=clock) as client:
        assert client.base_url == AIRALO
        for iccid in iccids(6):
            await client.sims.usage(iccid)
    assert_held_back(landed.times["usage"], Rate(5, 1.0))


async def test_airalo_holds_the_eleventh_read_of_one_esim_for_a_minute(
    mocked: aioresponses,
) -> None:
    """The default per-eSIM limit is 10 per minute (the company limit spaces them meanwhile)."""
    clock = ManualClock()
    landed = Landed(clock)
    mocked.post(f"{AIRALO}/v2/token", payload=token_ok(), repeat=True)
    (iccid,) = iccids(1)
    other = "8944465400000267299"
    for name in (iccid, other):
        mocked.get(
            f"{AIRALO}/v2/sims/{name}/usage",
            payload=USAGE_OK,
            repeat=True,
            callback=landed.record(name),
        )
    async with AiraloClient("id", "secret", clock=clock) as client:
        for _ in range(10):
            await client.sims.usage(iccid, refresh=True)
        await client.sims.usage(other)  # another eSIM is not held by this one's window
        await client.sims.usage(iccid, refresh=True)
    times = landed.times[iccid]
    assert len(times) == 11
    assert max_in_any_window(times, 60.0) == 10
    assert times[10] >= 60.0
    assert max_in_any_window(times[:10], 1.0) == 5  # five a second meanwhile
    # The other eSIM waited for the company limit only, not for this one's minute.
    assert len(landed.times[other]) == 1 and landed.times[other][0] < 60.0


async def test_airalo_holds_the_fourth_token_request_of_a_minute_back(
    mocked: aioresponses,
) -> None:
    """Tokens that run out every ten seconds: the default 3 per minute holds the fourth."""
    clock = ManualClock()
    landed = Landed(clock)
    mocked.post(
        f"{AIRALO}/v2/token", payload=token_ok(10), repeat=True, callback=landed.record("token")
    )
    serve_usage(mocked, landed)
    async with AiraloClient("id", "secret", clock=clock) as client:
        for iccid in iccids(4):
            await client.sims.usage(iccid)
            clock.advance(10)  # the token is stale by the next call
    assert landed.times["token"][:3] == [0.0, 10.0, 20.0]
    assert len(landed.times["token"]) == 4
    assert landed.times["token"][3] >= 60.0
    assert max_in_any_window(landed.times["token"], 60.0) == 3
    assert landed.times["usage"][3] >= landed.times["token"][3]  # it waited for its token


@pytest.mark.parametrize(("sandbox", "ttl"), [(False, 1200.0), (True, 3600.0)])
async def test_usage_cache_lives_as_long_as_the_servers(
    mocked: aioresponses, sandbox: bool, ttl: float
) -> None:
    """Usage is answered from the cache for 20 minutes (60 in sandbox), then asked again."""
    clock = ManualClock()
    landed = Landed(clock)
    mocked.post(f"{AIRALO}/v2/token", payload=token_ok(), repeat=True)
    serve_usage(mocked, landed)
    (iccid,) = iccids(1)
    async with AiraloClient("id", "secret", sandbox=sandbox, clock=clock) as client:
        await client.sims.usage(iccid)
        clock.advance(ttl - 1)
        await client.sims.usage(iccid)
        assert len(landed.times["usage"]) == 1  # still the server's cached answer
        clock.advance(1)
        await client.sims.usage(iccid)
    assert landed.times["usage"] == [0.0, ttl]


async def test_pressone_defaults_paths_and_limits(mocked: aioresponses) -> None:
    """PressOne: ``/customer/v2`` paths, no company limit, 100 reads per minute per eSIM."""
    clock = ManualClock()
    landed = Landed(clock)
    mocked.post(
        f"{PRESSONE}/customer/v2/token",
        payload=token_ok(),
        repeat=True,
        callback=landed.record("token"),
    )
    serve_usage(mocked, landed, base=PRESSONE, path="/customer/v2/sims/{}/usage")
    async with PressOneClient("id", "secret", base_url=PRESSONE, clock=clock) as client:
        for iccid in iccids(12):  # more than any company limit of Airalo's
            await client.sims.usage(iccid)
        assert_not_held(landed.times["usage"])
        del landed.times["usage"]
        for _ in range(101):
            await client.sims.usage("8944465400000267299", refresh=True)
    assert landed.times["token"] == [0.0]
    assert_held_back(landed.times["usage"], Rate(100, 60.0))


async def test_usage_path_is_where_usage_requests_go(mocked: aioresponses) -> None:
    """The docs' misspelt path can be configured; a template without ``{iccid}`` cannot."""
    clock = ManualClock()
    landed = Landed(clock)
    mocked.post(f"{PRESSONE}/customer/v2/token", payload=token_ok(), repeat=True)
    serve_usage(mocked, landed, base=PRESSONE, path="/cusomter/v2/sims/{}/usage")
    (iccid,) = iccids(1)
    async with PressOneClient(
        "id",
        "secret",
        base_url=PRESSONE,
        usage_path="/cusomter/v2/sims/{iccid}/usage",
        clock=clock,
    ) as typo:
        await typo.sims.usage(iccid)
    assert landed.urls["usage"] == [URL(f"{PRESSONE}/cusomter/v2/sims/{iccid}/usage")]
    with pytest.raises(InvalidRequestError, match="iccid"):
        PressOneClient("id", "secret", base_url="http://h", usage_path="/x/usage")


async def test_prefix_and_rates_given_are_the_ones_kept(mocked: aioresponses) -> None:
    """``prefix="/v3"``, no per-eSIM limit and 50 per second: one eSIM read 50 times at once
    under ``/v3``, the 51st a second later."""
    clock = ManualClock()
    landed = Landed(clock)
    mocked.post(f"{AIRALO}/v3/token", payload=token_ok(), repeat=True)
    serve_usage(mocked, landed, path="/v3/sims/{}/usage")
    (iccid,) = iccids(1)
    async with AiraloClient(
        "id", "secret", prefix="/v3", iccid_rate=None, company_rate=Rate(50, 1), clock=clock
    ) as custom:
        for _ in range(51):
            await custom.sims.usage(iccid, refresh=True)
    assert_held_back(landed.times["usage"], Rate(50, 1.0))
    assert set(landed.urls["usage"]) == {URL(f"{AIRALO}/v3/sims/{iccid}/usage")}


def test_repr_shows_no_secret() -> None:
    client = AiraloClient("my-id", "S3NTINEL-SECRET")
    assert "S3NTINEL-SECRET" not in repr(client)
    assert "S3NTINEL-SECRET" not in repr(client.sims)
    assert "my-id" in repr(client)


def test_log_filter_redacts_secrets_and_tokens(caplog: pytest.LogCaptureFixture) -> None:
    AiraloClient("id", "LOGGED-SENTINEL-7")
    register_secret("tok-SENTINEL-TOKEN")
    log = logging.getLogger("esim_async")
    with caplog.at_level(logging.DEBUG, logger="esim_async"):
        log.warning("value=%s token=%s", "LOGGED-SENTINEL-7", "tok-SENTINEL-TOKEN")
        log.error("inline LOGGED-SENTINEL-7")
    text = caplog.text
    assert "LOGGED-SENTINEL-7" not in text and "tok-SENTINEL-TOKEN" not in text
    assert text.count("***") == 3


async def test_own_session_is_closed_callers_session_is_not() -> None:
    client = AiraloClient("id", "secret", clock=ManualClock())
    session = client._transport._ensure_session()
    await client.aclose()
    assert session.closed
    await client.aclose()  # idempotent
    with pytest.raises(TransportError, match="closed"):
        await client.sims.usage("8944465400000267221")

    async with aiohttp.ClientSession() as mine:
        async with AiraloClient("id", "secret", session=mine) as c2:
            assert c2._transport._ensure_session() is mine
        assert not mine.closed


def test_construction_needs_no_running_loop() -> None:
    client = AiraloClient("id", "secret")
    assert client._transport._session is None  # created lazily inside the loop

"""Client construction, lifecycle, secrets and logging."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from esim_async import (
    AiraloClient,
    InvalidRequestError,
    ManualClock,
    PressOneClient,
    Rate,
    TransportError,
)
from esim_async._secrets import register_secret


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


def test_profiles_and_defaults() -> None:
    a = AiraloClient("id", "secret")
    assert a.base_url == "https://partners-api.airalo.com"
    assert a._usage_path == "/v2/sims/{iccid}/usage"
    state = a.rate_limit_state()
    assert state["usage"].configured == Rate(5, 1.0)
    assert state["usage"].per_key == Rate(10, 60.0)
    assert state["token"].configured == Rate(3, 60.0)
    assert a._usage_cache.ttl == 1200.0
    assert AiraloClient("id", "secret", sandbox=True)._usage_cache.ttl == 3600.0
    p = PressOneClient("id", "secret", base_url="http://127.0.0.1:9")
    assert p._usage_path == "/customer/v2/sims/{iccid}/usage"
    assert p._token_path == "/customer/v2/token"
    pstate = p.rate_limit_state()["usage"]
    assert pstate.configured is None and pstate.per_key == Rate(100, 60.0)
    typo = PressOneClient(
        "id", "secret", base_url="http://127.0.0.1:9", usage_path="/cusomter/v2/sims/{iccid}/usage"
    )
    assert typo._usage_path == "/cusomter/v2/sims/{iccid}/usage"
    with pytest.raises(InvalidRequestError, match="iccid"):
        PressOneClient("id", "secret", base_url="http://h", usage_path="/x/usage")
    custom = AiraloClient("id", "secret", prefix="/v3", iccid_rate=None, company_rate=Rate(50, 1))
    assert custom._usage_path == "/v3/sims/{iccid}/usage"
    assert custom.rate_limit_state()["usage"].per_key is None


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

"""ICCID validation: only ASCII digits of the configured length; nothing that alters a URL."""

from __future__ import annotations

import pytest
from aioresponses import aioresponses
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from esim_async import AiraloClient, InvalidIccidError, InvalidRequestError, ManualClock
from esim_async.validation import validate_iccid

BASE = "https://partners-api.airalo.com"
TOKEN = {"data": {"access_token": "tok", "expires_in": 3600}, "meta": {}}


@pytest.mark.parametrize("iccid", ["894446540000026722", "8944465400000267221", "8" * 22])
def test_valid(iccid: str) -> None:
    assert validate_iccid(iccid) == iccid


@pytest.mark.parametrize(
    ("iccid", "fragment"),
    [
        ("89444654000002672", "18-22 digits"),
        ("8" * 23, "18-22 digits"),
        ("8944465400000267221 ", "ASCII digits"),
        ("8944465400000267221/../token", "ASCII digits"),
        ("894446540000026722%2F", "ASCII digits"),
        ("8944465400000267221?x=1", "ASCII digits"),
        ("8944465400000267221#", "ASCII digits"),
        ("٨٩٤٤٤٦٥٤٠٠٠٠٠٢٦٧٢٢١", "ASCII digits"),  # Arabic-Indic digits
        ("", "ASCII digits"),
        ("-894446540000026722", "ASCII digits"),
    ],
)
def test_invalid(iccid: str, fragment: str) -> None:
    with pytest.raises(InvalidIccidError, match=fragment) as info:
        validate_iccid(iccid)
    assert info.value.field == "iccid"
    assert isinstance(info.value, InvalidRequestError) and isinstance(info.value, ValueError)


def test_not_a_string() -> None:
    with pytest.raises(InvalidIccidError, match="str"):
        validate_iccid(8944465400000267221)


def test_configurable_length_for_sandbox() -> None:
    assert validate_iccid("891000000000009125", min_length=16) == "891000000000009125"
    assert validate_iccid("8910000000000091", min_length=16) == "8910000000000091"
    with pytest.raises(InvalidIccidError):
        validate_iccid("8910000000000091")


async def test_client_iccid_length_lets_shorter_sandbox_iccids_through() -> None:
    """A 16-digit sandbox ICCID: refused without a request by default, sent with
    ``iccid_length=(16, 22)``."""
    short = "8910000000000091"
    usage_url = f"{BASE}/v2/sims/{short}/usage"
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/v2/token", payload=TOKEN, repeat=True)
        mocked.get(usage_url, payload={"data": {"status": "ACTIVE"}, "meta": {}}, repeat=True)
        async with AiraloClient("id", "secret", clock=ManualClock()) as strict:
            with pytest.raises(InvalidIccidError, match="18-22 digits"):
                await strict.sims.usage(short)
        assert not mocked.requests
        async with AiraloClient(
            "id", "secret", iccid_length=(16, 22), clock=ManualClock()
        ) as sandbox:
            usage = await sandbox.sims.usage(short)
            with pytest.raises(InvalidIccidError, match="16-22 digits"):
                await sandbox.sims.usage(short[:-1])
        assert usage.status == "ACTIVE"
        assert len(mocked.requests[("GET", URL(usage_url))]) == 1


def test_long_values_are_truncated_in_the_message() -> None:
    with pytest.raises(InvalidIccidError) as info:
        validate_iccid("9" * 1000)
    assert len(str(info.value)) < 200


@given(st.text(max_size=60))
def test_anything_accepted_is_plain_ascii_digits(value: str) -> None:
    try:
        accepted = validate_iccid(value)
    except InvalidIccidError:
        return
    assert accepted == value
    assert all(c in "0123456789" for c in value)
    assert 18 <= len(value) <= 22

"""ICCID validation: only ASCII digits of the configured length; nothing that alters a URL."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esim_async import InvalidIccidError, InvalidRequestError
from esim_async.validation import validate_iccid


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

"""Business codes drift between numbers and strings like the API's other numbers do
(``quantity`` ``"1"``, ``price`` ``"9.50"``): a code sent as ``"11"`` still says the account
needs credit, ``"73"`` that the eSIM was recycled, and a 403 ``"89"`` names the allow-list."""

from __future__ import annotations

import json

import pytest

from esim_async import AuthenticationError, BusinessError
from esim_async.errors import error_from_response


@pytest.mark.parametrize(
    ("code", "retryable", "needs_credit", "recycled"),
    [("34", True, False, False), ("11", False, True, False), (" 73 ", False, False, True)],
)
def test_a_business_code_sent_as_text_keeps_its_meaning(
    code: str, retryable: bool, needs_credit: bool, recycled: bool
) -> None:
    error = error_from_response(422, json.dumps({"code": code, "reason": "r"}).encode(), {})
    assert isinstance(error, BusinessError) and error.code == code  # kept as sent
    assert (error.retryable, error.needs_credit, error.recycled) == (
        retryable,
        needs_credit,
        recycled,
    )


def test_a_403_with_code_89_as_text_names_the_allow_list() -> None:
    error = error_from_response(403, b'{"code": "89", "reason": "Forbidden"}', {})
    assert isinstance(error, AuthenticationError)
    assert "allow-list" in str(error)

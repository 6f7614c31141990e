"""Webhook signatures are compared in constant time: every comparison goes through
``hmac.compare_digest``, never ``==`` (which stops at the first differing character and lets a
forger learn the signature byte by byte from response times)."""

from __future__ import annotations

import hmac
import json
from typing import Any

import pytest

from esim_async.webhooks import sign, verify_signature

SECRET = "constant-time-secret"
# Pretty-printed, with a slash and a non-ASCII character: the raw bytes and both documented
# canonical re-encodings (PHP-escaped slashes, non-ASCII raw or \u-escaped) all differ.
BODY = '{\n  "url": "https://a.example/x",\n  "name": "Élan"\n}'.encode()
CANDIDATES = {
    sign(BODY, SECRET),
    sign('{"url":"https:\\/\\/a.example\\/x","name":"Élan"}'.encode(), SECRET),
    sign(b'{"url":"https:\\/\\/a.example\\/x","name":"\\u00c9lan"}', SECRET),
}


@pytest.fixture
def comparisons(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Every call of ``hmac.compare_digest`` (which still does the comparing)."""
    seen: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return seen


def test_the_candidates_are_distinct() -> None:
    assert len(CANDIDATES) == 3
    assert json.loads(BODY)["name"] == "Élan"


def test_a_wrong_signature_is_compared_in_constant_time_against_every_form(
    comparisons: list[tuple[Any, Any]],
) -> None:
    wrong = "0" * 128
    assert not verify_signature(BODY, wrong, SECRET)
    assert {expected for expected, _ in comparisons} == CANDIDATES
    assert all(given == wrong for _, given in comparisons)


@pytest.mark.parametrize("expected", sorted(CANDIDATES))
def test_a_right_signature_is_accepted_by_a_constant_time_comparison(
    comparisons: list[tuple[Any, Any]], expected: str
) -> None:
    assert verify_signature(BODY, expected.upper(), SECRET)
    # The match itself came out of compare_digest, not out of ==.
    assert (expected, expected) in comparisons

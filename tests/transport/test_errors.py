"""Mapping responses to typed errors: by status first, then by body shape."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esim_async import (
    ApiError,
    AuthenticationError,
    BusinessError,
    EndpointNotFoundError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    ValidationError,
)
from esim_async._secrets import register_secret
from esim_async.errors import error_from_response, parse_retry_after


def err(status: int, body: object, headers: dict[str, str] | None = None, **kw: bool) -> ApiError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return error_from_response(status, raw, headers or {}, **kw)


def test_404_with_and_without_envelope(payload) -> None:
    e = error_from_response(404, payload("airalo/usage_404_invalid_iccid.json"), {})
    assert type(e) is NotFoundError
    assert e.status == 404 and e.message == "messages.resource_not_found"
    assert type(err(404, {"data": []})) is NotFoundError
    assert type(err(404, {"detail": "Not found."})) is NotFoundError
    # A framework's unknown-route answer is not the provider saying "no such eSIM".
    assert type(err(404, {"message": "Not Found"})) is EndpointNotFoundError
    assert type(err(404, b"<html>nope</html>")) is EndpointNotFoundError
    assert type(err(404, b"")) is EndpointNotFoundError
    assert type(err(404, [])) is EndpointNotFoundError


def test_429_reads_retry_after(payload) -> None:
    e = error_from_response(
        429,
        payload("airalo/usage_429_rate_limit.json"),
        {"Retry-After": "17", "X-RateLimit-Limit": "5"},
    )
    assert isinstance(e, RateLimitedError)
    assert e.retry_after == 17.0
    assert e.headers["X-RateLimit-Limit"] == "5"
    assert e.message == "Too Many Attempts."
    assert err(429, {"data": [], "meta": {"message": "x"}}).retry_after is None  # type: ignore[attr-defined]


def test_token_refusals_are_authentication_errors(payload) -> None:
    e401 = error_from_response(
        401, payload("airalo/token_401_client_auth_failed.json"), {}, token_request=True
    )
    e422 = error_from_response(
        422, payload("airalo/token_422_invalid_client.json"), {}, token_request=True
    )
    assert isinstance(e401, AuthenticationError) and isinstance(e422, AuthenticationError)
    assert "client_id" in str(e422)
    # The same 422 on an ordinary endpoint is a validation error with its field map.
    v = error_from_response(422, payload("airalo/token_422_invalid_client.json"), {})
    assert isinstance(v, ValidationError)
    assert v.fields == {"client_id": ["The selected client id is invalid."]}


def test_403_ip_allow_list() -> None:
    e = err(403, {"code": 89, "reason": "IP not allowed"})
    assert isinstance(e, AuthenticationError) and e.code == 89
    assert "allow-list" in str(e)


def test_validation_fields_accept_strings_and_lists() -> None:
    e = err(
        422,
        {
            "data": {
                "quantity": "The quantity may not be greater than 50.",
                "sharing_option": ["bad", "worse"],
            },
            "meta": {"message": "the parameter is invalid"},
        },
    )
    assert isinstance(e, ValidationError)
    assert e.fields == {
        "quantity": ["The quantity may not be greater than 50."],
        "sharing_option": ["bad", "worse"],
    }
    assert isinstance(err(400, {"data": [], "meta": {"message": "bad"}}), ValidationError)


@pytest.mark.parametrize(
    ("code", "retryable", "needs_credit", "recycled"),
    [
        (13, True, False, False),
        (33, True, False, False),
        (34, True, False, False),
        (53, True, False, False),
        (11, False, True, False),
        (73, False, False, True),
        (23, False, False, False),
    ],
)
def test_business_codes(code: int, retryable: bool, needs_credit: bool, recycled: bool) -> None:
    e = err(422, {"code": code, "reason": "something"})
    assert isinstance(e, BusinessError)
    assert (e.retryable, e.needs_credit, e.recycled) == (retryable, needs_credit, recycled)
    assert e.reason == "something"


def test_5xx_and_other_statuses() -> None:
    for status in (500, 502, 503, 504):
        assert isinstance(err(status, b"<html>oops</html>"), ServerError)
    other = err(418, {"message": "teapot"})
    assert type(other) is ApiError and other.status == 418


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-1", None),
        ("inf", None),
        ("NaN", None),
        ("nan", None),
        ("1e400", None),
        ("", None),
        (None, None),
        ("soon", None),
        ("9" * 100, None),
    ],
)
def test_retry_after_parsing(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", now=now) == pytest.approx(20.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=now) == 0.0  # in the past


@given(st.text(max_size=80))
def test_retry_after_never_raises_and_is_finite(value: str) -> None:
    parsed = parse_retry_after(value)
    assert parsed is None or (math.isfinite(parsed) and parsed >= 0)


@given(st.integers(min_value=400, max_value=599), st.binary(max_size=200))
def test_any_error_body_maps_to_an_api_error(status: int, raw: bytes) -> None:
    e = error_from_response(status, raw, {})
    assert isinstance(e, ApiError) and e.status == status


ECHOED = "ECHOED-PROPERTY-SECRET-31d7"
echo_values = st.recursive(
    st.none()
    | st.integers()
    | st.text(max_size=10)
    | st.tuples(st.text(max_size=5), st.text(max_size=5)).map(lambda p: p[0] + ECHOED + p[1]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5) | st.just(ECHOED), children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.integers(min_value=400, max_value=599),
    st.fixed_dictionaries(
        {},
        optional={
            "data": echo_values,
            "meta": st.fixed_dictionaries({"message": echo_values}),
            "message": echo_values,
            "reason": echo_values,
            "code": st.integers() | st.just(ECHOED),
        },
    ),
)
def test_a_registered_secret_never_shows_in_an_error(status: int, body: dict[str, object]) -> None:
    register_secret(ECHOED)
    e = error_from_response(status, json.dumps(body).encode(), {"X-Echo": ECHOED})
    shown = [str(e), repr(e), repr(e.body), repr(e.message), repr(e.reason), repr(e.code)]
    shown += [repr(e.headers), repr(getattr(e, "fields", None))]
    assert all(ECHOED not in text for text in shown)

"""The request loop, tested with aioresponses: retries, 401 refresh, 429s, writes, decoding."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import msgspec
import pytest
from aioresponses import aioresponses
from yarl import URL

from esim_async import (
    AiraloClient,
    AuthenticationError,
    EndpointNotFoundError,
    EsimError,
    InvalidIccidError,
    ManualClock,
    NotFoundError,
    OutcomeUnknownError,
    RateLimitedError,
    ServerError,
    TransportError,
    ValidationError,
    __version__,
)
from esim_async.backends.memory import MemoryBackend
from esim_async.limits import EndpointLimiter, LimiterState, Priority, Rate, Slot
from esim_async.stats import ClientStats
from esim_async.transport import (
    Backoff,
    Kind,
    Outcome,
    Request,
    Transport,
    classify,
    final_error,
    may_retry,
    outcome_unknown,
    retry_delay,
)

BASE = "https://partners-api.airalo.com"
TOKEN_URL = f"{BASE}/v2/token"
ICCID = "8944465400000267221"
USAGE_URL = f"{BASE}/v2/sims/{ICCID}/usage"
USAGE_OK = {
    "data": {
        "remaining": 512,
        "total": 1024,
        "expired_at": "2026-01-01 00:00:00",
        "is_unlimited": False,
        "status": "ACTIVE",
        "remaining_voice": 0,
        "remaining_text": 0,
        "total_voice": 0,
        "total_text": 0,
    },
    "meta": {"message": "api.succes"},
}


def token_body(n: int = 1, expires_in: int = 86400) -> dict[str, Any]:
    return {
        "data": {"token_type": "Bearer", "expires_in": expires_in, "access_token": f"tok-{n}"},
        "meta": {"message": "success"},
    }


def calls(m: aioresponses, method: str, url: str) -> list[Any]:
    return m.requests.get((method, URL(url)), [])


@pytest.fixture
def mocked() -> Any:
    with aioresponses() as m:
        yield m


@pytest.fixture
async def client() -> AsyncIterator[AiraloClient]:
    async with AiraloClient("my-id", "my-secret-value", clock=ManualClock()) as c:
        yield c


async def test_usage_request_shape(mocked: aioresponses, client: AiraloClient) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, payload=USAGE_OK)
    usage = await client.sims.usage(ICCID)
    assert usage.remaining == 512 and usage.fetched_at is not None
    (token_call,) = calls(mocked, "POST", TOKEN_URL)
    assert token_call.kwargs["data"] == {
        "client_id": "my-id",
        "client_secret": "my-secret-value",
        "grant_type": "client_credentials",
    }
    (usage_call,) = calls(mocked, "GET", USAGE_URL)
    headers = usage_call.kwargs["headers"]
    assert headers["Authorization"] == "Bearer tok-1"
    assert usage_call.kwargs["allow_redirects"] is False
    assert client.stats.requests == 2 and client.stats.attempts == 2


async def test_default_headers_on_own_session(client: AiraloClient) -> None:
    session = client._transport._ensure_session()
    assert session.headers["User-Agent"] == f"esim-async/{__version__}"
    assert session.headers["Accept"] == "application/json"


async def test_invalid_iccid_spends_nothing(mocked: aioresponses, client: AiraloClient) -> None:
    with pytest.raises(InvalidIccidError):
        await client.sims.usage("1234/../../token")
    assert client.stats.requests == 0 and not mocked.requests


async def test_5xx_on_get_is_retried_then_raised(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    for _ in range(3):
        mocked.get(USAGE_URL, status=503, body=b"<html>down</html>")
    with pytest.raises(ServerError) as info:
        await client.sims.usage(ICCID)
    assert info.value.status == 503
    assert len(calls(mocked, "GET", USAGE_URL)) == 3  # 1 + max_retries (2)
    assert client.stats.retries == 2


async def test_5xx_then_success(mocked: aioresponses, client: AiraloClient) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, status=500, body=b"")
    mocked.get(USAGE_URL, payload=USAGE_OK)
    assert (await client.sims.usage(ICCID)).remaining == 512


async def test_per_call_max_retries(mocked: aioresponses, client: AiraloClient) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, status=500, body=b"", repeat=True)
    with pytest.raises(ServerError):
        await client.sims.usage(ICCID, max_retries=0)
    assert len(calls(mocked, "GET", USAGE_URL)) == 1


async def test_undecodable_2xx_is_retried_then_transport_error(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, body=b"<html>maintenance</html>", content_type="text/html", repeat=True)
    with pytest.raises(TransportError, match="undecodable"):
        await client.sims.usage(ICCID)
    assert len(calls(mocked, "GET", USAGE_URL)) == 3


async def test_network_errors_are_transport_errors(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, exception=aiohttp.ServerDisconnectedError(), repeat=True)
    with pytest.raises(TransportError):
        await client.sims.usage(ICCID)
    assert len(calls(mocked, "GET", USAGE_URL)) == 3


async def test_401_refreshes_the_token_once(mocked: aioresponses, client: AiraloClient) -> None:
    mocked.post(TOKEN_URL, payload=token_body(1))
    mocked.post(TOKEN_URL, payload=token_body(2))
    mocked.get(USAGE_URL, status=401, payload={"message": "Unauthenticated."})
    mocked.get(USAGE_URL, payload=USAGE_OK)
    assert (await client.sims.usage(ICCID)).remaining == 512
    auths = [c.kwargs["headers"]["Authorization"] for c in calls(mocked, "GET", USAGE_URL)]
    assert auths == ["Bearer tok-1", "Bearer tok-2"]
    assert client.stats.token_requests == 2


async def test_401_twice_is_an_authentication_error(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body(1))
    mocked.post(TOKEN_URL, payload=token_body(2))
    mocked.get(USAGE_URL, status=401, payload={"message": "Unauthenticated."}, repeat=True)
    with pytest.raises(AuthenticationError):
        await client.sims.usage(ICCID)
    assert len(calls(mocked, "GET", USAGE_URL)) == 2


async def test_refused_token_never_echoes_the_secret(
    mocked: aioresponses, client: AiraloClient, payload: Any
) -> None:
    mocked.post(TOKEN_URL, status=401, body=payload("airalo/token_401_client_auth_failed.json"))
    with pytest.raises(AuthenticationError) as info:
        await client.sims.usage(ICCID)
    assert "my-secret-value" not in str(info.value)
    assert "my-secret-value" not in repr(info.value.body)
    assert not calls(mocked, "GET", USAGE_URL)


async def test_429_cools_down_everyone_and_retries(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    others = [f"89444654000002672{i:02d}" for i in range(4)]
    for other in others:
        mocked.get(f"{BASE}/v2/sims/{other}/usage", payload=USAGE_OK)
    mocked.get(
        USAGE_URL,
        status=429,
        payload={"message": "Too Many Attempts."},
        headers={"Retry-After": "1", "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0"},
    )
    mocked.get(USAGE_URL, payload=USAGE_OK)
    clock = client._clock
    assert isinstance(clock, ManualClock)
    for other in others:
        await client.sims.usage(other)
    # The company window (5 per second) is full when the 429 comes: the company limit tripped.
    assert (await client.sims.usage(ICCID)).remaining == 512
    assert client.stats.rate_limited == 1
    state = client.rate_limit_state()["usage"]
    assert state.cooldown_until == pytest.approx(1.0, abs=0.5)
    assert clock.now() >= 1.0  # the retry waited for the cool-down
    assert state.last_headers["X-RateLimit-Limit"] == "5"
    assert state.effective_per_second is not None and state.effective_per_second < 5


async def test_429_beyond_the_cap_surfaces_at_once(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(
        USAGE_URL,
        status=429,
        payload={"message": "Too Many Attempts."},
        headers={"Retry-After": "3600"},
    )
    with pytest.raises(RateLimitedError) as info:
        await client.sims.usage(ICCID)
    assert info.value.retry_after == 3600
    assert len(calls(mocked, "GET", USAGE_URL)) == 1


async def test_404_is_negative_cached(
    mocked: aioresponses, client: AiraloClient, payload: Any
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, status=404, body=payload("airalo/usage_404_invalid_iccid.json"))
    mocked.get(USAGE_URL, status=404, body=payload("airalo/usage_404_invalid_iccid.json"))
    for _ in range(3):
        with pytest.raises(NotFoundError):
            await client.sims.usage(ICCID)
    assert len(calls(mocked, "GET", USAGE_URL)) == 1
    assert client.stats.negative_cache_hits == 2
    with pytest.raises(NotFoundError):
        await client.sims.usage(ICCID, refresh=True)
    assert len(calls(mocked, "GET", USAGE_URL)) == 2


async def test_cache_ttl_max_age_and_refresh(mocked: aioresponses, client: AiraloClient) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, payload=USAGE_OK, repeat=True)
    clock = client._clock
    assert isinstance(clock, ManualClock)
    first = await client.sims.usage(ICCID)
    clock.advance(600)
    assert await client.sims.usage(ICCID) is first
    assert await client.sims.usage(ICCID, max_age=300) is not first
    assert len(calls(mocked, "GET", USAGE_URL)) == 2
    await client.sims.usage(ICCID, refresh=True)
    assert len(calls(mocked, "GET", USAGE_URL)) == 3
    clock.advance(1201)
    await client.sims.usage(ICCID)
    assert len(calls(mocked, "GET", USAGE_URL)) == 4
    assert client.stats.cache_hits == 1


async def test_recycled_is_kept_24h(
    mocked: aioresponses, client: AiraloClient, payload: Any
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, body=payload("airalo/usage_200_recycled.json"), repeat=True)
    clock = client._clock
    assert isinstance(clock, ManualClock)
    assert (await client.sims.usage(ICCID)).is_recycled
    clock.advance(5 * 3600)
    assert (await client.sims.usage(ICCID)).is_recycled
    assert len(calls(mocked, "GET", USAGE_URL)) == 1


async def test_concurrent_calls_share_one_request(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, payload=USAGE_OK, repeat=True)
    results = await asyncio.gather(*(client.sims.usage(ICCID) for _ in range(20)))
    assert all(r is results[0] for r in results)
    assert len(calls(mocked, "GET", USAGE_URL)) == 1
    assert len(calls(mocked, "POST", TOKEN_URL)) == 1
    assert client.stats.coalesced + client.stats.cache_hits == 19


async def test_errors_are_not_cached_as_data(mocked: aioresponses, client: AiraloClient) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.get(USAGE_URL, status=500, body=b"", repeat=False)
    mocked.get(USAGE_URL, status=500, body=b"")
    mocked.get(USAGE_URL, status=500, body=b"")
    mocked.get(USAGE_URL, payload=USAGE_OK)
    with pytest.raises(ServerError):
        await client.sims.usage(ICCID)
    assert (await client.sims.usage(ICCID)).remaining == 512


# ------------------------------------------------------------------ writes (non-idempotent)

POST_URL = f"{BASE}/v2/orders"
_any = msgspec.json.Decoder()


def write(client: AiraloClient) -> Request[Any]:
    return Request("POST", "/v2/orders", _any, idempotent=False, form={"quantity": "1"})


async def test_write_with_5xx_is_never_retried(mocked: aioresponses, client: AiraloClient) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.post(POST_URL, status=500, body=b"", repeat=True)
    with pytest.raises(OutcomeUnknownError, match="may or may not") as info:
        await client._transport.request(write(client))
    assert isinstance(info.value.__cause__, ServerError)
    assert len(calls(mocked, "POST", POST_URL)) == 1


async def test_write_with_lost_connection_is_never_retried(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.post(POST_URL, exception=aiohttp.ServerDisconnectedError(), repeat=True)
    with pytest.raises(OutcomeUnknownError, match="not idempotent"):
        await client._transport.request(write(client))
    assert len(calls(mocked, "POST", POST_URL)) == 1


async def test_write_that_never_connected_is_retried(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 443, True, True, None, None, None),
        OSError(111, "Connection refused"),
    )
    mocked.post(POST_URL, exception=refused)
    mocked.post(POST_URL, payload={"data": {"id": 1}})
    assert await client._transport.request(write(client)) == {"data": {"id": 1}}


async def test_write_with_429_is_retried(mocked: aioresponses, client: AiraloClient) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.post(
        POST_URL,
        status=429,
        payload={"message": "Too Many Attempts."},
        headers={"Retry-After": "1"},
    )
    mocked.post(POST_URL, payload={"data": {"id": 2}})
    assert await client._transport.request(write(client)) == {"data": {"id": 2}}


async def test_write_with_undecodable_success_says_it_probably_happened(
    mocked: aioresponses, client: AiraloClient
) -> None:
    mocked.post(TOKEN_URL, payload=token_body())
    mocked.post(POST_URL, body=b"<html>", content_type="text/html")
    req = Request("POST", "/v2/orders", msgspec.json.Decoder(dict[str, int]), idempotent=False)
    with pytest.raises(OutcomeUnknownError, match="probably"):
        await client._transport.request(req)
    assert len(calls(mocked, "POST", POST_URL)) == 1


async def test_oversized_body_is_refused(mocked: aioresponses) -> None:
    async with AiraloClient(
        "id", "secret", clock=ManualClock(), max_body_size=1000, max_retries=0
    ) as c:
        mocked.post(TOKEN_URL, payload=token_body())
        mocked.get(USAGE_URL, body=json.dumps({"data": {"x": "y" * 5000}}).encode())
        with pytest.raises(TransportError, match="cap"):
            await c.sims.usage(ICCID)


# ------------------------------------------------------------ the loop's decisions, one by one

_body_any = msgspec.json.Decoder()
_NO_HEADERS: dict[str, str] = {}


def get(**kw: Any) -> Request[Any]:
    return Request("GET", "/v2/balance", _body_any, **kw)


def post(**kw: Any) -> Request[Any]:
    return Request("POST", "/v2/orders", _body_any, idempotent=False, **kw)


def answered(req: Request[Any], status: int, body: bytes = b"{}", **headers: str) -> Outcome:
    return classify(req, status, body, {k.replace("_", "-"): v for k, v in headers.items()})


def test_classify_decodes_a_2xx() -> None:
    outcome = classify(get(), 200, b'{"data": {"id": 1}}', _NO_HEADERS)
    assert outcome.kind is Kind.ANSWER and outcome.value == {"data": {"id": 1}}
    assert outcome.error is None


@pytest.mark.parametrize(("status", "body"), [(204, b""), (200, b""), (200, b" \r\n")])
def test_classify_reads_an_empty_2xx_as_none_only_where_allowed(status: int, body: bytes) -> None:
    outcome = classify(get(empty_ok=True), status, body, _NO_HEADERS)
    assert outcome.kind is Kind.ANSWER and outcome.value is None
    assert classify(get(), status, body, _NO_HEADERS).kind is Kind.UNDECODABLE


@pytest.mark.parametrize(
    "body",
    [b"<html>maintenance</html>", b"[" * 100_000 + b"]" * 100_000],  # garbage; nested too deep
    ids=["garbage", "nested"],
)
def test_classify_names_an_undecodable_2xx(body: bytes) -> None:
    outcome = classify(get(), 200, body, _NO_HEADERS)
    assert outcome.kind is Kind.UNDECODABLE and outcome.status == 200
    assert isinstance(outcome.error, TransportError)
    assert "GET /v2/balance: undecodable HTTP 200 body" in str(outcome.error)
    assert isinstance(outcome.error.__cause__, (msgspec.DecodeError, RecursionError))


def test_classify_names_a_body_of_the_wrong_shape_undecodable() -> None:
    req = Request("GET", "/v2/balance", msgspec.json.Decoder(dict[str, int]))
    outcome = classify(req, 200, b'{"a": "not a number"}', _NO_HEADERS)
    assert outcome.kind is Kind.UNDECODABLE
    assert isinstance(outcome.error.__cause__, msgspec.ValidationError)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("status", "kind", "error"),
    [
        (401, Kind.UNAUTHORIZED, AuthenticationError),
        (403, Kind.REFUSED, AuthenticationError),
        (404, Kind.REFUSED, EndpointNotFoundError),  # (not the provider's not-found body)
        (422, Kind.REFUSED, ValidationError),
        (429, Kind.RATE_LIMITED, RateLimitedError),
        (500, Kind.SERVER_ERROR, ServerError),
        (503, Kind.SERVER_ERROR, ServerError),
    ],
)
def test_classify_names_error_answers(status: int, kind: Kind, error: type[Exception]) -> None:
    outcome = answered(get(), status, b'{"message": "no"}', Retry_After="7")
    assert outcome.kind is kind and isinstance(outcome.error, error)
    assert outcome.status == status and outcome.headers == {"Retry-After": "7"}
    assert outcome.retry_after == (7.0 if kind is Kind.RATE_LIMITED else None)


def test_classify_a_refused_token_request_is_an_authentication_error() -> None:
    req = Request("POST", "/v2/token", _body_any, authenticated=False, token_request=True)
    outcome = classify(req, 422, b'{"message": "bad"}', _NO_HEADERS)
    assert outcome.kind is Kind.REFUSED and isinstance(outcome.error, AuthenticationError)


NOT_SENT = Outcome(Kind.NOT_SENT, error=TransportError("cannot connect"))
NO_ANSWER = Outcome(Kind.NO_ANSWER, error=TransportError("timed out"))


def rate_limited(retry_after: str | None = None) -> Outcome:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return classify(get(), 429, b"{}", headers)


@pytest.mark.parametrize(
    ("outcome", "read", "write"),
    [
        (NOT_SENT, True, True),  # nothing went out: safe for a write too
        (NO_ANSWER, True, False),
        (classify(get(), 200, b"<html>", _NO_HEADERS), True, False),  # undecodable
        (classify(get(), 502, b"", _NO_HEADERS), True, False),
        (rate_limited("1"), True, True),  # rejected before it did anything
        (rate_limited(), True, True),
        (classify(get(), 401, b"", _NO_HEADERS), False, False),  # the loop refreshes it once
        (classify(get(), 404, b"", _NO_HEADERS), False, False),
        (classify(get(), 400, b"", _NO_HEADERS), False, False),
    ],
    ids=["not-sent", "no-answer", "undecodable", "5xx", "429", "429-bare", "401", "404", "400"],
)
def test_may_retry(outcome: Outcome, read: bool, write: bool) -> None:
    assert may_retry(outcome, get(), 0, 2, 60.0) is read
    assert may_retry(outcome, post(), 1, 2, 60.0) is write
    # Never beyond max_retries.
    assert may_retry(outcome, get(), 2, 2, 60.0) is False
    assert may_retry(outcome, post(), 0, 0, 60.0) is False


def test_may_retry_a_429_within_the_cap_and_when_the_call_wants_it() -> None:
    assert may_retry(rate_limited("60"), get(), 0, 2, 60.0)
    assert not may_retry(rate_limited("61"), get(), 0, 2, 60.0)  # beyond retry_after_cap
    assert not may_retry(rate_limited("1"), get(retry_rate_limited=False), 0, 2, 60.0)


def test_backoff_doubles_within_its_bounds_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(11))
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (9, 4.0)]:
        for _ in range(20):
            assert ceiling / 2 <= backoff(attempt) <= ceiling
    for _ in range(20):
        assert 0 <= backoff.jitter() <= 0.5


def twin(seed: int = 5) -> tuple[Backoff, Backoff]:
    """Two backoffs drawing the same numbers: one for the code, one for the expectation."""
    return Backoff(0.5, 8.0, random.Random(seed)), Backoff(0.5, 8.0, random.Random(seed))


def test_retry_delay_retries_a_dropped_connection_at_once_the_first_time_only() -> None:
    dropped = Outcome(Kind.NO_ANSWER, error=TransportError("x"), dropped=True)
    backoff, expected = twin()
    assert retry_delay(dropped, get(), 1, backoff) is None
    assert retry_delay(dropped, get(), 2, backoff) == expected(2)
    assert retry_delay(NO_ANSWER, get(), 1, backoff) == expected(1)


@pytest.mark.parametrize(
    "outcome",
    [NOT_SENT, NO_ANSWER, classify(get(), 200, b"<", _NO_HEADERS), classify(get(), 500, b"", {})],
    ids=["not-sent", "no-answer", "undecodable", "5xx"],
)
def test_retry_delay_backs_off(outcome: Outcome) -> None:
    backoff, expected = twin()
    assert [retry_delay(outcome, get(), n, backoff) for n in (1, 2, 3)] == [
        expected(1),
        expected(2),
        expected(3),
    ]


def test_retry_delay_after_a_429() -> None:
    limiter = MemoryBackend().limiter(
        "usage", shared=None, per_key=None, margin=0.0, clock=ManualClock()
    )
    backoff, expected = twin()
    # The limiter holds everyone back until Retry-After: only a little jitter is added.
    assert retry_delay(rate_limited("30"), get(limiter=limiter), 1, backoff) == expected.jitter()
    # Without a limiter the call waits Retry-After itself, or backs off without one.
    assert retry_delay(rate_limited("30"), get(), 1, backoff) == 30.0
    assert retry_delay(rate_limited("0"), get(), 1, backoff) == 0.0
    assert retry_delay(rate_limited(), get(), 2, backoff) == expected(2)


def test_outcome_unknown_says_what_happened_and_chains_it() -> None:
    req = post(outcome_hint=" See the order list.")
    server = classify(req, 502, b"", _NO_HEADERS)
    undecodable = classify(req, 200, b"<html>", _NO_HEADERS)
    for outcome, says in [
        (server, "POST /v2/orders: the provider answered HTTP 502; the write may or may not"),
        (undecodable, "answered HTTP 200 but the body could not be read; the write probably"),
        (NO_ANSWER, "may have reached the provider but no answer came back (timed out)"),
    ]:
        error = outcome_unknown(req, outcome)
        assert says in str(error) and str(error).endswith(" See the order list.")
        assert error.__cause__ is outcome.error


def test_final_error_is_outcome_unknown_only_for_a_write_that_may_have_happened() -> None:
    server = classify(get(), 503, b"", _NO_HEADERS)
    undecodable = classify(get(), 200, b"<html>", _NO_HEADERS)
    for outcome in (server, undecodable, NO_ANSWER):
        assert final_error(get(), outcome) is outcome.error
        assert isinstance(final_error(post(), outcome), OutcomeUnknownError)
    for outcome in (NOT_SENT, rate_limited("1"), classify(get(), 404, b"", _NO_HEADERS)):
        assert final_error(post(), outcome) is outcome.error


# ------------------------------------------------------------------ permits, auth and limits


async def test_an_unsent_attempt_gives_its_permit_back_and_a_sent_one_keeps_it(
    mocked: aioresponses,
) -> None:
    clock = ManualClock()
    limiter = EndpointLimiter(
        "usage", shared=Rate(1, 100.0), per_key=None, clock=clock, margin=0.0, stamp_sends=True
    )
    transport = Transport(BASE, clock=clock, stats=ClientStats(), max_retries=0)
    request = Request(
        "GET", "/v2/balance", msgspec.json.Decoder(), limiter=limiter, authenticated=False
    )
    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 443, True, True, None, None, None),
        OSError(111, "Connection refused"),
    )
    mocked.get(f"{BASE}/v2/balance", exception=refused)
    mocked.get(f"{BASE}/v2/balance", payload={"balance": 1})
    with pytest.raises(TransportError, match="cannot connect"):
        await transport.request(request)
    assert await transport.request(request) == {"balance": 1}
    assert clock.now() == 0.0  # the refused attempt's permit was free again at once
    await limiter.acquire()
    assert clock.now() >= 100.0  # a sent permit stays counted: the next one waited a window
    await limiter.aclose()
    await transport.aclose()


class TokenStub:
    """A token source handing out tok-1, tok-2... and remembering what was refused."""

    def __init__(self) -> None:
        self.issued = 0
        self.current: str | None = None
        self.refused: list[str] = []

    async def get(self) -> str:
        if self.current is None:
            self.issued += 1
            self.current = f"tok-{self.issued}"
        return self.current

    def invalidate(self, token: str) -> None:
        self.refused.append(token)
        if self.current == token:
            self.current = None


class CountingLimiter:
    """A limiter that admits everything and counts admissions."""

    def __init__(self) -> None:
        self.admitted: list[str | None] = []

    async def acquire(
        self, key: str | None = None, priority: Priority = Priority.INTERACTIVE
    ) -> Slot | None:
        self.admitted.append(key)
        return None

    def penalize(
        self,
        retry_after: float | None,
        limit: int | None = None,
        *,
        key: str | None = None,
        waitable: bool = True,
    ) -> None:
        pass

    def record_headers(self, headers: Mapping[str, str]) -> None:
        pass

    def state(self) -> LimiterState:
        return LimiterState("counting", None, None, None, 0.0, 0.0, 0, 0)

    async def aclose(self) -> None:
        pass


BALANCE_URL = f"{BASE}/v2/balance"


async def test_auth_given_at_construction_is_used_and_refreshed_once(
    mocked: aioresponses,
) -> None:
    tokens = TokenStub()
    transport = Transport(BASE, clock=ManualClock(), stats=ClientStats(), auth=tokens)
    mocked.post(POST_URL, status=401, payload={"message": "Unauthenticated."})
    mocked.post(POST_URL, payload={"data": {"id": 3}})
    try:
        # A refused token is refreshed and the request retried once, a write too.
        assert await transport.request(post()) == {"data": {"id": 3}}
    finally:
        await transport.aclose()
    sent = [c.kwargs["headers"]["Authorization"] for c in calls(mocked, "POST", POST_URL)]
    assert sent == ["Bearer tok-1", "Bearer tok-2"]
    assert tokens.refused == ["tok-1"]


async def test_transport_without_auth_sends_only_unauthenticated_requests(
    mocked: aioresponses,
) -> None:
    clock = ManualClock()
    limiter = EndpointLimiter(
        "x", shared=Rate(1, 100.0), per_key=None, clock=clock, margin=0.0, stamp_sends=True
    )
    transport = Transport(BASE, clock=clock, stats=ClientStats())
    mocked.get(BALANCE_URL, payload={"data": 1})
    try:
        with pytest.raises(EsimError, match="no token manager"):
            await transport.request(get(limiter=limiter))
        assert not mocked.requests
        assert await transport.request(get(limiter=limiter, authenticated=False)) == {"data": 1}
    finally:
        await transport.aclose()
    assert clock.now() == 0.0  # the refused request gave its permit back
    sent = calls(mocked, "GET", BALANCE_URL)[0].kwargs["headers"]
    assert "Authorization" not in sent
    await limiter.aclose()


async def test_account_limiter_given_at_construction_holds_every_request(
    mocked: aioresponses,
) -> None:
    account, own = CountingLimiter(), CountingLimiter()
    transport = Transport(
        BASE, clock=ManualClock(), stats=ClientStats(), auth=TokenStub(), account_limiter=account
    )
    mocked.get(BALANCE_URL, status=500, body=b"")
    mocked.get(BALANCE_URL, payload={"data": 1}, repeat=True)
    try:
        assert await transport.request(get()) == {"data": 1}  # one retry: two admissions
        await transport.request(get(account_limiter=own))  # a request's own account limit wins
    finally:
        await transport.aclose()
    assert account.admitted == [None, None]
    assert own.admitted == [None]


async def test_a_dropped_connection_is_retried_at_once_then_with_backoff(
    mocked: aioresponses,
) -> None:
    clock = ManualClock()
    transport = Transport(BASE, clock=clock, stats=ClientStats(), auth=TokenStub())
    mocked.get(BALANCE_URL, exception=aiohttp.ServerDisconnectedError())
    mocked.get(BALANCE_URL, payload={"data": 1})
    mocked.get(BALANCE_URL, exception=aiohttp.ServerDisconnectedError())
    mocked.get(BALANCE_URL, exception=aiohttp.ServerDisconnectedError())
    mocked.get(BALANCE_URL, payload={"data": 2})
    try:
        assert await transport.request(get()) == {"data": 1}
        assert clock.sleeps == []  # the first retry of a dropped connection waits for nothing
        assert await transport.request(get()) == {"data": 2}
        assert len(clock.sleeps) == 1  # the second one backs off
    finally:
        await transport.aclose()
    assert transport.stats.retries == 3


async def test_a_429_without_a_limiter_waits_out_retry_after_itself(
    mocked: aioresponses,
) -> None:
    clock = ManualClock()
    stats = ClientStats()
    transport = Transport(BASE, clock=clock, stats=stats, auth=TokenStub())
    mocked.post(POST_URL, status=429, payload={}, headers={"Retry-After": "2"})
    mocked.post(POST_URL, payload={"data": {"id": 4}})
    try:
        assert await transport.request(post()) == {"data": {"id": 4}}
    finally:
        await transport.aclose()
    assert clock.sleeps == [2.0]
    assert stats.rate_limited == 1 and stats.retries == 1

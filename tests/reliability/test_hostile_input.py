"""Property tests on hostile input: arbitrary response bodies and statuses never raise anything
but a typed error; ICCIDs never alter the request URL."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from esim_async import AiraloClient, ApiError, InvalidIccidError, ManualClock, TransportError
from esim_async.models import Envelope, Usage, UsageStatus
from esim_async.transport import Request

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(msgspec.json.encode),
    st.fixed_dictionaries({"data": json_values}).map(msgspec.json.encode),
    st.fixed_dictionaries(
        {
            "data": st.dictionaries(
                st.sampled_from(
                    [
                        "remaining",
                        "total",
                        "status",
                        "expired_at",
                        "is_unlimited",
                        "remaining_voice",
                    ]
                ),
                json_values,
            )
        }
    ).map(msgspec.json.encode),
)
statuses = st.sampled_from(
    [200, 201, 204, 301, 400, 401, 403, 404, 409, 418, 422, 429, 500, 502, 503]
)


def run_once(status: int, body: bytes, retry_after: str | None) -> Any:
    async def main() -> Any:
        client = AiraloClient(
            "id", "secret", clock=ManualClock(), max_retries=1, retry_after_cap=1.0
        )
        headers: CIMultiDict[str] = CIMultiDict()
        if retry_after is not None:
            headers["Retry-After"] = retry_after

        async def fake_send(req: Any, hdrs: Any, slots: Any = ()) -> Any:
            return status, body, CIMultiDictProxy(headers)

        client._transport._send = fake_send  # type: ignore[method-assign]
        client._auth._token = "tok"
        client._auth._valid_until = 1e18
        try:
            return await client._transport.request(
                Request(
                    "GET",
                    "/v2/sims/8944000000000000001/usage",
                    msgspec.json.Decoder(Envelope[Usage], strict=False),
                )
            )
        finally:
            await client.aclose()

    return asyncio.run(main())


@settings(max_examples=150, deadline=None)
@given(
    status=statuses,
    body=bodies,
    retry_after=st.none()
    | st.sampled_from(
        ["inf", "NaN", "-5", "1e400", "0.01", "Wed, 21 Oct 2015 07:28:00 GMT", "soon"]
    ),
)
def test_any_response_is_a_model_or_a_typed_error(
    status: int, body: bytes, retry_after: str | None
) -> None:
    try:
        result = run_once(status, body, retry_after)
    except (TransportError, ApiError):
        return
    assert isinstance(result, Envelope)
    usage = result.data
    assert isinstance(usage, Usage)
    # An answer that says nothing is an error, never an all-None usage.
    figures = (usage.raw_remaining, usage.raw_total, usage.expired_at, usage.is_unlimited)
    figures += (usage.remaining_voice, usage.remaining_text, usage.total_voice, usage.total_text)
    assert usage.status is not UsageStatus.UNKNOWN or any(f is not None for f in figures)


@settings(max_examples=300)
@given(st.text(max_size=40) | st.text(alphabet="0123456789/%?#. \\\n", max_size=30))
def test_iccids_never_alter_the_url(value: str) -> None:
    client = AiraloClient("id", "secret")
    try:
        client._context.validate_iccid(value)
    except InvalidIccidError:
        return
    url = URL(client.base_url + client._context.path("usage", iccid=value))
    assert url.path == f"/v2/sims/{value}/usage"
    assert url.query_string == "" and url.fragment == ""
    assert url.host == "partners-api.airalo.com"

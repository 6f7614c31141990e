"""Decoding usage: tolerant of unknown fields, unknown statuses and numbers as strings."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from esim_async import Usage, UsageStatus
from esim_async.models import Envelope

decoder = msgspec.json.Decoder(Envelope[Usage], strict=False)


def test_documented_example(payload) -> None:
    usage = decoder.decode(payload("airalo/usage_200.json")).data
    assert usage.status is UsageStatus.ACTIVE
    assert usage.expired_at == datetime(2022, 1, 1, tzinfo=UTC)
    # The documented example says unlimited, so its 767/2048 must be ignored...
    assert usage.is_unlimited is True
    assert usage.remaining is None and usage.total is None and usage.used is None
    assert usage.fraction_left is None and not usage.is_low()
    # ...but the raw figures stay reachable.
    assert (usage.raw_remaining, usage.raw_total) == (767, 2048)


def test_recycled_is_a_normal_answer(payload) -> None:
    usage = decoder.decode(payload("airalo/usage_200_recycled.json")).data
    assert usage.status is UsageStatus.RECYCLED and usage.is_recycled
    assert usage.expired_at is None and usage.is_unlimited is None
    assert usage.remaining == 0 and usage.fraction_left is None


def test_unlimited(payload) -> None:
    usage = decoder.decode(payload("airalo/usage_200_unlimited.SYNTHESIZED.json")).data
    assert usage.remaining is None and usage.raw_remaining == 0


def test_limited_helpers() -> None:
    usage = decoder.decode(
        b'{"data": {"remaining": "100", "total": "1024", "status": "ACTIVE",'
        b' "is_unlimited": false, "expired_at": "2026-05-01 10:00:00"}}'
    ).data
    assert usage.remaining == 100 and usage.total == 1024 and usage.used == 924
    assert usage.fraction_left == pytest.approx(100 / 1024)
    assert usage.is_low(fraction=0.1) and not usage.is_low(fraction=0.05)
    assert usage.is_low(fraction=0.0, mb=100)


def test_unknown_status_and_fields_are_kept_or_ignored() -> None:
    usage = decoder.decode(
        b'{"data": {"remaining": 1, "total": 2, "status": "SUSPENDED_NEW", "extra": {"a": 1}},'
        b' "meta": {"message": "api.succes", "other": 1}, "links": null}'
    ).data
    assert usage.status == "SUSPENDED_NEW"
    assert usage.status.value == "SUSPENDED_NEW" and not usage.status.is_known
    assert UsageStatus.ACTIVE.is_known
    assert msgspec.json.decode(msgspec.json.encode(usage))["status"] == "SUSPENDED_NEW"


def test_offsets_are_normalised_to_utc() -> None:
    usage = decoder.decode(b'{"data": {"expired_at": "2026-01-01T02:00:00+02:00"}}').data
    assert usage.expired_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert usage.expired_at.tzinfo is UTC


def test_round_trip_uses_the_api_field_names() -> None:
    usage = Usage(raw_remaining=5, raw_total=10, is_unlimited=False)
    encoded = msgspec.json.decode(msgspec.json.encode(usage))
    assert encoded["remaining"] == 5 and encoded["total"] == 10
    assert "raw_remaining" not in encoded


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": {"remaining": "lots"}}',
        b'{"data": []}',
        b'{"nodata": 1}',
        b"<html>",
        b'{"data": {"expired_at": "yesterday"}}',
    ],
)
def test_malformed_bodies_fail_to_decode(body: bytes) -> None:
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        decoder.decode(body)

"""The envelope every provider answer comes in, handled in one place, and shared pieces."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import msgspec

T = TypeVar("T")

__all__ = ["Envelope", "Meta", "Model", "Pricing", "utc"]


class Model(msgspec.Struct, kw_only=True, omit_defaults=False):
    """Base of every response model: unknown fields are ignored when decoding."""


def utc(value: datetime | None) -> datetime | None:
    """A naive API timestamp read as UTC; an aware one converted to UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def to_utc(obj: Any, *names: str) -> None:
    """Normalise the named ``datetime`` fields of ``obj`` to UTC in place."""
    for name in names:
        value = getattr(obj, name)
        if value is not None:
            setattr(obj, name, utc(value))


class Meta(Model):
    """``meta`` of a response. ``message`` is not stable text ("success", "api.succes"...).

    Paginated lists add ``current_page``, ``last_page``, ``per_page`` (sent as a string),
    ``total``, ``from``/``to`` and ``path``.
    """

    message: str | None = None
    current_page: int | None = None
    last_page: int | None = None
    per_page: int | None = None
    total: int | None = None
    from_: int | None = msgspec.field(default=None, name="from")
    to: int | None = None
    path: str | None = None


class Pricing(Model):
    """The ``pricing`` block: ``model`` is ``net_pricing`` or ``discount_pricing``."""

    model: str | None = None
    discount_percentage: float | None = None


class Envelope(msgspec.Struct, Generic[T]):
    """``{"data": ..., "meta": {...}}``; ``meta`` and ``pricing`` may be missing."""

    data: T
    meta: Meta | None = None
    pricing: Pricing | None = None

"""The envelope every provider answer comes in, handled in one place, and shared pieces."""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import msgspec

T = TypeVar("T")

__all__ = ["Envelope", "Meta", "Model", "Pricing", "lenient", "utc"]


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
        setattr(obj, name, utc(getattr(obj, name)))


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


#: How deep :func:`lenient` walks nested models before giving up on a value.
_LENIENT_DEPTH = 16
#: What :func:`_fit` answers for a value that no reading of its field's type accepts.
_UNFIT: Any = object()


def lenient(value: Any, tp: type[T]) -> T:
    """``value`` (decoded JSON) as the model ``tp``, reading what fits and leaving the rest.

    Converted as msgspec does (``strict=False``) when that works. Otherwise field by field: a
    number where text is expected reads as its text, a nested model or a list of them is read
    the same way (items that fit nothing are left out), and any other field that fits nothing
    keeps its default (an empty list or map sent for an absent object, say).

    Raises:
        msgspec.ValidationError: ``value`` is not an object, or a required field is missing or
            fits nothing.
    """
    result: T = _fit(value, tp, 0)
    if result is _UNFIT:
        return msgspec.convert(value, tp, strict=False)  # raises the precise error
    return result


def _fit(value: Any, tp: Any, depth: int) -> Any:
    """``value`` read as ``tp`` as :func:`lenient` does, or :data:`_UNFIT`."""
    try:
        return msgspec.convert(value, tp, strict=False)
    except msgspec.ValidationError:
        if depth >= _LENIENT_DEPTH:
            return _UNFIT
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        options = (option for option in typing.get_args(tp) if option is not type(None))
        fits = (_fit(value, option, depth + 1) for option in options)
        return next((fit for fit in fits if fit is not _UNFIT), _UNFIT)
    if origin is list and isinstance(value, list):
        (item_type,) = typing.get_args(tp) or (Any,)
        fits = (_fit(item, item_type, depth + 1) for item in value)
        return [fit for fit in fits if fit is not _UNFIT]
    if tp is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct) and isinstance(value, dict):
        kept = {
            field.name: _fit(value[field.encode_name], field.type, depth + 1)
            for field in msgspec.structs.fields(tp)
            if field.encode_name in value
        }
        try:
            return tp(**{name: fit for name, fit in kept.items() if fit is not _UNFIT})
        except TypeError:  # a required field is missing or fits nothing
            return _UNFIT
    return _UNFIT

"""PressOne's voice-only eSIM API: typed views over raw JSON (its shapes are unpublished)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

from ._base import Model, lenient

__all__ = ["VoiceList", "VoiceNumber", "VoiceResult", "VoiceUser"]

T = TypeVar("T")


class VoiceNumber(Model):
    """An available number (typed view; unknown fields stay in the raw item)."""

    phone_number: str | None = None
    country_code: str | None = None


class VoiceUser(Model):
    """A user who signed up through the partner; ``subscription`` is kept as sent."""

    id: int | str | None = None
    email: str | None = None
    mobile: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone_number: str | None = None
    subscription: dict[str, Any] | None = None


@dataclass(slots=True)
class VoiceResult:
    """The decoded JSON answer of a voice call (``raw``), with ``data`` when wrapped.

    ``raw`` is ``None`` when a write was answered 2xx without a body (204 No Content). A
    secret the answer echoes (the API key) reads as ``***``.
    """

    raw: Any

    @property
    def data(self) -> Any:
        if isinstance(self.raw, dict) and "data" in self.raw:
            return self.raw["data"]
        return self.raw

    @property
    def message(self) -> str | None:
        if isinstance(self.raw, dict):
            value = self.raw.get("message") or self.raw.get("detail")
            return str(value) if value is not None else None
        return None


@dataclass(slots=True)
class VoiceList(Generic[T]):
    """A list answer: typed ``items``, the ``raw`` JSON, and ``total`` when the API says (a
    whole number from 0, also sent as text; beside the list or around it)."""

    items: list[T]
    raw: Any
    total: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


#: Where a voice answer may hold its list, in the order looked at.
_LIST_KEYS = ("data", "results", "items", "numbers", "users")
#: Where it may hold the total count of the list.
_TOTAL_KEYS = ("total", "count")
#: How deep objects are looked into for the list.
_MAX_NESTING = 8


def _search(value: Any, depth: int) -> tuple[list[Any], list[dict[str, Any]]] | None:
    """The list inside the object ``value`` and the objects on the way to it (outermost
    first); ``None`` when there is none. A nested list with items wins over an empty one."""
    if not isinstance(value, dict) or depth > _MAX_NESTING:
        return None
    empty: tuple[list[Any], list[dict[str, Any]]] | None = None
    for key in _LIST_KEYS:
        inner = value.get(key)
        if isinstance(inner, list):
            return inner, [value]
        found = _search(inner, depth + 1)
        if found is not None:
            if found[0]:
                return found[0], [value, *found[1]]
            empty = empty or (found[0], [value, *found[1]])
    return empty


def _locate(raw: Any) -> tuple[list[Any], list[dict[str, Any]]]:
    if isinstance(raw, list):
        return raw, []
    return _search(raw, 0) or ([], [raw] if isinstance(raw, dict) else [])


def items_of(raw: Any, item_fields: Collection[str] = ()) -> list[Any]:
    """The list inside a voice answer: the answer itself, or its ``data``/``results``/
    ``items``/``numbers``/``users``, also when wrapped in another object (``{"data":
    {"results": [...]}}``).

    With ``item_fields``, an answer holding no list but one object with any of those keys (in
    ``data``, or the answer itself) is read as a list of that one item.
    """
    items = _locate(raw)[0]
    if items or _search(raw, 0) is not None or not item_fields:
        return items
    for candidate in (raw.get("data") if isinstance(raw, dict) else None, raw):
        if isinstance(candidate, dict) and any(name in candidate for name in item_fields):
            return [candidate]
    return []


def _count(value: Any) -> int | None:
    """A count as the API may send it: a whole number from 0, or its text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        value = int(value.strip())
    if isinstance(value, int) and value >= 0:
        return value
    return None


def total_of(raw: Any) -> int | None:
    """The total count a voice list answer gives (``total`` or ``count``), read beside the
    list first, then in the objects around it; ``None`` when it gives none that is a count
    (a flag, a negative number or other text is not one)."""
    for container in reversed(_locate(raw)[1]):
        for key in _TOTAL_KEYS:
            count = _count(container.get(key))
            if count is not None:
                return count
    return None


def fields_of(tp: type[msgspec.Struct]) -> tuple[str, ...]:
    """The JSON names of the fields of the typed view ``tp``."""
    return tuple(f.encode_name for f in msgspec.structs.fields(tp))


def convert(items: list[Any], tp: type[T], *, bare: str | None = None) -> list[T]:
    """The typed views of the JSON objects among ``items``, read leniently: a phone number
    sent as a JSON number reads as its text, and a field of another unexpected type is left
    at its default (the raw JSON keeps it). With ``bare``, an item sent as bare text or a
    whole number reads as the object ``{bare: item}``."""
    out: list[T] = []
    for item in items:
        if bare is not None and (
            isinstance(item, str) or (isinstance(item, int) and not isinstance(item, bool))
        ):
            item = {bare: item}
        if isinstance(item, dict):
            out.append(lenient(item, tp))
    return out

"""PressOne's voice-only eSIM API: typed views over raw JSON (its shapes are unpublished)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

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
    """The decoded JSON answer of a voice call (``raw``), with ``data`` when wrapped."""

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
    """A list answer: typed ``items``, the ``raw`` JSON, and ``total`` when the API says."""

    items: list[T]
    raw: Any
    total: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def items_of(raw: Any) -> list[Any]:
    """The list inside a voice answer: the answer itself, or its ``data``/``results``."""
    if isinstance(raw, list):
        return raw
    if isinstance(raw, dict):
        for key in ("data", "results", "items", "numbers", "users"):
            value = raw.get(key)
            if isinstance(value, list):
                return value
            if isinstance(value, dict):
                inner = items_of(value)
                if inner:
                    return inner
    return []


def total_of(raw: Any) -> int | None:
    if isinstance(raw, dict):
        for key in ("total", "count"):
            value = raw.get(key)
            if isinstance(value, int):
                return value
    return None


def convert(items: list[Any], tp: type[T]) -> list[T]:
    """The typed views of the JSON objects among ``items``, read leniently: a phone number
    sent as a JSON number reads as its text, and a field of another unexpected type is left
    at its default (the raw JSON keeps it)."""
    return [lenient(item, tp) for item in items if isinstance(item, dict)]

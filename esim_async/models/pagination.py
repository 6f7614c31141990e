"""One page of a paginated list, with its metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ._base import Meta, Pricing

__all__ = ["Page"]

T = TypeVar("T")


@dataclass(slots=True)
class Page(Generic[T]):
    """``items`` of page ``number`` out of ``last_page`` (``meta`` holds the rest)."""

    items: list[T]
    number: int
    last_page: int
    meta: Meta = field(default_factory=Meta)
    #: The ``pricing`` block (catalogue pages), when the response has one.
    pricing: Pricing | None = None

    @property
    def has_next(self) -> bool:
        return self.number < self.last_page

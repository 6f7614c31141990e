"""The envelope every provider answer comes in, handled in one place."""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

T = TypeVar("T")

__all__ = ["Envelope", "Meta", "Model"]


class Model(msgspec.Struct, kw_only=True, omit_defaults=False):
    """Base of every response model: unknown fields are ignored when decoding."""


class Meta(Model):
    """``meta`` of a response. ``message`` is not stable text ("success", "api.succes"...)."""

    message: str | None = None


class Envelope(msgspec.Struct, Generic[T]):
    """``{"data": ..., "meta": {...}}``; ``meta`` may be missing."""

    data: T
    meta: Meta | None = None

"""Typed response models (msgspec Structs)."""

from ._base import Envelope, Meta, Model
from .auth import Token
from .usage import Usage, UsageStatus

__all__ = ["Envelope", "Meta", "Model", "Token", "Usage", "UsageStatus"]

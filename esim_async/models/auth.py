"""The token endpoint's answer."""

from __future__ import annotations

from ._base import Model

__all__ = ["Token"]


class Token(Model):
    """``POST /token`` data. ``access_token`` is a secret: it is never shown in ``repr``."""

    access_token: str
    expires_in: float | None = None
    token_type: str = "Bearer"  # noqa: S105 - a scheme name, not a secret

    def __repr__(self) -> str:
        return f"Token(token_type={self.token_type!r}, expires_in={self.expires_in!r})"

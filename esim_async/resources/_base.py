"""What every resource namespace shares: a handle on its client's pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..client import BaseClient

__all__ = ["Resource"]


class Resource:
    """A namespace of endpoints (``client.sims``, ``client.packages``...)."""

    __slots__ = ("_client",)

    def __init__(self, client: BaseClient) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._client!r}>"

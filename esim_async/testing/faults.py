"""Faults the emulator injects: random ones on usage requests, queued ones on any endpoint."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Literal

__all__ = ["FaultKind", "FaultPlan", "Faults"]

FaultKind = Literal["500", "502", "503", "html", "drop", "slow", "429", "401"]


@dataclass
class Faults:
    """Random faults, each a probability per usage request (seeded, so runs repeat)."""

    server_error: float = 0.0
    html: float = 0.0
    drop: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 2.0
    seed: int = 0


class FaultPlan:
    """Which fault, if any, the next request to an endpoint meets.

    Queued faults (:meth:`queue`) come first, in order; then, for usage requests only, one
    seeded draw against the probabilities of the :class:`Faults` read at that moment.
    """

    __slots__ = ("_queued", "_rng")

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._queued: dict[str, deque[FaultKind]] = {}

    def queue(self, endpoint: str, kinds: tuple[FaultKind, ...]) -> None:
        """Serve ``kinds`` to the next requests to ``endpoint``, one each."""
        self._queued.setdefault(endpoint, deque()).extend(kinds)

    def next(self, endpoint: str, faults: Faults) -> FaultKind | None:
        """The fault the request now arriving at ``endpoint`` meets (``None``: none)."""
        queued = self._queued.get(endpoint)
        if queued:
            return queued.popleft()
        if endpoint != "usage":
            return None
        roll = self._rng.random()
        drawn: tuple[tuple[FaultKind, float], ...] = (
            ("500", faults.server_error),
            ("html", faults.html),
            ("drop", faults.drop),
            ("slow", faults.slow),
        )
        for kind, p in drawn:
            if roll < p:
                return kind
            roll -= p
        return None

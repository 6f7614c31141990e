"""Counters a client keeps about its own traffic (``client.stats``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["ClientStats"]


@dataclass(slots=True)
class ClientStats:
    """Running totals for one client.

    Attributes:
        requests: logical API calls that reached the transport (cache hits excluded).
        attempts: HTTP attempts the pipeline sent (first tries + retries).
        resends: requests the HTTP library re-sent on its own after a pooled connection dropped
            (each one also took a rate-limit permit).
        retries: attempts after the first one.
        cache_hits: answers served from the usage cache.
        negative_cache_hits: 404s answered from the negative cache.
        coalesced: calls that joined an identical request already in flight.
        rate_limited: 429 responses received.
        token_requests: token requests made.
        limit_wait: seconds spent waiting for rate-limit budget, summed over callers.
    """

    requests: int = 0
    attempts: int = 0
    resends: int = 0
    retries: int = 0
    cache_hits: int = 0
    negative_cache_hits: int = 0
    coalesced: int = 0
    rate_limited: int = 0
    token_requests: int = 0
    limit_wait: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

"""Provider profiles as data: base URL, path prefix, paths, limits and TTLs.

The providers differ only here; every endpoint runs through the same pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from . import _constants as C
from .limits import Rate

__all__ = ["AIRALO", "PRESSONE", "ProviderProfile"]


@dataclass(frozen=True, slots=True)
class ProviderProfile:
    """What distinguishes one provider dialect from another.

    Attributes:
        name: short provider name, used in cache and limiter namespaces.
        base_url: scheme + host (``None`` when the provider publishes none).
        prefix: the version prefix every path starts with (``/v2``, ``/customer/v2``).
        paths: endpoint name -> path template relative to ``prefix``; a template starting with
            ``//`` is taken as an absolute path (e.g. ``//cusomter/v2/sims/{iccid}/usage``).
        iccid_rate, company_rate, token_rate: default limits (``None``: not limited).
        cache_ttl: how long the server caches usage, mirrored by the client.
    """

    name: str
    base_url: str | None
    prefix: str
    iccid_rate: Rate | None
    company_rate: Rate | None
    token_rate: Rate | None
    cache_ttl: float = C.DEFAULT_CACHE_TTL
    paths: dict[str, str] = field(
        default_factory=lambda: {"token": "/token", "usage": "/sims/{iccid}/usage"}
    )

    def path(self, endpoint: str) -> str:
        """The full path template of ``endpoint`` (prefix included)."""
        template = self.paths[endpoint]
        if template.startswith("//"):
            return template[1:]
        return self.prefix + template

    def with_paths(self, **paths: str) -> ProviderProfile:
        return replace(self, paths={**self.paths, **paths})


#: Airalo Partner API v2.
AIRALO = ProviderProfile(
    name="airalo",
    base_url="https://partners-api.airalo.com",
    prefix="/v2",
    iccid_rate=Rate(10, 60.0),
    company_rate=Rate(5, 1.0),
    token_rate=Rate(3, 60.0),
)

#: PressOne data eSIM API (mirrors Airalo's under ``/customer/v2``). PressOne publishes no host.
PRESSONE = ProviderProfile(
    name="pressone",
    base_url=None,
    prefix="/customer/v2",
    iccid_rate=Rate(100, 60.0),
    company_rate=None,
    token_rate=Rate(3, 60.0),
)

"""Provider profiles as data: base URL, path prefix, paths, limits and TTLs.

The providers differ only here; every endpoint runs through the same pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from . import _constants as C
from .limits import Rate

__all__ = ["AIRALO", "PRESSONE", "EndpointLimit", "ProviderProfile"]


@dataclass(frozen=True, slots=True)
class EndpointLimit:
    """The limit of one endpoint: over all its requests, per key, or both.

    Attributes:
        shared: at most this many requests of the endpoint per window, whatever they ask for
            (per company, per token or per IP, as the provider counts them).
        per_key: at most this many per window for each key (an ICCID, a package), when the
            endpoint's requests carry one.

    ``EndpointLimit()`` is no limit at all. The usage endpoint of Airalo, for instance::

        EndpointLimit(shared=Rate(5, 1.0), per_key=Rate(10, 60.0))
    """

    shared: Rate | None = None
    per_key: Rate | None = None

    @property
    def limited(self) -> bool:
        """Whether any limit applies."""
        return self.shared is not None or self.per_key is not None


#: Endpoint name -> path template relative to the prefix.
DEFAULT_PATHS: dict[str, str] = {
    "token": "/token",
    "usage": "/sims/{iccid}/usage",
    "packages": "/packages",
    "product_information": "/packages/{slug}/product-information",
    "orders": "/orders",
    "orders_async": "/orders-async",
    "order": "/orders/{order_id}",
    "topup_order": "/orders/topups",
    "sims": "/sims",
    "sim": "/sims/{iccid}",
    "sim_topups": "/sims/{iccid}/topups",
    "package_history": "/sims/{iccid}/packages",
    "instructions": "/sims/{iccid}/instructions",
    "brand": "/sims/{iccid}/brand",
    "future_orders": "/future-orders",
    "cancel_future_orders": "/cancel-future-orders",
    "voucher_esim": "/voucher/esim",
    "voucher_airmoney": "/voucher/airmoney",
    "refund": "/refund",
    "notifications_opt_in": "/notifications/opt-in",
    "notifications_opt_out": "/notifications/opt-out",
    "simulator": "/simulator/webhook",
    "balance": "/balance",
    "exchange_rates": "/finance/exchange-rates",
    "compatible_devices": "/compatible-devices-lite",
    # PressOne's voice API has its own host and paths (client.voice); its limiter lives here.
    "voice": "/",
}


@dataclass(frozen=True, slots=True)
class ProviderProfile:
    """What distinguishes one provider dialect from another.

    Attributes:
        name: short provider name, used in cache and limiter namespaces.
        base_url: scheme + host (``None`` when the provider publishes none).
        prefix: the version prefix every path starts with (``/v2``, ``/customer/v2``).
        paths: endpoint name -> path template relative to ``prefix``; a template starting with
            ``//`` is taken as an absolute path (e.g. ``//cusomter/v2/sims/{iccid}/usage``).
        limits: endpoint name -> its default limit (an endpoint not listed has none).
        cache_ttl: how long the server caches usage, mirrored by the client.
        package_history_ttl: how long package history is cached.
        write_format: how order and top-up bodies are sent (``json`` or ``form``).
        sandbox_rate: the account-wide limit of sandbox mode.
    """

    name: str
    base_url: str | None
    prefix: str
    limits: Mapping[str, EndpointLimit] = field(default_factory=dict)
    cache_ttl: float = C.DEFAULT_CACHE_TTL
    package_history_ttl: float = 900.0
    write_format: Literal["json", "form"] = "json"
    sandbox_rate: Rate | None = None
    paths: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PATHS))

    def path(self, endpoint: str) -> str:
        """The full path template of ``endpoint`` (prefix included)."""
        template = self.paths[endpoint]
        return template[1:] if template.startswith("//") else self.prefix + template

    def with_paths(self, **paths: str) -> ProviderProfile:
        return replace(self, paths={**self.paths, **paths})


#: Airalo Partner API v2 (limits: the stricter figure where the docs conflict).
AIRALO = ProviderProfile(
    name="airalo",
    base_url="https://partners-api.airalo.com",
    prefix="/v2",
    limits={
        "usage": EndpointLimit(shared=Rate(5, 1.0), per_key=Rate(10, 60.0)),  # company, ICCID
        "token": EndpointLimit(shared=Rate(3, 60.0)),
        "packages": EndpointLimit(shared=Rate(80, 60.0)),  # per token
        "product_information": EndpointLimit(per_key=Rate(60, 60.0)),  # per package
        "package_history": EndpointLimit(per_key=Rate(10, 60.0)),  # per ICCID
        # The rate-limits page's stricter figures (the endpoint pages say 5 per minute).
        "refund": EndpointLimit(shared=Rate(1, 300.0)),  # per IP
        "simulator": EndpointLimit(shared=Rate(1, 900.0)),  # per IP
    },
    sandbox_rate=Rate(50, 60.0),
)

#: PressOne data eSIM API (mirrors Airalo's under ``/customer/v2``). PressOne publishes no host.
PRESSONE = ProviderProfile(
    name="pressone",
    base_url=None,
    prefix="/customer/v2",
    limits={
        "usage": EndpointLimit(per_key=Rate(100, 60.0)),  # no company limit published
        "token": EndpointLimit(shared=Rate(3, 60.0)),
        "package_history": EndpointLimit(per_key=Rate(1, 900.0)),  # 1 per 15 minutes per eSIM
    },
    write_format="form",
)

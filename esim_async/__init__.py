"""esim_async: an asyncio client for the Airalo Partner API v2 and PressOne's eSIM APIs.

Typed models, client-side rate limits that never trip a 429, a TTL cache mirroring the server's,
single flight for duplicate calls, and fleet-wide usage sweeps.

>>> from esim_async import AiraloClient, Rate
"""

from ._version import __version__
from .client import AiraloClient, BaseClient, ClientOptions, PressOneClient
from .clock import Clock, LoopClock, ManualClock, MonotonicClock
from .config import ClientConfig
from .errors import (
    ApiError,
    AuthenticationError,
    BusinessError,
    EndpointNotFoundError,
    EsimError,
    InvalidIccidError,
    InvalidRequestError,
    NotFoundError,
    OutcomeUnknownError,
    RateLimitedError,
    ServerError,
    TransportError,
    ValidationError,
    WaitTimeoutError,
)
from .limits import LimiterClosedError, LimiterState, Priority, Rate
from .models import (
    AsyncOrder,
    Country,
    Esim,
    Instructions,
    Operator,
    Order,
    Package,
    PackageHistoryEntry,
    Page,
    ProductInformation,
    Token,
    TopupPackage,
    Usage,
    UsageStatus,
)
from .providers import AIRALO, PRESSONE, EndpointLimit, ProviderProfile
from .stats import ClientStats
from .sweep import SweepProgress, SweepSummary, UsageResult, UsageSweep

__all__ = [
    "AIRALO",
    "PRESSONE",
    "AiraloClient",
    "ApiError",
    "AsyncOrder",
    "AuthenticationError",
    "BaseClient",
    "BusinessError",
    "ClientConfig",
    "ClientOptions",
    "ClientStats",
    "Clock",
    "Country",
    "EndpointLimit",
    "EndpointNotFoundError",
    "Esim",
    "EsimError",
    "Instructions",
    "InvalidIccidError",
    "InvalidRequestError",
    "LimiterClosedError",
    "LimiterState",
    "LoopClock",
    "ManualClock",
    "MonotonicClock",
    "NotFoundError",
    "Operator",
    "Order",
    "OutcomeUnknownError",
    "Package",
    "PackageHistoryEntry",
    "Page",
    "PressOneClient",
    "Priority",
    "ProductInformation",
    "ProviderProfile",
    "Rate",
    "RateLimitedError",
    "ServerError",
    "SweepProgress",
    "SweepSummary",
    "Token",
    "TopupPackage",
    "TransportError",
    "Usage",
    "UsageResult",
    "UsageStatus",
    "UsageSweep",
    "ValidationError",
    "WaitTimeoutError",
    "__version__",
]

"""esim_async: an asyncio client for the Airalo Partner API v2 and PressOne's eSIM APIs.

Typed models, client-side rate limits that never trip a 429, a TTL cache mirroring the server's,
single flight for duplicate calls, and fleet-wide usage sweeps.

>>> from esim_async import AiraloClient, Rate
"""

from ._version import __version__
from .client import AiraloClient, BaseClient, ClientOptions, PressOneClient
from .clock import Clock, LoopClock, ManualClock, MonotonicClock
from .errors import (
    ApiError,
    AuthenticationError,
    BusinessError,
    EsimError,
    InvalidIccidError,
    InvalidRequestError,
    NotFoundError,
    OutcomeUnknownError,
    RateLimitedError,
    ServerError,
    TransportError,
    ValidationError,
)
from .limits import LimiterClosedError, LimiterState, Priority, Rate
from .models import Token, Usage, UsageStatus
from .providers import AIRALO, PRESSONE, ProviderProfile
from .stats import ClientStats
from .sweep import SweepProgress, SweepSummary, UsageResult, UsageSweep

__all__ = [
    "AIRALO",
    "PRESSONE",
    "AiraloClient",
    "ApiError",
    "AuthenticationError",
    "BaseClient",
    "BusinessError",
    "ClientOptions",
    "ClientStats",
    "Clock",
    "EsimError",
    "InvalidIccidError",
    "InvalidRequestError",
    "LimiterClosedError",
    "LimiterState",
    "LoopClock",
    "ManualClock",
    "MonotonicClock",
    "NotFoundError",
    "OutcomeUnknownError",
    "PressOneClient",
    "Priority",
    "ProviderProfile",
    "Rate",
    "RateLimitedError",
    "ServerError",
    "SweepProgress",
    "SweepSummary",
    "Token",
    "TransportError",
    "Usage",
    "UsageResult",
    "UsageStatus",
    "UsageSweep",
    "ValidationError",
    "__version__",
]

"""Every default in one place. All of them can be overridden per client (and most per call)."""

from __future__ import annotations

from ._version import __version__

USER_AGENT = f"esim-async/{__version__}"

#: Total time one HTTP attempt may take (connect, send, receive), in seconds.
DEFAULT_TIMEOUT = 30.0
#: Time to establish a connection, in seconds.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Simultaneous connections to the provider per client.
DEFAULT_CONNECTION_LIMIT = 64
#: Retries after the first attempt for idempotent requests (GET, PUT).
DEFAULT_MAX_RETRIES = 2
#: Exponential backoff: first delay, and the cap on any single delay, in seconds.
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
#: The longest server-requested ``Retry-After`` a call sleeps through; above it the error surfaces.
DEFAULT_RETRY_AFTER_CAP = 60.0
#: Largest response body accepted, in bytes.
DEFAULT_MAX_BODY_SIZE = 16 * 1024 * 1024

#: Never trust a token for longer than this, whatever ``expires_in`` says (seconds).
TOKEN_MAX_LIFETIME = 24 * 3600.0
#: Refresh a token this long before it runs out (at most this fraction of its life).
TOKEN_REFRESH_MARGIN = 300.0
TOKEN_REFRESH_FRACTION = 0.1

#: Safety margin added to each limiter's period, as a fraction of the period.
DEFAULT_RATE_MARGIN = 0.02

#: Usage cache: mirrors the server's 20-minute cache.
DEFAULT_CACHE_TTL = 1200.0
SANDBOX_CACHE_TTL = 3600.0
#: How long answers that do not change quickly (404, RECYCLED) are kept.
DEFAULT_NEGATIVE_CACHE_TTL = 24 * 3600.0
DEFAULT_CACHE_MAXSIZE = 100_000

#: ICCID length accepted by default (sandbox ICCIDs can be shorter: configure ``iccid_length``).
ICCID_MIN_LENGTH = 18
ICCID_MAX_LENGTH = 22

#: AIMD after a 429: multiply the rate by this once per cool-down ...
RATE_DECREASE_FACTOR = 0.5
#: ... never below this fraction of the configured rate ...
RATE_MIN_FACTOR = 0.1
#: ... and win back this fraction of the configured rate (and of a count lowered by a 429's
#: ``X-RateLimit-Limit``) per period without a 429.
RATE_RECOVERY_STEP = 0.1
#: Cool-down used when a 429 carries no usable ``Retry-After``, in periods of the limit.
DEFAULT_COOLDOWN_PERIODS = 1.0
#: A 429 of a keyed request (one eSIM) is charged to the shared limit only when the shared window
#: held more than this share of its count when it came (the answered request included; all of
#: it for counts up to ten); otherwise only that key cools down.
SHARED_CHARGE_FILL = 0.9

"""What a client hands its resource namespaces: the pipeline and the state they share."""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from .cache import CachedEndpoint, CallScope
from .errors import TransportError, WaitTimeoutError
from .validation import validate_iccid

if TYPE_CHECKING:
    from .backends.base import RateLimiter
    from .clock import Clock
    from .config import ClientConfig
    from .models.sims import PackageHistoryEntry
    from .models.usage import Usage
    from .providers import ProviderProfile
    from .stats import ClientStats
    from .transport import Request, Transport
    from .webhooks import AsyncOrderEvent

__all__ = ["AsyncOrders", "ClientContext"]

T = TypeVar("T")

#: Async-order events kept for a ``wait_async`` that comes after them.
EARLY_EVENTS = 1000


class AsyncOrders:
    """Waits for async orders' webhooks: :meth:`deliver` resolves :meth:`wait` (or keeps the
    event for a wait that comes later); :meth:`close` fails every wait, now and later."""

    __slots__ = ("_closed", "_early", "_waiters")

    def __init__(self) -> None:
        #: The future of each caller waiting, per request_id.
        self._waiters: dict[str, set[asyncio.Future[AsyncOrderEvent]]] = {}
        self._early: OrderedDict[str, AsyncOrderEvent] = OrderedDict()
        self._closed = False

    def deliver(self, event: AsyncOrderEvent) -> None:
        """An async order's webhook arrived: wake whoever waits for it, or keep it."""
        waiters = [w for w in self._waiters.pop(event.request_id, ()) if not w.done()]
        for waiter in waiters:
            waiter.set_result(event)
        if not waiters:
            self._early[event.request_id] = event
            while len(self._early) > EARLY_EVENTS:
                self._early.popitem(last=False)

    async def wait(self, request_id: str, timeout: float) -> AsyncOrderEvent:
        """The event of ``request_id``: one kept already, or the next delivered.

        Raises:
            WaitTimeoutError: nothing arrived within ``timeout`` seconds.
            TransportError: the client was closed (before or during the wait).
        """
        early = self._early.pop(request_id, None)
        if early is not None:
            return early
        if self._closed:
            raise TransportError("the client is closed")
        waiter: asyncio.Future[AsyncOrderEvent] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(request_id, set())
        waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            raise WaitTimeoutError(
                f"no webhook for async order {request_id} within {timeout:g} s"
            ) from None
        finally:
            waiters.discard(waiter)
            if not waiters and self._waiters.get(request_id) is waiters:
                del self._waiters[request_id]

    def close(self) -> None:
        """Fail every wait with a ``TransportError``; later waits are refused."""
        self._closed = True
        waiters, self._waiters = self._waiters, {}
        for waiter in itertools.chain.from_iterable(waiters.values()):
            if not waiter.done():
                waiter.set_exception(TransportError("the client was closed while waiting"))


@dataclass(slots=True, kw_only=True, eq=False)
class ClientContext:
    """The narrow surface a client gives its resources (``client.sims``...): send a request,
    the limiter of an endpoint (by name), the clock, the counters, the settings, the cached
    endpoints, top-up listeners and async-order waits. ``label`` is how the client shows itself.
    """

    label: str
    config: ClientConfig
    stats: ClientStats
    transport: Transport
    #: The limiter of an endpoint, by name (created on first use).
    limiter: Callable[[str], RateLimiter]
    account_limiter: RateLimiter | None
    usage_endpoint: CachedEndpoint[Usage]
    history_endpoint: CachedEndpoint[list[PackageHistoryEntry]]
    #: ``iccid`` if it is well formed (the client's ``iccid_length``), else
    #: :class:`~esim_async.errors.InvalidIccidError`.
    validate_iccid: Callable[[object], str] = field(init=False)
    profile: ProviderProfile = field(init=False)
    clock: Clock = field(init=False)
    #: Run a request as it is, in a call a single flight already scopes.
    send: Callable[[Request[T]], Awaitable[T]] = field(init=False)
    #: The usage endpoint's limiter (the one every usage request waits in).
    usage_limiter: RateLimiter = field(init=False)
    #: Called with the ICCID after each successful top-up (a webhook receiver re-arms).
    topup_listeners: list[Callable[[str], None]] = field(init=False, default_factory=list)
    async_orders: AsyncOrders = field(init=False, default_factory=AsyncOrders)
    #: Reads in progress outside the flights: closing the client ends their waits.
    _calls: CallScope = field(init=False, default_factory=CallScope)
    #: Per endpoint of one parameter: its name, and the text before and after it.
    _key_paths: dict[str, tuple[str, str, str] | None] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        low, high = self.config.iccid_length
        self.validate_iccid = functools.partial(validate_iccid, min_length=low, max_length=high)
        self.profile = self.config.profile
        self.clock = self.config.clock
        self.send = self.transport.request
        self.usage_limiter = self.limiter("usage")

    def __repr__(self) -> str:
        return self.label

    def path(self, endpoint: str, **params: str) -> str:
        """The path of ``endpoint`` with its parameters filled in."""
        template = self.profile.path(endpoint)
        return template.format(**params) if params else template

    def key_path(self, endpoint: str, name: str, value: str) -> str:
        """``path(endpoint, name=value)`` for an endpoint of one parameter (an ICCID...),
        without formatting the template on every call."""
        try:
            parts = self._key_paths[endpoint]
        except KeyError:  # split once around its only field (``None``: other braces, formatted)
            head, sep, tail = self.profile.path(endpoint).partition("{" + name + "}")
            plain = sep and "{" not in head + tail and "}" not in head + tail
            parts = self._key_paths[endpoint] = (name, head, tail) if plain else None
        if parts is None or parts[0] != name:
            return self.path(endpoint, **{name: value})
        return parts[1] + value + parts[2]

    def utcnow(self) -> datetime:
        """The clock's current UTC time (for date rules such as a future order's due date)."""
        return datetime.fromtimestamp(self.clock.wall(), UTC)

    async def request(self, req: Request[T], *, name: str = "request") -> T:
        """Run ``req`` (of the endpoint ``name``) through the pipeline.

        A read runs in the client's call scope: closing the client ends its waits at once. A
        write is never cut short: the transport alone can tell whether it may have reached the
        provider (closing the client fails its waits and its connection).
        """
        if not req.idempotent:
            return await self.transport.request(req)
        return await self._calls.run(self.transport.request(req), name=f"esim_async call {name}")

    async def aclose(self) -> None:
        """End every call in progress and every wait: their callers get a
        ``TransportError``, as do later calls."""
        await self.usage_endpoint.aclose()
        await self.history_endpoint.aclose()
        await self._calls.aclose()
        self.async_orders.close()


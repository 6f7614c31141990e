"""What a client hands its resource namespaces: the pipeline and the state they share."""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Awaitable, Callable
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

    __slots__ = ("_closed", "_early", "_waiters", "_waiting")

    def __init__(self) -> None:
        self._waiters: dict[str, asyncio.Future[AsyncOrderEvent]] = {}
        #: Callers waiting on each future (one that gives up leaves it to the others).
        self._waiting: dict[str, int] = {}
        self._early: OrderedDict[str, AsyncOrderEvent] = OrderedDict()
        self._closed = False

    def deliver(self, event: AsyncOrderEvent) -> None:
        """An async order's webhook arrived: wake whoever waits for it, or keep it."""
        waiter = self._waiters.pop(event.request_id, None)
        self._waiting.pop(event.request_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(event)
            return
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
        waiter = self._waiters.get(request_id)
        if waiter is None or waiter.done():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[request_id] = waiter
            self._waiting[request_id] = 0
        self._waiting[request_id] += 1
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(waiter)
        except TimeoutError:
            raise WaitTimeoutError(
                f"no webhook for async order {request_id} within {timeout:g} s"
            ) from None
        finally:
            if self._waiters.get(request_id) is waiter:
                left = self._waiting[request_id] - 1
                if left and not waiter.done():
                    self._waiting[request_id] = left
                else:  # the last caller gave up, or the future is settled
                    self._waiting.pop(request_id, None)
                    if not waiter.done():
                        self._waiters.pop(request_id, None)

    def close(self) -> None:
        """Fail every wait with a ``TransportError``; later waits are refused."""
        self._closed = True
        waiters, self._waiters = self._waiters, {}
        self._waiting.clear()
        for waiter in waiters.values():
            if not waiter.done():
                waiter.set_exception(TransportError("the client was closed while waiting"))


class ClientContext:
    """The narrow surface a client gives its resources (``client.sims``...): send a request,
    the limiter of an endpoint (by name), the clock, the counters, the settings, the cached
    endpoints, top-up listeners and async-order waits. ``label`` is how the client shows itself.
    """

    __slots__ = (
        "_calls",
        "_key_paths",
        "_label",
        "_paths",
        "_transport",
        "account_limiter",
        "async_orders",
        "clock",
        "config",
        "history_endpoint",
        "limiter",
        "profile",
        "send",
        "stats",
        "topup_listeners",
        "usage_endpoint",
        "usage_limiter",
        "validate_iccid",
    )

    def __init__(
        self,
        *,
        label: str,
        config: ClientConfig,
        stats: ClientStats,
        transport: Transport,
        limiter: Callable[[str], RateLimiter],
        account_limiter: RateLimiter | None,
        usage_endpoint: CachedEndpoint[Usage],
        history_endpoint: CachedEndpoint[list[PackageHistoryEntry]],
    ) -> None:
        self._label = label
        low, high = config.iccid_length
        #: ``iccid`` if it is well formed (the client's ``iccid_length``), else
        #: :class:`~esim_async.errors.InvalidIccidError`.
        self.validate_iccid: Callable[[object], str] = functools.partial(
            validate_iccid, min_length=low, max_length=high
        )
        self.config = config
        self.profile: ProviderProfile = config.profile
        self.clock: Clock = config.clock
        self.stats = stats
        self._transport = transport
        #: Run a request as it is, in a call a single flight already scopes.
        self.send: Callable[[Request[T]], Awaitable[T]] = transport.request
        #: The limiter of an endpoint, by name (created on first use).
        self.limiter = limiter
        #: The usage endpoint's limiter (the one every usage request waits in).
        self.usage_limiter = limiter("usage")
        self._paths: dict[str, str] = {}
        #: Per endpoint of one parameter: its name, and the text before and after it.
        self._key_paths: dict[str, tuple[str, str, str] | None] = {}
        self.account_limiter = account_limiter
        self.usage_endpoint = usage_endpoint
        self.history_endpoint = history_endpoint
        #: Called with the ICCID after each successful top-up (a webhook receiver re-arms).
        self.topup_listeners: list[Callable[[str], None]] = []
        self.async_orders = AsyncOrders()
        #: Reads in progress outside the flights: closing the client ends their waits.
        self._calls = CallScope()

    def __repr__(self) -> str:
        return self._label

    def path(self, endpoint: str, **params: str) -> str:
        """The path of ``endpoint`` with its parameters filled in."""
        template = self._template(endpoint)
        return template.format(**params) if params else template

    def key_path(self, endpoint: str, name: str, value: str) -> str:
        """``path(endpoint, name=value)`` for an endpoint of one parameter (an ICCID...),
        without formatting the template on every call."""
        try:
            parts = self._key_paths[endpoint]
        except KeyError:
            parts = self._key_paths[endpoint] = _split_template(self._template(endpoint), name)
        if parts is None or parts[0] != name:
            return self.path(endpoint, **{name: value})
        return parts[1] + value + parts[2]

    def _template(self, endpoint: str) -> str:
        template = self._paths.get(endpoint)
        if template is None:
            template = self._paths[endpoint] = self.profile.path(endpoint)
        return template

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
            return await self._transport.request(req)
        return await self._calls.run(self._transport.request(req), name=f"esim_async call {name}")

    async def aclose(self) -> None:
        """End every call in progress and every wait: their callers get a
        ``TransportError``, as do later calls."""
        await self.usage_endpoint.aclose()
        await self.history_endpoint.aclose()
        await self._calls.aclose()
        self.async_orders.close()


def _split_template(template: str, name: str) -> tuple[str, str, str] | None:
    """``name`` and the text before and after its ``{name}`` field, when that is the template's
    only field and the template has no other braces (``None`` otherwise: the path is then
    formatted)."""
    head, field, tail = template.partition("{" + name + "}")
    if not field or "{" in head + tail or "}" in head + tail:
        return None
    return name, head, tail

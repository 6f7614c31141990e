"""What every request meets before its handler: it is counted, its token checked, its limits
applied and any fault served, in that order; and the base of the route modules' handlers."""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from .. import Rate
from .clock import utc_now
from .faults import FaultKind
from .http import read_body
from .state import EmulatorState
from .webhooks import WebhookSender

__all__ = [
    "Auth",
    "Handler",
    "LimitCheck",
    "Routes",
    "apply_fault",
    "bearer_denied",
    "check_limit",
    "count_arrival",
    "guard",
    "guarded",
]

#: (limit name, key, rate) — one window a request counts against; a ``None`` rate is no limit.
LimitCheck = tuple[str, str, Rate | None]

TOO_MANY = {"message": "Too Many Attempts."}
UNAUTHENTICATED = {"message": "Unauthenticated."}


def count_arrival(state: EmulatorState, endpoint: str, request: web.Request) -> None:
    """Record an arrival at ``endpoint`` and tell the ``on_request`` hook."""
    state.stats.arrivals[endpoint] += 1
    if state.on_request is not None:
        state.on_request(endpoint, request)


def bearer_denied(state: EmulatorState, request: web.Request) -> web.Response | None:
    """The 401 for a request without a valid bearer token, counted in ``stats.unauthorized``."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer ") and state.token_valid(header[7:]):
        return None
    state.stats.unauthorized += 1
    return web.json_response(UNAUTHENTICATED, status=401)


#: Checks a request's credentials: ``None`` lets it through, anything else is the answer.
Auth = Callable[[EmulatorState, web.Request], web.Response | None]


def check_limit(
    state: EmulatorState, name: str, key: str, rate: Rate | None
) -> web.Response | None:
    """Count the arrival in the window ``name``/``key``; a 429 if the window is full.

    The 429 carries ``Retry-After`` (whole seconds to wait), ``X-RateLimit-Limit``,
    ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``, the Unix time (wall clock, whole
    seconds) at which the wait ends, as Laravel's throttle sends it.
    """
    if rate is None:
        return None
    wait = state.windows.hit(name, key, rate, state.limits.algorithm, state.clock.now())
    if wait is None:
        return None
    state.stats.rate_limited += 1
    state.stats.rate_limited_by[name] += 1
    retry = max(1, math.ceil(wait))
    return web.json_response(
        TOO_MANY,
        status=429,
        headers={
            "Retry-After": str(retry),
            "X-RateLimit-Limit": str(rate.count),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(math.ceil(utc_now().timestamp()) + retry),
        },
    )


async def apply_fault(
    state: EmulatorState, kind: FaultKind | None, request: web.Request
) -> web.StreamResponse | None:
    """Serve fault ``kind``: an error answer, a dropped connection, or a delay (then ``None``)."""
    if kind is None:
        return None
    state.stats.faults[kind] += 1
    if kind in ("500", "502", "503"):
        return web.json_response({"message": "Server Error"}, status=int(kind))
    if kind == "html":
        return web.Response(
            text="<html><body><h1>502 Bad Gateway</h1></body></html>",
            status=200,
            content_type="text/html",
        )
    if kind == "drop":
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # the handler ends without a response
    if kind == "slow":
        await state.clock.sleep(state.faults.slow_seconds)
        return None
    if kind == "429":
        state.stats.rate_limited += 1
        return web.json_response(TOO_MANY, status=429, headers={"Retry-After": "1"})
    if kind == "401":
        state.stats.unauthorized += 1
        return web.json_response(UNAUTHENTICATED, status=401)
    return None


async def guard(
    state: EmulatorState,
    request: web.Request,
    endpoint: str,
    limits: tuple[LimitCheck, ...] = (),
    *,
    auth: Auth | None = bearer_denied,
) -> web.StreamResponse | None:
    """Count the arrival, then check the credentials (with ``auth``; ``None``: none asked
    for), the limits and any fault, in that order.

    ``None`` lets the handler answer; anything else is the answer.
    """
    count_arrival(state, endpoint, request)
    denied = auth(state, request) if auth is not None else None
    if denied is not None:
        return denied
    for name, key, rate in limits:
        limited = check_limit(state, name, key, rate)
        if limited is not None:
            return limited
    return await apply_fault(state, state.fault_plan.next(endpoint, state.faults), request)


class Routes:
    """The handlers of one domain over one emulator state; a subclass lists its routes."""

    __slots__ = ("state", "webhooks")

    def __init__(self, state: EmulatorState, webhooks: WebhookSender) -> None:
        self.state = state
        #: The emulator's one sender of outgoing webhooks.
        self.webhooks = webhooks

    def routes(self, prefix: str) -> list[web.RouteDef]:
        """The route definitions under ``prefix``."""
        raise NotImplementedError

    async def recorded_body(self, request: web.Request, endpoint: str) -> dict[str, Any]:
        """The body of a write, kept in ``state.write_log`` under ``endpoint``."""
        body = await read_body(request)
        self.state.write_log.append((endpoint, body))
        return body


R = TypeVar("R", bound=Routes)
Handler = Callable[[R, web.Request], Awaitable[web.StreamResponse]]


def guarded(
    endpoint: str,
    *,
    limited: bool = False,
    key: str | None = None,
    auth: Auth | None = bearer_denied,
) -> Callable[[Handler[R]], Handler[R]]:
    """A route handler that runs once :func:`guard` lets the request through. ``limited``:
    the request also counts against the limit called ``endpoint`` (one window for the
    company, or one per value of the path's ``key`` part); ``auth``: as for :func:`guard`."""

    def wrap(handler: Handler[R]) -> Handler[R]:
        @functools.wraps(handler)
        async def run(self: R, request: web.Request) -> web.StreamResponse:
            state = self.state
            window = request.match_info[key] if key else "all"
            checks = ((endpoint, window, state.limits.rate(endpoint)),) if limited else ()
            answered = await guard(state, request, endpoint, checks, auth=auth)
            return answered if answered is not None else await handler(self, request)

        return run

    return wrap

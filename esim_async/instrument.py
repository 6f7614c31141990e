"""The instrumentation hook: what a client tells a tracer or metrics library about its calls.

A client without instrumentation (the default) pays one attribute check per call. With one
(:func:`esim_async.otel.instrument`, or any object following :class:`Instrumentation`), each API
call opens a :class:`CallScope` that hears, as they happen:

* :meth:`CallScope.budget_wait`: seconds one attempt waited for rate-limit budget;
* :meth:`CallScope.attempt`: what each HTTP attempt came to (its status, or the error);
* :meth:`CallScope.cache`: for a cached endpoint, whether the answer came from the cache
  (``hit``), from a request another caller had in flight (``coalesced``) or from this call's
  own request (``miss``).

A cached endpoint opens the scope of a call and hands it to the request it makes through
:func:`bind_scope`, so a call that misses the cache is one scope, not two.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterable
from types import TracebackType
from typing import Literal, Protocol

__all__ = [
    "CacheKind",
    "CallScope",
    "Instrumentation",
    "RouteTable",
    "bind_scope",
    "take_scope",
]

#: Where a cached endpoint's answer came from.
CacheKind = Literal["hit", "coalesced", "miss"]


class CallScope(Protocol):
    """One API call, from its start to its answer or error (a context manager)."""

    def attempt(self, status: int | None, error_type: str | None) -> None:
        """An HTTP attempt ended: its ``status`` (``None`` when no answer came) and, unless it
        is the answer, a short name of what went wrong (``"429"``, ``"TransportError"``...)."""
        ...

    def budget_wait(self, seconds: float) -> None:
        """An attempt waited ``seconds`` for rate-limit budget."""
        ...

    def cache(self, kind: CacheKind) -> None:
        """Where a cached endpoint's answer came from."""
        ...

    def __enter__(self) -> CallScope: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Instrumentation(Protocol):
    """Opens a :class:`CallScope` per API call."""

    def call(
        self, endpoint: str | None, method: str, route: str, url: str, key: str | None
    ) -> CallScope:
        """The scope of one call.

        Args:
            endpoint: the endpoint's name (``usage``, ``token``...), ``None`` if unknown.
            method: the HTTP method.
            route: the path template (``/v2/sims/{iccid}/usage``).
            url: the full URL, without query string.
            key: what the call is about when it has one (the ICCID of a usage call).
        """
        ...


class RouteTable:
    """Names the endpoint and path template of a request path, from a provider's templates.

    Args:
        templates: endpoint name -> full path template (``/v2/sims/{iccid}/usage``).
    """

    __slots__ = ("_exact", "_patterns")

    def __init__(self, templates: Iterable[tuple[str, str]]) -> None:
        self._exact: dict[str, tuple[str, str]] = {}
        self._patterns: list[tuple[re.Pattern[str], str, str]] = []
        for endpoint, template in templates:
            if "{" not in template:
                self._exact.setdefault(template, (endpoint, template))
                continue
            parts = re.split(r"(\{[^{}]*\})", template)
            regex = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
            self._patterns.append((re.compile(regex), endpoint, template))
        # Fewer placeholders first: a literal segment wins over a placeholder.
        self._patterns.sort(key=lambda item: item[2].count("{"))

    def resolve(self, path: str) -> tuple[str | None, str]:
        """``(endpoint, template)`` of ``path``; ``(None, path)`` when no template matches."""
        found = self._exact.get(path)
        if found is not None:
            return found
        for pattern, endpoint, template in self._patterns:
            if pattern.fullmatch(path):
                return endpoint, template
        return None, path


_SCOPE: contextvars.ContextVar[CallScope | None] = contextvars.ContextVar(
    "esim_async_call_scope", default=None
)


def bind_scope(scope: CallScope | None) -> contextvars.Token[CallScope | None]:
    """Hand ``scope`` to the next request made in this context (reset with the token)."""
    return _SCOPE.set(scope)


def unbind_scope(token: contextvars.Token[CallScope | None]) -> None:
    """Undo :func:`bind_scope`."""
    _SCOPE.reset(token)


def take_scope() -> CallScope | None:
    """The scope bound for this request, if any; requests made after it open their own."""
    scope = _SCOPE.get()
    if scope is not None:
        _SCOPE.set(None)
    return scope

"""The access token: fetched once, shared by concurrent callers, refreshed before it runs out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from . import _constants as C
from ._secrets import logger, register_holder, register_secret
from .cache import SingleFlight
from .clock import Clock
from .models.auth import Token

__all__ = ["TokenManager", "TokenStore"]


class TokenStore(Protocol):
    """Where processes sharing credentials share their token (see the Redis backend)."""

    async def get(self) -> tuple[str, float] | None:
        """(token, seconds it stays valid), or ``None``."""
        ...

    async def set(self, token: str, valid_for: float) -> None: ...

    def discard_later(self, token: str) -> None:
        """Forget ``token`` if it is still the shared one (in the background)."""
        ...

    def lock(self) -> AbstractAsyncContextManager[None]: ...


class TokenManager:
    """Keeps one bearer token in memory.

    The token is trusted until shortly before ``expires_in`` runs out, and never for more than
    24 hours whatever ``expires_in`` says (the docs say 24 h while examples show a year).
    Concurrent callers share one token request. ``invalidate`` drops a token the server refused
    (a 401), so the next caller fetches a new one.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Token]],
        *,
        clock: Clock,
        max_lifetime: float = C.TOKEN_MAX_LIFETIME,
        store: TokenStore | None = None,
    ) -> None:
        self._fetch = fetch
        self._store = store
        self._clock = clock
        self._max_lifetime = max_lifetime
        self._token: str | None = None
        self._valid_until = 0.0
        self._flight: SingleFlight[str, str] = SingleFlight()
        register_holder(self)  # the token in use is redacted however many secrets come later

    def has_token(self) -> bool:
        return self.valid_token() is not None

    def valid_token(self) -> str | None:
        """The token in use while it is trusted, else ``None`` (:meth:`get` fetches one)."""
        return self._token if self._clock.now() < self._valid_until else None

    async def get(self) -> str:
        """A valid token, fetching one if needed."""
        token = self.valid_token()
        if token is None:
            token, _ = await self._flight.run("token", self._refresh)
        return token

    async def _refresh(self) -> str:
        store = self._store
        if store is None:
            return await self._request()
        shared = await self._shared(store)
        if shared is not None:
            return shared
        async with store.lock():  # one process asks, the others wait and reuse its token
            shared = await self._shared(store)
            if shared is not None:
                return shared
            token = await self._request()
            await store.set(token, self._valid_until - self._clock.now())
            return token

    async def _shared(self, store: TokenStore) -> str | None:
        found = await store.get()
        if found is None or found[1] <= 1.0:  # (about to run out: fetch a new one)
            return None
        token, valid_for = found
        register_secret(token)
        self._token = token
        self._valid_until = self._clock.now() + valid_for
        return token

    async def _request(self) -> str:
        started = self._clock.now()
        token = await self._fetch()
        register_secret(token.access_token)
        lifetime = self._max_lifetime
        if token.expires_in is not None and 0 < token.expires_in < lifetime:
            lifetime = float(token.expires_in)
        margin = min(C.TOKEN_REFRESH_MARGIN, lifetime * C.TOKEN_REFRESH_FRACTION)
        self._token = token.access_token
        self._valid_until = started + lifetime - margin
        logger.debug("access token obtained, valid for %.0f s", lifetime - margin)
        return token.access_token

    def current_secrets(self) -> tuple[str, ...]:
        """The token in use, if any (what logs and errors must never show)."""
        return (self._token,) if self._token is not None else ()

    def invalidate(self, token: str) -> None:
        """Forget ``token`` if it is still the current one (the server refused it)."""
        if self._token == token:
            self._token = None
            self._valid_until = 0.0
        if self._store is not None:
            self._store.discard_later(token)

    async def aclose(self) -> None:
        await self._flight.aclose()

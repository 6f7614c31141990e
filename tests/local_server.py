"""A test's own HTTP server on 127.0.0.1: the set-up and clean-up every such server shares."""

from __future__ import annotations

from typing import Self

from aiohttp import web


class LocalServer:
    """Serves :meth:`app` on 127.0.0.1 at a free port inside ``async with`` (``url`` is its
    base URL), and stops by itself on exit."""

    url = ""
    _runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        """The application to serve (built on entry)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

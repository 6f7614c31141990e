"""A loopback emulator of the Airalo (``/v2``) and PressOne (``/customer/v2``) APIs.

It enforces rate limits at arrival time (strict sliding window by default, Laravel-style fixed
window as an option) and answers 429 with ``Retry-After`` and ``X-RateLimit-*``; caches usage
for 20 minutes like the real servers; issues expiring tokens; injects faults on demand (5xx,
slow responses, HTML instead of JSON, dropped connections); and counts every arrival so tests
can assert what reached the server.

Example::

    async with Emulator(fleet=Fleet.generate(100)) as emu:
        async with AiraloClient("id", "secret", base_url=emu.url) as client:
            await client.sims.usage(emu.fleet.iccids()[0])
        assert emu.stats.rate_limited == 0

With ``tls=True`` it serves https with a throwaway certificate for loopback: clients trust the
file at :attr:`Emulator.cert_path` (written where ``cert_out`` says), or use
:meth:`Emulator.ssl_context`::

    async with Emulator(tls=True, cert_out="emu.pem") as emu:
        async with AiraloClient("id", "secret", base_url=emu.url, ssl=emu.ssl_context()) as c:
            ...

The emulator binds to 127.0.0.1 only. :class:`Emulator` is an
:class:`~esim_async.testing.state.EmulatorState` that mounts the route modules of
:mod:`esim_async.testing.routes` on itself.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from .. import Rate
from .clock import Clock, SystemClock
from .faults import FaultKind, Faults
from .fleet import Fleet
from .guard import count_arrival
from .limits import ServerLimits
from .path import Handler, PathDelay, PathMiddleware, PathStats
from .routes.account import AccountRoutes
from .routes.catalogue import CatalogueRoutes
from .routes.esims import EsimRoutes
from .routes.notifications import NotificationRoutes
from .routes.orders import OrderRoutes
from .routes.voice import VOICE_PREFIX, VoiceRoutes
from .state import EmulatorState, EmulatorStats
from .tls import Certificates, TlsFiles, make_certificates
from .webhooks import WebhookSender

__all__ = ["Emulator", "EmulatorStats", "Faults", "PathDelay", "ServerLimits"]

AIRALO = "/v2"
PRESSONE = "/customer/v2"
#: The prefix PressOne's usage page misspells; the emulator answers usage there too.
PRESSONE_TYPO = "/cusomter/v2"


class Emulator(EmulatorState):
    """The emulator server. Use ``async with Emulator(...) as emu`` or ``start()``/``stop()``.

    Besides token and usage it answers the catalogue, order, eSIM, notification and voice
    endpoints with the documented payload shapes; ``orders``, ``async_requests`` and
    ``write_log`` record what was ordered. The emulator is its own
    :class:`~esim_async.testing.state.EmulatorState`: every field of it (``fleet``, ``limits``,
    ``faults``, ``stats``, ``on_request``...) is an attribute the route handlers share.
    """

    def __init__(
        self,
        *,
        fleet: Fleet | None = None,
        limits: ServerLimits | None = None,
        faults: Faults | None = None,
        cache_ttl: float = 1200.0,
        token_ttl: int = 86400,
        credentials: dict[str, str] | None = None,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        middlewares: Iterable[Middleware] = (),
        tls: bool | Certificates = False,
        cert_out: str | os.PathLike[str] | None = None,
        path: PathDelay | None = None,
    ) -> None:
        """``tls``: serve https, with fresh certificates (``True``) or the given ones;
        ``cert_out``: where to write the certificate clients trust (default: a private
        temporary file, removed when the emulator stops); ``path``: a one-way delay with
        jitter applied to every request before anything else sees it (see
        :class:`~esim_async.testing.path.PathDelay`)."""
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the emulator binds to loopback only")
        if cert_out is not None and tls is False:
            raise ValueError("cert_out needs tls")
        super().__init__(
            fleet=fleet if fleet is not None else Fleet.generate(50),
            limits=limits if limits is not None else ServerLimits(),
            faults=faults if faults is not None else Faults(),
            clock=clock if clock is not None else SystemClock(),
            cache_ttl=cache_ttl,
            token_ttl=token_ttl,
            credentials=credentials,
        )
        self.webhooks = WebhookSender(self)
        self._host = host
        self._port = port
        #: aiohttp middlewares around every handler, outermost first (an independent request
        #: log, say); they see each request before the emulator counts or limits it.
        self.middlewares: list[Middleware] = list(middlewares)
        self._path = PathMiddleware(path, lambda: self.clock)
        self._runner: web.AppRunner | None = None
        self._starting = False
        self._tls = tls
        self._cert_out = cert_out
        self._tls_files: TlsFiles | None = None
        self.url = ""

    @property
    def state(self) -> EmulatorState:
        """What the route handlers share: the emulator itself."""
        return self

    @property
    def path(self) -> PathDelay | None:
        """The network path in front of the server (``None``: none); settable mid-run."""
        return self._path.path

    @path.setter
    def path(self, path: PathDelay | None) -> None:
        self._path.path = path

    @property
    def path_stats(self) -> PathStats:
        """Requests that crossed :attr:`path`, and the delays drawn."""
        return self._path.stats

    # ------------------------------------------------------------------ control

    def app(self) -> web.Application:
        """The aiohttp application (mount it or run it yourself)."""

        @web.middleware
        async def unrouted(request: web.Request, handler: Handler) -> web.StreamResponse:
            # (a request no route answers, 404 or 405, is an arrival too)
            if request.match_info.http_exception is not None:
                count_arrival(self, "unrouted", request)
            return await handler(request)

        app = web.Application(middlewares=[self._path.middleware, unrouted, *self.middlewares])
        router = app.router
        for domain in (AccountRoutes, EsimRoutes, CatalogueRoutes, OrderRoutes, NotificationRoutes):
            for prefix in (AIRALO, PRESSONE):
                router.add_routes(domain(self, self.webhooks).routes(prefix))
        router.add_get(PRESSONE_TYPO + "/sims/{iccid}/usage", EsimRoutes(self, self.webhooks).usage)
        router.add_routes(VoiceRoutes(self, self.webhooks).routes(VOICE_PREFIX))
        return app

    async def start(self) -> str:
        """Serve on the configured host and port (0: any free port); returns :attr:`url`.

        Raises :class:`RuntimeError` if it is already serving (stop it first); a stopped
        emulator can be started again.
        """
        if self._runner is not None or self._starting:
            raise RuntimeError(f"the emulator is already serving at {self.url or 'a port'}")
        self._starting = True
        try:
            runner = web.AppRunner(
                self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5
            )
            await runner.setup()
            server_context: ssl.SSLContext | None = None
            if self._tls is not False:
                certificates = self._tls if isinstance(self._tls, Certificates) else None
                files = TlsFiles(certificates or make_certificates(), self._cert_out)
                self._tls_files = files
                server_context = files.server_context()
            try:
                site = web.TCPSite(runner, self._host, self._port, ssl_context=server_context)
                await site.start()
            except BaseException:
                await runner.cleanup()
                self._drop_tls_files()
                raise
            self._runner = runner
            addresses = runner.addresses
            port = addresses[0][1] if addresses else self._port
            scheme = "https" if server_context is not None else "http"
            host = f"[{self._host}]" if ":" in self._host else self._host
            self.url = f"{scheme}://{host}:{port}"
            return self.url
        finally:
            self._starting = False

    @property
    def cert_path(self) -> Path | None:
        """The certificate https clients trust (PEM), while serving with ``tls``; else ``None``.

        Point ``SSL_CERT_FILE``, ``NODE_EXTRA_CA_CERTS`` or ``curl --cacert`` at it.
        """
        return self._tls_files.cert_path if self._tls_files is not None else None

    def ssl_context(self) -> ssl.SSLContext:
        """A client SSL context that trusts this emulator, verification on (pass it as
        ``ssl=`` to :class:`~esim_async.AiraloClient`). Only while serving with ``tls``."""
        if self._tls_files is None:
            raise RuntimeError("the emulator is not serving https (start it with tls=True)")
        return self._tls_files.client_context()

    def _drop_tls_files(self) -> None:
        files, self._tls_files = self._tls_files, None
        if files is not None:
            files.cleanup()

    async def stop(self) -> None:
        """Cancel pending webhook deliveries and stop serving."""
        background = self.background
        for task in list(background):
            task.cancel()
        if background:
            await asyncio.gather(*background, return_exceptions=True)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self._drop_tls_files()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def inject(self, endpoint: str, *kinds: FaultKind) -> None:
        """Queue faults for the next requests to ``endpoint``: the name it is counted under
        in :attr:`EmulatorStats.arrivals` (``"usage"``, ``"token"``, ``"orders"``,
        ``"voice_renew"``...). A request answered 401 or 429 before it reaches the faults
        does not use one."""
        self.fault_plan.queue(endpoint, kinds)

    def expire_tokens(self) -> None:
        """Make every issued token invalid (as if it expired)."""
        self.tokens.clear()

    def set_limit(self, name: str, rate: Rate | None) -> None:
        """Change a server limit mid-run (``usage_iccid``, ``usage_company`` or ``token``)."""
        setattr(self.limits, name, rate)
        self.windows.reset(name)

    def set_usage(self, iccid: str, **fields: Any) -> None:
        """Change what an eSIM reports (the server cache still answers until it expires)."""
        sim = self.fleet.get(iccid)
        if sim is None:
            raise KeyError(iccid)
        for name, value in fields.items():
            setattr(sim, name, value)

    @property
    def async_webhook_url(self) -> str | None:
        """The URL opted in for ``async_orders``, if any."""
        return self.opted_in_url("async_orders")

    async def post_webhook(self, url: str, payload: dict[str, Any], secret: str) -> int | None:
        """POST a signed notification; returns the status, or None when it could not be sent."""
        return await self.webhooks.post(url, payload, secret)

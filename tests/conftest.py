"""Shared fixtures, and a self-disabling shim that makes aioresponses 0.7.9 work on aiohttp 3.14.

aiohttp 3.14 added a required ``stream_writer`` argument to ``ClientResponse.__init__`` that
aioresponses (<= 0.7.9, upstream issue #289) does not pass. While that argument exists and is
required, the shim makes the responses aioresponses builds default it to a mock; once upstream
passes it (or aiohttp drops it) the shim switches itself off.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# The providers' documented example bodies, copied verbatim into the repository.
PAYLOADS = Path(__file__).resolve().parent / "fixtures" / "payloads"


def aioresponses_needs_shim() -> bool:
    """True while aiohttp requires ``stream_writer`` and aioresponses does not pass it."""
    param = inspect.signature(aiohttp.ClientResponse.__init__).parameters.get("stream_writer")
    if param is None or param.default is not inspect.Parameter.empty:
        return False
    from aioresponses import core

    source = inspect.getsource(core.RequestMatch._build_response)
    return "stream_writer" not in source


def _shimmed_build_response(original: Any) -> Any:
    def build(self: Any, *args: Any, response_class: Any = None, **kwargs: Any) -> Any:
        base = response_class or aiohttp.ClientResponse

        class _Response(base):  # type: ignore[misc, valid-type]
            def __init__(self, *a: Any, **kw: Any) -> None:
                kw.setdefault("stream_writer", mock.Mock())
                super().__init__(*a, **kw)

        return original(self, *args, response_class=_Response, **kwargs)

    return build


@pytest.fixture(autouse=True)
def _aioresponses_shim() -> Iterator[None]:
    if not aioresponses_needs_shim():
        yield
        return
    from aioresponses import core

    original = core.RequestMatch._build_response
    with mock.patch.object(core.RequestMatch, "_build_response", _shimmed_build_response(original)):
        yield


@pytest.fixture
def payload() -> Any:
    """Read a file from ``tests/fixtures/payloads`` (``payload("airalo/usage_200.json")``)."""

    def read(name: str) -> bytes:
        return (PAYLOADS / name).read_bytes()

    return read


@pytest.fixture
async def emulator() -> AsyncIterator[Any]:
    from esim_async.testing import Emulator, Fleet

    async with Emulator(fleet=Fleet.generate(40, seed=7)) as emu:
        yield emu


@pytest.fixture
async def hook_url() -> AsyncIterator[str]:
    """A webhook receiver on 127.0.0.1 accepting notifications signed with ``"secret"``."""
    from aiohttp import web

    from esim_async.webhooks import webhook_app

    runner = web.AppRunner(webhook_app("secret"), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    await runner.cleanup()


@pytest.fixture(scope="session")
def redis_server_bin() -> str:
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("ESIM_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is required (ESIM_REQUIRE_REDIS=1) but not installed")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return binary


class RedisServer:
    """A throwaway redis-server on 127.0.0.1 (no persistence), restartable on its port."""

    def __init__(self, binary: str, workdir: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.binary = binary
        self.workdir = workdir
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import socket
        import subprocess
        import time

        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def redis_server(redis_server_bin: str, tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_bin, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()

"""The conftest shim makes aioresponses usable on aiohttp 3.14 and switches itself off."""

from __future__ import annotations

import inspect

import aiohttp
from aioresponses import aioresponses

from ..conftest import aioresponses_needs_shim


async def test_mocked_response_is_readable() -> None:
    with aioresponses() as mocked:
        mocked.get("http://api.test/x", payload={"a": 1}, headers={"X-Test": "1"})
        async with aiohttp.ClientSession() as session, session.get("http://api.test/x") as resp:
            assert resp.status == 200
            assert resp.headers["X-Test"] == "1"
            assert await resp.json() == {"a": 1}


def test_shim_is_on_exactly_while_aiohttp_requires_stream_writer() -> None:
    param = inspect.signature(aiohttp.ClientResponse.__init__).parameters.get("stream_writer")
    required = param is not None and param.default is inspect.Parameter.empty
    from aioresponses import core

    passes_it = "stream_writer" in inspect.getsource(core.RequestMatch._build_response)
    assert aioresponses_needs_shim() == (required and not passes_it)

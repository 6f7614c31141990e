"""The official Node SDK (``airalo-sdk`` 1.2.2 on npm) works against the emulator, unmodified.

The SDK speaks https only, so the emulator serves TLS and Node trusts its certificate through
``NODE_EXTRA_CA_CERTS``; the SDK's only change is its base-URL constant, set at run time. Every
method of ``Airalo`` is called and what each returns is checked against the emulator's state.

Needs ``node`` and the package installed with ``npm install --prefix DIR airalo-sdk@1.2.2``,
``DIR`` given as ``AIRALO_NODE_SDK_DIR`` (``.ci/run`` does both); skipped otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path

import pytest

from esim_async.testing import Emulator, Fleet

from .python_sdk import expected_for

VERSION = "1.2.2"
RUNNER = Path(__file__).resolve().parent / "node_sdk_runner.js"
#: ``initialize`` (the token) and the 23 methods of ``Airalo``.
CALLS = 24


def node_sdk() -> tuple[str, Path]:
    """The ``node`` executable and the ``node_modules`` holding the SDK; skips without them."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    prefix = os.environ.get("AIRALO_NODE_SDK_DIR")
    if not prefix:
        pytest.skip(
            f"AIRALO_NODE_SDK_DIR is not set (npm install --prefix DIR airalo-sdk@{VERSION})"
        )
    modules = Path(prefix) / "node_modules"
    manifest = modules / "airalo-sdk" / "package.json"
    if not manifest.is_file():
        pytest.skip(f"airalo-sdk is not installed under {prefix}")
    version = json.loads(manifest.read_text())["version"]
    if version != VERSION:
        pytest.skip(f"airalo-sdk {version} is installed, these checks are for {VERSION}")
    return node, modules


async def test_every_method_of_the_node_sdk_works(tmp_path: Path) -> None:
    node, modules = node_sdk()
    fleet = Fleet.generate(30, seed=9)
    # The SDK's config accepts only [A-Za-z0-9_-] in credentials.
    expected = expected_for(fleet, f"compat-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex)
    async with Emulator(fleet=fleet, tls=True) as emu:  # Airalo's real limits
        assert emu.cert_path is not None
        env = {
            **os.environ,
            "NODE_PATH": str(modules),
            "NODE_EXTRA_CA_CERTS": str(emu.cert_path),
            "AIRALO_SDK_CACHE_PATH": str(tmp_path / "sdk-cache"),
        }
        env.pop("NODE_TLS_REJECT_UNAUTHORIZED", None)  # verification stays on
        arguments = {
            **asdict(expected),
            "local_countries": sorted(expected.local_countries),
            "global_slugs": sorted(expected.global_slugs),
            "base_url": emu.url + "/v2/",
        }
        proc = await asyncio.create_subprocess_exec(
            node,
            str(RUNNER),
            json.dumps(arguments),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    outcomes = json.loads(out.decode().strip().splitlines()[-1])
    assert outcomes == dict.fromkeys(outcomes, "ok")
    assert len(outcomes) == CALLS
    assert emu.stats.tokens_issued == 1
    assert emu.stats.rate_limited == 0 and emu.stats.unauthorized == 0

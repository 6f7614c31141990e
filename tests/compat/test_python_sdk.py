"""The official Python SDK (``airalo-sdk``) works against the emulator, unmodified.

Its only change is its URL constant, set at run time. Every method that talks to the API is
called, in a thread (the SDK is synchronous), against an emulator with Airalo's real limits, and
what each returns is checked against what the emulator holds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from esim_async.testing import Emulator, Fleet

from .python_sdk import expected_for, run_every_method

airalo = pytest.importorskip("airalo", reason="airalo-sdk is not installed (pip install '.[test]')")

from airalo.constants.api_constants import ApiConstants  # noqa: E402
from airalo.helpers.cached import Cached  # noqa: E402

#: The SDK's methods that talk to the API (besides the constructor, which fetches the token).
METHODS = 24


@pytest.fixture(autouse=True)
def _sdk_cache() -> Iterator[None]:
    """The SDK caches tokens and answers on disk; each test starts and ends without them."""
    Cached.clear_cache()
    yield
    Cached.clear_cache()


def credentials() -> tuple[str, str]:
    return f"compat-{uuid.uuid4().hex[:12]}", f"secret-{uuid.uuid4().hex}"


async def test_every_method_of_the_python_sdk_works(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = Fleet.generate(30, seed=7)
    expected = expected_for(fleet, *credentials())
    async with Emulator(fleet=fleet) as emu:  # Airalo's real limits
        monkeypatch.setattr(ApiConstants, "PRODUCTION_URL", emu.url + "/v2/")
        outcomes = await asyncio.to_thread(run_every_method, expected)
    assert outcomes == dict.fromkeys(outcomes, "ok")
    assert len(outcomes) == METHODS + 1
    # One token at start, one for refresh_token; nothing refused or limited on the way.
    assert emu.stats.tokens_issued == 2
    assert emu.stats.rate_limited == 0 and emu.stats.unauthorized == 0


async def test_the_python_sdk_over_tls_trusting_the_written_certificate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``SSL_CERT_FILE`` pointed at the emulator's certificate is all an https client needs."""
    from airalo import Airalo

    fleet = Fleet.generate(10, seed=8)
    iccid = next(s.iccid for s in fleet.sims.values() if s.status == "ACTIVE")
    client_id, secret = credentials()
    async with Emulator(fleet=fleet, tls=True, cert_out=tmp_path / "emu.pem") as emu:
        monkeypatch.setattr(ApiConstants, "PRODUCTION_URL", emu.url + "/v2/")
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "emu.pem"))

        def calls() -> tuple[str, list[str]]:
            sdk = Airalo({"client_id": client_id, "client_secret": secret})
            usage = sdk.sim_usage(iccid)["data"]["status"]
            flat = sdk.get_country_packages("GB", flat=True)["data"]
            return usage, sorted({c for item in flat for c in item["countries"]})

        status, countries = await asyncio.to_thread(calls)
    assert status == "ACTIVE" and countries == ["GB"]
    assert emu.stats.tokens_issued == 1

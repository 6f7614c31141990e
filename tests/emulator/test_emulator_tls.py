"""The emulator over https: a throwaway certificate for loopback that clients can trust.

https-only clients (the official Node SDK, say) need a server they can verify. ``Emulator(
tls=True)`` and ``esim-async emulator --tls --cert-out PATH`` serve https with a fresh private
authority whose certificate is written where asked; our client, ``SSL_CERT_FILE`` users and
``NODE_EXTRA_CA_CERTS`` users trust that file, with verification on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from esim_async import AiraloClient
from esim_async.testing import Emulator, Fleet, ServerLimits
from esim_async.testing.tls import make_certificates

CREDENTIALS = {"client_id": "id", "client_secret": "s", "grant_type": "client_credentials"}


async def test_our_client_reads_usage_over_tls_with_verification_on() -> None:
    fleet = Fleet.generate(4, seed=3)
    iccid = fleet.iccids()[0]
    async with Emulator(fleet=fleet, tls=True) as emu:
        assert emu.url.startswith("https://127.0.0.1:")
        assert emu.cert_path is not None and emu.cert_path.read_bytes().startswith(b"-----BEGIN")
        async with AiraloClient("id", "secret", base_url=emu.url, ssl=emu.ssl_context()) as client:
            usage = await client.sims.usage(iccid)
        assert usage.status == fleet.sims[iccid].status
        assert emu.stats.usage_by_iccid[iccid] == 1

        # Verification is on: without the certificate the server is not trusted...
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.post(emu.url + "/v2/token", data=CREDENTIALS)
            # ...and plain http is not served on the https port.
            with pytest.raises(aiohttp.ClientError):
                await http.post(
                    emu.url.replace("https://", "http://") + "/v2/token", data=CREDENTIALS
                )
        assert emu.stats.tokens_issued == 1


async def test_plain_http_stays_the_default() -> None:
    async with Emulator(fleet=Fleet.generate(1)) as emu:
        assert emu.url.startswith("http://127.0.0.1:")
        assert emu.cert_path is None
        with pytest.raises(RuntimeError):
            emu.ssl_context()


async def test_the_written_certificate_verifies_every_loopback_name(tmp_path: Path) -> None:
    cert = tmp_path / "certs" / "emu.pem"
    certificates = make_certificates()
    async with Emulator(
        fleet=Fleet.generate(1), limits=ServerLimits.unlimited(), tls=certificates, cert_out=cert
    ) as emu:
        assert emu.cert_path == cert and cert.read_bytes() == certificates.ca_pem
        # What a user does with the written file: a default context plus that file.
        trust = ssl.create_default_context(cafile=str(cert))
        port = emu.url.rsplit(":", 1)[1]
        async with aiohttp.ClientSession() as http:
            for host in ("127.0.0.1", "localhost"):
                async with http.post(
                    f"https://{host}:{port}/v2/token", json=CREDENTIALS, ssl=trust
                ) as resp:
                    assert resp.status == 200
    assert emu.stats.tokens_issued == 2
    # The certificate written where asked outlives the server; its private key does not.
    assert cert.exists()


@contextlib.asynccontextmanager
async def cli_emulator(*args: str) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """``esim-async emulator ARGS`` in a subprocess; yields its URL once it listens."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from esim_async.cli import main; main()",
        "emulator",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert "listening on " in line, line
        yield line.split("listening on ")[1].split()[0], proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)


async def test_the_command_serves_tls_and_writes_the_certificate(tmp_path: Path) -> None:
    cert = tmp_path / "emu.pem"
    async with cli_emulator(
        "--tls", "--port", "0", "--fleet", "3", "--cert-out", str(cert), "--duration", "30"
    ) as (url, _):
        assert url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as http:
            async with http.post(url + "/v2/token", json=CREDENTIALS, ssl=trust) as resp:
                assert resp.status == 200
                token = (await resp.json())["data"]["access_token"]
            async with http.get(
                url + "/v2/packages?filter[country]=US",
                headers={"Authorization": f"Bearer {token}"},
                ssl=trust,
            ) as resp:
                assert resp.status == 200
                body = await resp.json()
        codes = [c["country_code"] for c in body["data"][0]["operators"][0]["countries"]]
        assert codes == ["US"]


def test_cert_out_needs_tls(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from esim_async.cli import main

    result = CliRunner().invoke(
        main, ["emulator", "--cert-out", str(tmp_path / "x.pem"), "--duration", "0"]
    )
    assert result.exit_code == 2 and "--tls" in result.output
    assert not (tmp_path / "x.pem").exists()

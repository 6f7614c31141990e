"""Secrets stay secret; no pickle, eval or shell in the package."""

from __future__ import annotations

import logging
import re
import traceback
from pathlib import Path

import pytest

from esim_async import AiraloClient, AuthenticationError, NotFoundError
from esim_async.testing import Emulator, Fleet

PACKAGE = Path(__file__).resolve().parents[2] / "esim_async"
SENTINEL = "SENTINEL-SECRET-4711"


async def test_secret_and_token_never_leak(caplog: pytest.LogCaptureFixture) -> None:
    fleet = Fleet.generate(3)
    with caplog.at_level(logging.DEBUG, logger="esim_async"):
        async with Emulator(fleet=fleet, credentials={"cid": SENTINEL}) as emu:
            async with AiraloClient("cid", SENTINEL, base_url=emu.url) as client:
                await client.sims.usage(fleet.iccids()[0])
                token = client._auth._token
                assert token
                texts = [repr(client), repr(client.sims), repr(client._auth), str(client.stats)]
                emu.expire_tokens()  # a 401, a refresh: both logged
                await client.sims.usage(fleet.iccids()[1])
                token2 = client._auth._token
                try:
                    await client.sims.usage("8999999999999999999")
                except NotFoundError as exc:
                    texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
                logging.getLogger("esim_async").debug("echo %s %s", token, SENTINEL)
            async with AiraloClient("cid", "WRONG-" + SENTINEL, base_url=emu.url) as bad:
                try:
                    await bad.sims.usage(fleet.iccids()[0])
                except AuthenticationError as exc:
                    texts += [
                        str(exc),
                        repr(exc),
                        repr(exc.body),
                        "".join(traceback.format_exception(exc)),
                    ]
    texts.append(caplog.text)
    blob = "\n".join(texts)
    for secret in (SENTINEL, token, token2):
        assert secret and secret not in blob
    assert "***" in caplog.text  # the echo was redacted, not dropped


def test_no_pickle_eval_or_shell_in_the_package() -> None:
    forbidden = re.compile(
        r"\bimport pickle\b|\bpickle\.|\beval\(|\bexec\(|os\.system|shell\s*=\s*True|"
        r"\bimport subprocess\b|marshal\.loads"
    )
    hits = [
        f"{p.relative_to(PACKAGE)}:{n}"
        for p in PACKAGE.rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if forbidden.search(line)
    ]
    assert hits == []


def test_tls_verification_cannot_be_switched_off_by_accident() -> None:
    client = AiraloClient("id", "secret")
    assert client._transport._ssl is True  # verify with the system trust store

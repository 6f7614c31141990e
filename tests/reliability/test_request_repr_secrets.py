"""A request's repr never shows the secrets it carries (client secret, voice API key)."""

from __future__ import annotations

import random

from esim_async.transport import Backoff, Request


def test_a_token_request_repr_hides_the_client_secret() -> None:
    req: Request[None] = Request(
        "POST",
        "/v2/token",
        None,  # type: ignore[arg-type]
        token_request=True,
        form={"client_id": "id", "client_secret": "s3cr3t-VALUE", "grant_type": "x"},
    )
    assert "s3cr3t-VALUE" not in repr(req)
    assert "/v2/token" in repr(req)


def test_a_voice_request_repr_hides_the_api_key() -> None:
    req: Request[None] = Request(
        "GET",
        "/voice/users",
        None,  # type: ignore[arg-type]
        headers={"Authorization": "Bearer k3y-VALUE", "Pressone-X-Api-Key": "k3y-VALUE"},
        json={"note": "k3y-VALUE"},
    )
    assert "k3y-VALUE" not in repr(req)


def test_backoff_takes_no_generator_and_compares_by_identity() -> None:
    assert 0.25 <= Backoff(0.5, 4.0, None)(1) <= 0.5
    a, b = Backoff(0.5, 4.0, random.Random(1)), Backoff(0.5, 4.0, random.Random(1))
    assert len({a, b}) == 2


def test_the_command_line_settings_repr_hides_the_client_secret() -> None:
    from esim_async.cli import Settings

    settings = Settings(
        provider="airalo",
        client_id="id",
        client_secret="s3cr3t-VALUE",
        base_url=None,
        sandbox=False,
        company_rate=None,
        iccid_rate=None,
    )
    assert "s3cr3t-VALUE" not in repr(settings)

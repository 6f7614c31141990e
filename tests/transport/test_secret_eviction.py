"""Secrets stay redacted however many others come later, and in the forms a server echoes."""

from __future__ import annotations

from esim_async import AiraloClient
from esim_async._secrets import redact, redact_deep, register_secret
from esim_async.errors import error_from_response


def test_client_secret_stays_redacted_after_many_token_rotations() -> None:
    client = AiraloClient("id", "only-client-secret-0001")
    for n in range(3000):  # tokens come and go; each is registered
        register_secret(f"rotated-token-{n:05d}")
    error = error_from_response(
        422,
        b'{"data": {"client_secret": ["rejected: only-client-secret-0001"]}, "meta": {}}',
        {},
    )
    assert "only-client-secret-0001" not in repr(error.body)
    assert "only-client-secret-0001" not in str(error)
    assert "only-client-secret-0001" not in repr(getattr(error, "fields", {}))
    assert redact("log: only-client-secret-0001") == "log: ***"
    del client


def test_percent_encoded_and_json_escaped_echoes_are_redacted() -> None:
    secret = 'Sx9+k/Qz=Tr7#sec"ret'
    AiraloClient("id", secret)
    form = "client_secret=Sx9%2Bk%2FQz%3DTr7%23sec%22ret"
    assert secret[:4] not in redact(form).replace("client_secret=", "")
    assert redact('{"s": "Sx9+k/Qz=Tr7#sec\\"ret"}') == '{"s": "***"}'
    body = redact_deep({"echo": "Sx9%2Bk%2FQz%3DTr7%23sec%22ret here"})
    assert body == {"echo": "*** here"}

"""Secrets stay out of logged tracebacks: a record logged with its exception (a webhook handler
that raised) is redacted in its traceback text too, not only in its message."""

from __future__ import annotations

import json
import logging

import pytest

from esim_async._secrets import logger, register_secret
from esim_async.webhooks import SIGNATURE_HEADER, WebhookReceiver, sign

SECRET = "ATTACK-MONEY-CLIENT-SECRET-0815"


async def test_a_raising_webhook_handler_never_logs_the_secret_it_echoes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def on_event(event: object) -> None:
        # e.g. a downstream call failed and its error quotes the request it made
        raise RuntimeError(f"downstream refused client_secret={SECRET}")

    receiver = WebhookReceiver(SECRET, on_event, ack="after_handler")
    body = json.dumps({"level": "90%", "iccid": "8944001"}).encode()
    with caplog.at_level(logging.ERROR, logger="esim_async"):
        status, _ = await receiver.handle(body, {SIGNATURE_HEADER: sign(body, SECRET)})
    assert status == 500 and receiver.stats["handler_errors"] == 1
    assert "RuntimeError" in caplog.text  # the traceback is logged...
    assert SECRET not in caplog.text  # ...without the secret
    assert "***" in caplog.text


def test_exception_and_stack_text_of_a_record_are_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = "attack-money-bearer-token-42"
    register_secret(token)
    with caplog.at_level(logging.INFO, logger="esim_async"):
        try:
            raise ValueError(f"echoed Bearer {token}")
        except ValueError:
            logger.exception("call failed")
        logger.info("where %s", token, stack_info=True)
    assert "ValueError" in caplog.text and "Stack (most recent call last)" in caplog.text
    assert token not in caplog.text

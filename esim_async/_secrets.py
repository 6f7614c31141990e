"""Secrets stay secret: a redacting log filter and a registry of values never to show.

The client registers its client secret and every token it receives; the ``esim_async`` logger
replaces any of them in a formatted message with ``***``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

__all__ = ["REDACTED", "RedactingFilter", "logger", "redact", "register_secret"]

REDACTED = "***"
_MIN_LENGTH = 4
_MAX_SECRETS = 1024
_secrets: OrderedDict[str, None] = OrderedDict()

#: The library's one logger. It never receives a secret unredacted.
logger = logging.getLogger("esim_async")


def register_secret(value: str | None) -> None:
    """Never show ``value`` in a log message again (values shorter than 4 chars are ignored)."""
    if not value or len(value) < _MIN_LENGTH:
        return
    _secrets[value] = None
    _secrets.move_to_end(value)
    while len(_secrets) > _MAX_SECRETS:
        _secrets.popitem(last=False)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in sorted(_secrets, key=len, reverse=True):  # longest first: no partial leaks
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Formats the record's message and removes registered secrets from it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not hide the record
            message = str(record.msg)
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


if not any(isinstance(f, RedactingFilter) for f in logger.filters):
    logger.addFilter(RedactingFilter())

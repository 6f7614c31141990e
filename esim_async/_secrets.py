"""Secrets stay secret: a registry of values never to show, redacted from the ``esim_async``
logger's messages and from errors built from a provider's answer (:func:`redact_deep`).

The registry keeps the most recent registrations; the secrets an object uses right now (a
client's bearer token) stay redacted for as long as it lives (:func:`register_holder`).
"""

from __future__ import annotations

import itertools
import json
import logging
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, quote_plus

__all__ = [
    "REDACTED",
    "RedactingFilter",
    "SecretHolder",
    "logger",
    "redact",
    "redact_deep",
    "register_holder",
    "register_secret",
]

T = TypeVar("T")

REDACTED = "***"
_MIN_LENGTH = 4
_MAX_SECRETS = 1024
#: How deep :func:`redact_deep` walks a decoded body; anything deeper is shown as ``***``.
_MAX_DEPTH = 64
_secrets: OrderedDict[str, None] = OrderedDict()


class SecretHolder(Protocol):
    """An object that knows which secrets it is using right now."""

    def current_secrets(self) -> Iterable[str]:
        """The secrets in use (e.g. the current bearer token)."""
        ...


_holders: weakref.WeakSet[SecretHolder] = weakref.WeakSet()

#: The library's one logger. It never receives a secret unredacted.
logger = logging.getLogger("esim_async")


def _variants(value: str) -> set[str]:
    """``value`` and the forms a server may echo it in: percent-encoded (form bodies, query
    strings) and JSON-escaped."""
    return {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}


def register_secret(value: str | None) -> None:
    """Never show ``value`` in a log message again (values shorter than 4 chars are ignored),
    nor its percent-encoded or JSON-escaped forms."""
    if not value or len(value) < _MIN_LENGTH:
        return
    for form in _variants(value):
        _secrets[form] = None
        _secrets.move_to_end(form)
    while len(_secrets) > _MAX_SECRETS:
        _secrets.popitem(last=False)


def register_holder(holder: SecretHolder) -> None:
    """Redact whatever ``holder.current_secrets()`` returns, for as long as ``holder`` lives
    (it is held weakly)."""
    _holders.add(holder)


def _found_in(text: str) -> list[str]:
    """The registered and held secrets occurring in ``text``, longest first."""
    if not text:
        return []
    found = {secret for secret in _secrets if secret in text}
    for holder in list(_holders):
        for held in holder.current_secrets():
            if len(held) >= _MIN_LENGTH:
                found.update(form for form in _variants(held) if form in text)
    return sorted(found, key=len, reverse=True)  # longest first: no partial leaks


def _replace(text: str, found: list[str]) -> str:
    for secret in found:
        text = text.replace(secret, REDACTED)
    return text


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    found = _found_in(text)
    return _replace(text, found) if found else text


def _strings(value: Any, depth: int = 0) -> Iterator[str | None]:
    """The strings of ``value``, keys included; ``None`` for a container too deep to look at."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping | list | tuple):
        if depth >= _MAX_DEPTH:
            yield None
            return
        if isinstance(value, Mapping):
            value = itertools.chain.from_iterable(value.items())
        for item in value:
            yield from _strings(item, depth + 1)


def _rebuild(value: Any, found: list[str], depth: int) -> Any:
    if isinstance(value, str):
        return _replace(value, found)
    if not isinstance(value, Mapping | list | tuple):
        return value
    if depth >= _MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            _rebuild(key, found, depth + 1): _rebuild(item, found, depth + 1)
            for key, item in value.items()
        }
    items = [_rebuild(item, found, depth + 1) for item in value]
    return items if isinstance(value, list) else tuple(items)


def redact_deep(value: T) -> T:
    """``value`` (a string, or mappings, lists and tuples of them, e.g. a decoded JSON body)
    with every registered secret replaced by ``***`` in every string, keys included.

    Returns ``value`` itself when it holds no secret; otherwise a copy (mappings become
    ``dict``). Containers nested deeper than 64 levels are replaced by ``***`` in the copy.
    """
    strings = list(_strings(value))
    found = _found_in("\x00".join(text for text in strings if text is not None))
    if not found and None not in strings:
        return value
    result: T = _rebuild(value, found, 0)
    return result


class RedactingFilter(logging.Filter):
    """Formats the record's message and removes registered secrets from it, and from the text
    of its exception (traceback) and stack.

    A traceback that holds a secret is formatted here, redacted, and left in ``exc_text``, the
    text a ``logging.Formatter`` shows instead of formatting the exception itself.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not hide the record
            message = str(record.msg)
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        if record.exc_info and not record.exc_text:
            text = _formatter.formatException(record.exc_info)
            shown = redact(text)
            if shown != text:
                record.exc_text = shown
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


#: Formats a record's traceback to look for secrets in it (as the default formatter shows it).
_formatter = logging.Formatter()


if not any(isinstance(f, RedactingFilter) for f in logger.filters):
    logger.addFilter(RedactingFilter())

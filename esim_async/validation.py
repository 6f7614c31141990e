"""Local checks made before any request (and before any request budget is spent)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from datetime import date
from urllib.parse import urlsplit

from .errors import InvalidIccidError, InvalidRequestError

__all__ = [
    "date_range",
    "validate_choice",
    "validate_country",
    "validate_date",
    "validate_email",
    "validate_iccid",
    "validate_includes",
    "validate_language",
    "validate_page_size",
    "validate_quantity",
    "validate_slug",
    "validate_text",
    "validate_url",
]


def validate_iccid(value: object, *, min_length: int = 18, max_length: int = 22) -> str:
    """Return ``value`` if it is a well-formed ICCID, else raise :class:`InvalidIccidError`.

    An ICCID here is ``min_length``-``max_length`` ASCII digits (18-22 by default; sandbox
    ICCIDs can be shorter). Nothing else is accepted: no whitespace, signs, Unicode digits,
    separators, or anything that could change the request URL. No checksum is tested.
    """
    if not isinstance(value, str):
        raise InvalidIccidError(
            f"ICCID must be a str of ASCII digits, got {type(value).__name__}", iccid=value
        )
    n = len(value)
    if not (value.isascii() and value.isdigit()):
        shown = value if n <= 40 else value[:37] + "..."
        raise InvalidIccidError(
            f"ICCID must contain only ASCII digits 0-9, got {shown!r}", iccid=value
        )
    if not (min_length <= n <= max_length):
        shown = value if n <= 40 else value[:37] + "..."
        raise InvalidIccidError(
            f"ICCID must have {min_length}-{max_length} digits, got {n} ({shown!r})",
            iccid=value,
        )
    return value


# ------------------------------------------------------------------ other request fields


def _refused(field: str, rule: str) -> InvalidRequestError:
    """The error for a ``field`` that is not ``rule``."""
    return InvalidRequestError(f"{field} must be {rule}", field=field)


_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_EMAIL = re.compile(r"[^@\s/\\?#]+@[^@\s/\\?#]+\.[^@\s/\\?#]+")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def validate_slug(value: object, *, field: str) -> str:
    """A package id or slug: letters, digits, ``.``, ``_``, ``-``; at most 100 characters."""
    if not isinstance(value, str) or not _SLUG.fullmatch(value) or not value.isascii():
        raise _refused(field, f"1-100 ASCII letters, digits, '.', '_' or '-', got {value!r:.60}")
    return value


def validate_quantity(value: object, *, field: str = "quantity", maximum: int = 50) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (1 <= value <= maximum):
        raise _refused(field, f"an int from 1 to {maximum}, got {value!r}")
    return value


def validate_email(value: object, *, field: str) -> str:
    if not isinstance(value, str) or len(value) > 254 or not _EMAIL.fullmatch(value):
        raise _refused(field, f"an email address, got {value!r:.60}")
    return value


def validate_choice(value: object, choices: Iterable[str], *, field: str) -> str:
    allowed = tuple(choices)
    if value not in allowed:
        raise _refused(field, f"one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def validate_includes(
    values: Iterable[str] | str | None, allowed: Iterable[str], *, field: str = "include"
) -> str | None:
    """A comma-separated ``include`` value from a subset of ``allowed``."""
    if values is None:
        return None
    items = [values] if isinstance(values, str) else list(values)
    for item in items:
        validate_choice(item, allowed, field=field)
    return ",".join(items) if items else None


def validate_country(value: object, *, field: str = "country") -> str:
    if not isinstance(value, str) or not _COUNTRY.fullmatch(value):
        raise _refused(field, f"an ISO 3166-1 alpha-2 code such as 'US', got {value!r:.20}")
    return value.upper()


def validate_text(value: object, *, field: str, max_length: int = 255) -> str:
    if not isinstance(value, str) or len(value) > max_length:
        raise _refused(field, f"a str of at most {max_length} characters")
    return value


def date_range(value: tuple[date | str, date | str] | str | None, *, field: str) -> str | None:
    """``"YYYY-MM-DD - YYYY-MM-DD"`` from a (from, to) pair of dates or ISO strings."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(" - ")]
    else:
        parts = [d.isoformat() if isinstance(d, date) else str(d) for d in value]
    if len(parts) != 2 or not all(_is_date(p) for p in parts):
        raise _refused(field, "(from, to) dates or 'YYYY-MM-DD - YYYY-MM-DD'")
    return f"{parts[0]} - {parts[1]}"


def _is_date(text: str) -> bool:
    """``text`` is ``YYYY-MM-DD`` and names a day of the calendar."""
    if _DATE.fullmatch(text):
        with contextlib.suppress(ValueError):
            date.fromisoformat(text)
            return True
    return False


def validate_date(value: object, *, field: str) -> str:
    """A day as ``YYYY-MM-DD``: a :class:`~datetime.date` or a string naming a real day."""
    text = value.isoformat() if isinstance(value, date) else value
    if not isinstance(text, str) or not _is_date(text):
        raise _refused(field, "a date as YYYY-MM-DD")
    return text


def validate_url(value: object, *, field: str) -> str:
    """An ``http(s)://`` URL with a host, without whitespace or control characters (webhook
    addresses)."""
    if (
        isinstance(value, str)
        and value.startswith(("https://", "http://"))
        and value.isprintable()
        and not any(char.isspace() for char in value)
    ):
        try:
            parts = urlsplit(value)
            host = parts.hostname
            parts.port  # noqa: B018 (a port out of range raises ValueError)
        except ValueError:
            host = None
        if host:
            return value
    raise _refused(field, "an http(s) URL with a host")


_LANGUAGE = re.compile(r"[A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8}){0,3}")


def validate_language(value: object, *, field: str = "language") -> str:
    """A language code for ``Accept-Language`` (``"de"``, ``"zh-CN"``, ``"es-419"``): ASCII
    letters, then up to three ``-`` parts of letters and digits; nothing a header could not
    carry."""
    if not isinstance(value, str) or not _LANGUAGE.fullmatch(value):
        raise _refused(field, f"a language code such as 'de' or 'zh-CN', got {value!r:.20}")
    return value


def validate_page_size(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not (1 <= value <= 10_000):
        raise InvalidRequestError("page_size must be an int from 1 to 10,000", field="page_size")
    return value

"""Local checks made before any request (and before any request budget is spent)."""

from __future__ import annotations

from .errors import InvalidIccidError

__all__ = ["validate_iccid"]


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

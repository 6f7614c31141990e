"""The usage of one eSIM: data, voice and text left."""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec

from ._base import Model, utc

__all__ = ["Usage", "UsageStatus"]


class UsageStatus(enum.StrEnum):
    """Status of an eSIM's current package.

    Values the docs do not list decode as well: the raw string is kept as the member's value
    (``UsageStatus("SOMETHING_NEW").value == "SOMETHING_NEW"``), so a new status never breaks
    decoding.
    """

    NOT_ACTIVE = "NOT_ACTIVE"
    ACTIVE = "ACTIVE"
    FINISHED = "FINISHED"
    UNKNOWN = "UNKNOWN"
    EXPIRED = "EXPIRED"
    #: The eSIM was recycled: terminal, all counters are 0.
    RECYCLED = "RECYCLED"

    @classmethod
    def _missing_(cls, value: object) -> UsageStatus | None:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value
        member._value_ = value
        return member

    @property
    def is_known(self) -> bool:
        """False for a value the docs do not list."""
        return self._name_ in type(self).__members__


class Usage(Model, gc=False):
    """Usage of an eSIM, as ``GET /sims/{iccid}/usage`` reports it.

    Units: ``remaining``/``total`` in MB, ``remaining_voice``/``total_voice`` in minutes,
    ``remaining_text``/``total_text`` in SMS. ``expired_at`` is a UTC ``datetime`` or ``None``.

    For unlimited packages the API sends ``remaining`` and ``total`` as 0, which mean nothing:
    when ``is_unlimited`` is true, :attr:`remaining` and :attr:`total` read as ``None``. A
    negative figure (``-1``, the usual "unlimited" marker) is no amount either and reads as
    ``None`` too. The raw numbers stay reachable as :attr:`raw_remaining` and :attr:`raw_total`.
    A package without data (0 MB of 0: a voice and text package) is never low on data.

    A recycled eSIM is a normal answer (``status == UsageStatus.RECYCLED``, counters 0).

    An answer that says nothing (``{"data": {}}``: every figure, date and flag missing or null,
    and no status or ``UNKNOWN``) is not a usage: decoding it fails with
    ``msgspec.ValidationError``, and building such a ``Usage()`` raises ``ValueError``.
    """

    raw_remaining: int | None = msgspec.field(default=None, name="remaining")
    raw_total: int | None = msgspec.field(default=None, name="total")
    expired_at: datetime | None = None
    is_unlimited: bool | None = None
    status: UsageStatus = UsageStatus.UNKNOWN
    remaining_voice: int | None = None
    remaining_text: int | None = None
    total_voice: int | None = None
    total_text: int | None = None
    #: Set by the client, not sent by the API: when this value was fetched (UTC).
    fetched_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.status is UsageStatus.UNKNOWN and self._says_nothing():
            raise ValueError("a usage answer without any figure, date, flag or status")
        if self.expired_at is not None:
            # The API sends naive "YYYY-MM-DD HH:MM:SS" in UTC; offsets are normalised to UTC.
            self.expired_at = utc(self.expired_at)

    def _says_nothing(self) -> bool:
        return (
            self.raw_remaining is None
            and self.raw_total is None
            and self.expired_at is None
            and self.is_unlimited is None
            and self.remaining_voice is None
            and self.remaining_text is None
            and self.total_voice is None
            and self.total_text is None
        )

    def _amount(self, raw: int | None) -> int | None:
        if self.is_unlimited or raw is None or raw < 0:
            return None
        return raw

    @property
    def remaining(self) -> int | None:
        """Data left in MB; ``None`` for unlimited packages (the API's 0 means nothing there)
        and for a negative figure (a marker, not an amount)."""
        return self._amount(self.raw_remaining)

    @property
    def total(self) -> int | None:
        """Data of the package in MB; ``None`` for unlimited packages and for a negative
        figure."""
        return self._amount(self.raw_total)

    @property
    def used(self) -> int | None:
        """Data used in MB; ``None`` for unlimited packages or when a figure is missing (or
        negative)."""
        remaining, total = self.remaining, self.total
        if remaining is None or total is None:
            return None
        return max(0, total - remaining)

    @property
    def fraction_left(self) -> float | None:
        """Share of data left, 0.0-1.0; ``None`` for unlimited packages or a total of 0."""
        remaining, total = self.remaining, self.total
        if remaining is None or not total:
            return None
        return min(1.0, max(0.0, remaining / total))

    @property
    def is_recycled(self) -> bool:
        """True when the eSIM was recycled (terminal: it cannot be used or topped up)."""
        return self.status is UsageStatus.RECYCLED

    def is_low(self, *, fraction: float = 0.1, mb: int | None = None) -> bool:
        """True when a limited package has at most ``fraction`` (or ``mb`` MB) of data left;
        never for a package without data (0 MB of 0: a voice and text package) or without
        figures."""
        remaining = self.remaining
        if remaining is None or (remaining == 0 and self.total == 0):
            return False
        if mb is not None and remaining <= mb:
            return True
        left = self.fraction_left
        return left is not None and left <= fraction

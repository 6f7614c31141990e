"""Account (balance, exchange rates), devices, future orders, vouchers, refunds, notifications."""

from __future__ import annotations

from datetime import datetime

import msgspec

from ._base import Model, to_utc

__all__ = [
    "AirmoneyVoucher",
    "Balance",
    "Balances",
    "Device",
    "EsimVoucher",
    "ExchangeRate",
    "ExchangeRates",
    "FutureOrder",
    "Notification",
    "Refund",
]


class Amount(Model):
    amount: float | None = None
    currency: str | None = None


class Balance(Model):
    """One account balance (the API's camelCase ``availableBalance`` is kept as sent)."""

    name: str | None = None
    available_balance: Amount | None = msgspec.field(default=None, name="availableBalance")


class Balances(Model):
    """``GET /balance`` data: ``balances`` is one object or a list (an empty list without an
    account); :meth:`all` always gives a list."""

    balances: Balance | list[Balance] | None = None

    def all(self) -> list[Balance]:
        value = self.balances
        if value is None:
            return []
        return value if isinstance(value, list) else [value]


class ExchangeRate(Model):
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    #: The mid-market rate (sent as a string, read as a number).
    mid: float | None = None


class ExchangeRates(Model):
    date: str | None = None
    rates: list[ExchangeRate] = msgspec.field(default_factory=list)


class Device(Model):
    """A device known to support eSIMs (``os`` is ``android`` or ``ios``)."""

    os: str | None = None
    brand: str | None = None
    name: str | None = None
    model: str | None = None


class FutureOrder(Model):
    """A scheduled order. Times are ``"YYYY-MM-DD HH:MM"`` in UTC, as the API sends them; the
    order can be cancelled until ``latest_cancellation_date`` (24 h before ``due_date``)."""

    request_id: str
    due_date: str | None = None
    latest_cancellation_date: str | None = None
    quantity: int | None = None
    description: str | None = None
    status: str | None = None
    package_id: str | None = None


class EsimVoucher(Model):
    package_id: str | None = None
    codes: list[str] = msgspec.field(default_factory=list)
    booking_reference: str | None = None


class AirmoneyVoucher(Model):
    id: int | None = None
    code: str | None = None
    usage_limit: int | None = None
    amount: float | None = None
    is_paid: bool | None = None
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        to_utc(self, "created_at")


class Refund(Model):
    """A refund request (reviewed by hand; approved refunds become credit)."""

    refund_id: str
    created_at: str | None = None


class Notification(Model):
    """A notification subscription: ``contact_point`` is the webhook URL or e-mail address."""

    type: str | None = None
    contact_point: str | None = None
    language: str | None = None
    levels: list[int] = msgspec.field(default_factory=list)


class NotificationData(Model):
    notification: Notification | None = None

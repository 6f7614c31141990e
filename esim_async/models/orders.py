"""Orders and top-up orders, and the eSIMs they deliver."""

from __future__ import annotations

from datetime import datetime

import msgspec

from ._base import Model, to_utc
from .catalog import Apn

__all__ = ["AsyncOrder", "Order", "OrderSim", "OrderStatus", "OrderUser"]


class OrderSim(Model):
    """An eSIM as an order delivers it (``sims[]``)."""

    id: int | None = None
    iccid: str | None = None
    created_at: datetime | None = None
    lpa: str | None = None
    imsis: str | None = None
    matching_id: str | None = None
    #: ``LPA:1$<lpa>$<matching_id>``: the content of the installation QR code.
    qrcode: str | None = None
    qrcode_url: str | None = None
    direct_apple_installation_url: str | None = None
    airalo_code: str | None = None
    apn_type: str | None = None
    apn_value: str | None = None
    apn: Apn | None = None
    is_roaming: bool | None = None
    confirmation_code: str | None = None
    msisdn: str | None = None

    def __post_init__(self) -> None:
        to_utc(self, "created_at")


class OrderStatus(Model):
    name: str | None = None
    slug: str | None = None


class OrderUser(Model):
    id: int | None = None
    created_at: datetime | None = None
    name: str | None = None
    email: str | None = None
    mobile: str | None = None
    address: str | None = None
    state: str | None = None
    city: str | None = None
    postal_code: str | None = None
    country_id: int | None = None
    company: str | None = None


class Sharing(Model):
    link: str | None = None
    access_code: str | None = None


class Order(Model):
    """An order or a top-up order (``type`` ``sim`` or ``topup``).

    ``validity`` is in days; ``price`` is per unit. Under discount pricing ``net_price`` is absent
    and ``discount_percentage``, ``discount_amount``, ``unit_paid_price`` and
    ``total_amount_paid`` are set. ``status`` and ``user`` are present when included.
    """

    id: int | None = None
    code: str | None = None
    currency: str | None = None
    package_id: str | None = None
    quantity: int | None = None
    type: str | None = None
    description: str | None = None
    esim_type: str | None = None
    validity: int | None = None
    package: str | None = None
    data: str | None = None
    price: float | None = None
    net_price: float | None = None
    pricing_model: str | None = None
    discount_percentage: float | None = None
    discount_amount: float | None = None
    unit_paid_price: float | None = None
    total_amount_paid: float | None = None
    created_at: datetime | None = None
    manual_installation: str | None = None
    qrcode_installation: str | None = None
    installation_guides: dict[str, str] | None = None
    text: int | None = None
    voice: int | None = None
    brand_settings_name: str | None = None
    sims: list[OrderSim] = msgspec.field(default_factory=list)
    status: OrderStatus | None = None
    user: OrderUser | None = None
    sharing: Sharing | None = None

    def __post_init__(self) -> None:
        to_utc(self, "created_at")


class AsyncOrder(Model):
    """``POST /orders-async`` accepted the order (HTTP 202): the order arrives by webhook.

    Keep ``request_id`` to match the webhook.
    """

    request_id: str
    accepted_at: str | None = None

"""``client.orders``: orders, asynchronous orders and top-ups (writes that spend money)."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, Literal, get_args

from .._secrets import logger
from ..errors import InvalidRequestError
from ..models.orders import AsyncOrder, Order
from ..models.pagination import Page
from ..validation import (
    date_range,
    validate_choice,
    validate_email,
    validate_includes,
    validate_quantity,
    validate_slug,
    validate_text,
    validate_url,
)
from ._base import Resource, optional

if TYPE_CHECKING:
    from ..webhooks import AsyncOrderEvent

__all__ = ["AiraloOrdersResource", "OrdersResource"]

SharingOption = Literal["link", "pdf"]
OrderInclude = Literal["sims", "user", "status"]
OrderStatusFilter = Literal["completed", "failed", "partially_refunded", "refunded"]

_ORDER_INCLUDES: tuple[str, ...] = get_args(OrderInclude)
_ORDER_STATUSES: tuple[str, ...] = get_args(OrderStatusFilter)
_SHARING_OPTIONS: tuple[str, ...] = get_args(SharingOption)
#: What a write whose outcome is unknown tells its caller to do.
OUTCOME_HINT = (
    " Orders have no idempotency key: look for it with client.orders.list(description=...) "
    "using the description you sent (your own order id) before ordering again."
)


def order_body(
    package_id: str,
    quantity: int,
    *,
    type: str | None,
    description: str | None,
    brand_settings_name: str | None,
    to_email: str | None,
    sharing_option: Sequence[str] | None,
    copy_address: Sequence[str] | None,
    webhook_url: str | None = None,
) -> dict[str, Any]:
    """The checked body of an order (fields left ``None`` are not sent; future orders have no
    ``type``)."""
    validate_slug(package_id, field="package_id")
    validate_quantity(quantity)
    optional(validate_choice, type, ("sim",), field="type")
    optional(validate_text, description, field="description")
    optional(validate_text, brand_settings_name, field="brand_settings_name")
    if to_email is not None:
        validate_email(to_email, field="to_email")
        if not sharing_option:
            raise InvalidRequestError(
                "sharing_option is required with to_email", field="sharing_option"
            )
    elif sharing_option or copy_address:
        raise InvalidRequestError("sharing_option and copy_address need to_email", field="to_email")
    for option in sharing_option or ():
        validate_choice(option, _SHARING_OPTIONS, field="sharing_option")
    for address in copy_address or ():
        validate_email(address, field="copy_address")
    return {
        "package_id": package_id,
        "quantity": quantity,
        "type": type,
        "description": description,
        "brand_settings_name": brand_settings_name,
        "to_email": to_email,
        "sharing_option": builtins.list(sharing_option) if sharing_option else None,
        "copy_address": builtins.list(copy_address) if copy_address else None,
        "webhook_url": optional(validate_url, webhook_url, field="webhook_url"),
    }


class OrdersResource(Resource):
    """Orders and top-ups.

    Writes are never retried when their outcome is unknown (timeout, lost connection, 5xx after
    sending): :class:`~esim_async.OutcomeUnknownError` says so, and how to check. Put your own
    order id in ``description``: it is the only handle to find an order again.
    """

    __slots__ = ()

    async def create(
        self,
        package_id: str,
        quantity: int,
        *,
        type: Literal["sim"] = "sim",
        description: str | None = None,
        brand_settings_name: str | None = None,
        to_email: str | None = None,
        sharing_option: Sequence[SharingOption] | None = None,
        copy_address: Sequence[str] | None = None,
    ) -> Order:
        """Order ``quantity`` (1-50) eSIMs of ``package_id``; returns the order with its eSIMs.

        Raises:
            InvalidRequestError: a field failed its local check (nothing was sent).
            BusinessError: e.g. code 11 (insufficient credit), 33/34 (out of stock).
            OutcomeUnknownError: the order may or may not exist; it was not retried.
        """
        body = order_body(
            package_id,
            quantity,
            type=type,
            description=description,
            brand_settings_name=brand_settings_name,
            to_email=to_email,
            sharing_option=sharing_option,
            copy_address=copy_address,
        )
        return await self._data(
            "orders", Order, method="POST", body=body, outcome_hint=OUTCOME_HINT
        )

    async def get(
        self, order_id: int | str, include: Iterable[OrderInclude] | None = ("sims",)
    ) -> Order:
        """One order (``include``: any of ``sims``, ``user``, ``status``)."""
        oid = str(order_id)
        if not oid.isascii() or not oid.isdigit():
            raise InvalidRequestError(
                f"order_id must be digits, got {order_id!r:.40}", field="order_id"
            )
        return await self._data(
            "order",
            Order,
            path_params={"order_id": oid},
            params={"include": validate_includes(include, _ORDER_INCLUDES)},
        )

    def _list_params(
        self,
        include: Iterable[OrderInclude] | None,
        created_at: tuple[date | str, date | str] | str | None,
        code: str | None,
        order_status: OrderStatusFilter | None,
        iccid: str | None,
        description: str | None,
    ) -> dict[str, str | None]:
        return {
            "include": validate_includes(include, _ORDER_INCLUDES),
            "filter[created_at]": date_range(created_at, field="created_at"),
            "filter[code]": optional(validate_text, code, field="code"),
            "filter[order_status]": optional(
                validate_choice, order_status, _ORDER_STATUSES, field="order_status"
            ),
            "filter[iccid]": optional(validate_text, iccid, field="iccid", max_length=22),
            "filter[description]": optional(validate_text, description, field="description"),
        }

    async def list(
        self,
        *,
        include: Iterable[OrderInclude] | None = None,
        created_at: tuple[date | str, date | str] | str | None = None,
        code: str | None = None,
        order_status: OrderStatusFilter | None = None,
        iccid: str | None = None,
        description: str | None = None,
        page_size: int | None = None,
        max_items: int | None = None,
    ) -> AsyncIterator[Order]:
        """Every order matching the filters, page after page (an async iterator).

        ``code``, ``iccid`` and ``description`` match partially; ``created_at`` is a
        ``(from, to)`` pair of dates.
        """
        params = self._list_params(include, created_at, code, order_status, iccid, description)
        async for order in self._paginate(
            "orders", Order, params=params, page_size=page_size, max_items=max_items
        ):
            yield order

    async def page(
        self,
        page: int = 1,
        *,
        include: Iterable[OrderInclude] | None = None,
        created_at: tuple[date | str, date | str] | str | None = None,
        code: str | None = None,
        order_status: OrderStatusFilter | None = None,
        iccid: str | None = None,
        description: str | None = None,
        page_size: int | None = None,
    ) -> Page[Order]:
        """One page of orders with its metadata."""
        params = self._list_params(include, created_at, code, order_status, iccid, description)
        return await self._page("orders", Order, page, params=params, page_size=page_size)

    async def topup(self, package_id: str, iccid: str, description: str | None = None) -> Order:
        """Buy top-up ``package_id`` (from ``sims.topup_packages(iccid)``) for eSIM ``iccid``.

        Raises:
            BusinessError: code 73 when the eSIM was recycled, 23 when the operator disabled
                top-ups.
            OutcomeUnknownError: the top-up may or may not have been bought; not retried.
        """
        validate_slug(package_id, field="package_id")
        self._ctx.validate_iccid(iccid)
        optional(validate_text, description, field="description")
        order: Order = await self._data(
            "topup_order",
            Order,
            method="POST",
            body={"package_id": package_id, "iccid": iccid, "description": description},
            outcome_hint=OUTCOME_HINT,
        )
        # The top-up is bought: a listener that raises is logged, never raised to the caller
        # (who would take the purchase for failed and buy again), and the others still run.
        for listener in tuple(self._ctx.topup_listeners):
            try:
                listener(iccid)
            except Exception:
                logger.exception("a top-up listener raised (the top-up was bought)")
        return order

    def add_topup_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(iccid)`` after each successful :meth:`topup` (a
        :class:`~esim_async.webhooks.WebhookReceiver` with ``client=`` re-arms that eSIM's
        low-data thresholds this way). A listener that raises is logged on the ``esim_async``
        logger; the top-up still returns its order and the other listeners still run."""
        self._ctx.topup_listeners.append(listener)

    def deliver_async_order(self, event: AsyncOrderEvent) -> None:
        """An async order's webhook arrived: resolve the :meth:`wait_async` waiting for it, or
        keep it for one that comes later (a :class:`~esim_async.webhooks.WebhookReceiver`
        with ``client=`` calls this)."""
        self._ctx.async_orders.deliver(event)


class AiraloOrdersResource(OrdersResource):
    """Airalo's orders, plus asynchronous orders."""

    __slots__ = ()

    async def wait_async(self, request_id: str, timeout: float = 300.0) -> AsyncOrderEvent:
        """Wait for the webhook that finishes async order ``request_id``.

        The event reaches the client through a :func:`esim_async.webhooks.webhook_app` created
        with ``client=``; an event that arrived before this call is returned at once.

        Raises:
            WaitTimeoutError: nothing arrived within ``timeout`` seconds.
            TransportError: the client was closed (before or during the wait).
        """
        return await self._ctx.async_orders.wait(request_id, timeout)

    async def create_async(
        self,
        package_id: str,
        quantity: int,
        *,
        webhook_url: str | None = None,
        type: Literal["sim"] = "sim",
        description: str | None = None,
        brand_settings_name: str | None = None,
        to_email: str | None = None,
        sharing_option: Sequence[SharingOption] | None = None,
        copy_address: Sequence[str] | None = None,
    ) -> AsyncOrder:
        """Submit an order to be processed in the background (HTTP 202).

        The finished order arrives by webhook at ``webhook_url`` (or the URL opted in for
        ``async_orders``); keep the returned ``request_id`` to match it.
        """
        body = order_body(
            package_id,
            quantity,
            type=type,
            description=description,
            brand_settings_name=brand_settings_name,
            to_email=to_email,
            sharing_option=sharing_option,
            copy_address=copy_address,
            webhook_url=webhook_url,
        )
        return await self._data(
            "orders_async",
            AsyncOrder,
            method="POST",
            body=body,
            outcome_hint=OUTCOME_HINT,
        )

"""``client.future_orders``: orders scheduled for a date (Airalo)."""

from __future__ import annotations

import builtins
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from ..errors import InvalidRequestError, validation_error
from ..models._base import Envelope
from ..models.account import FutureOrder
from ..validation import validate_choice
from ._base import Resource, optional
from .orders import SharingOption, order_body

__all__ = ["FutureOrdersResource"]

FutureStatus = Literal["pending", "failed", "retry"]
_STATUSES: tuple[str, ...] = get_args(FutureStatus)
_DUE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}")
_FORMAT = "%Y-%m-%d %H:%M"
REQUEST_ID_LENGTH = 25
#: What a scheduling whose outcome is unknown tells its caller to do: until its due date a
#: future order is listed by future_orders.list(), not by orders.list().
FUTURE_OUTCOME_HINT = (
    " Future orders have no idempotency key: look for it among client.future_orders.list() "
    "(pending, failed and retry; match the description you sent, your own order id, and the "
    "due date) before scheduling it again."
)
MAX_CANCEL = 10


def due_date_text(value: datetime | str, *, now: datetime, field: str = "due_date") -> str:
    """``"YYYY-MM-DD HH:MM"`` in UTC, checked against the window the API accepts: from the day
    after tomorrow (UTC) to one year ahead."""
    when = _utc(value, field, "a datetime or 'YYYY-MM-DD HH:MM' (UTC)")
    earliest = (now.astimezone(UTC) + timedelta(days=2)).date()
    if when.date() < earliest:
        raise InvalidRequestError(
            f"{field} must be at least the day after tomorrow in UTC ({earliest})", field=field
        )
    if when > now + timedelta(days=365):
        raise InvalidRequestError(f"{field} must be at most one year ahead", field=field)
    return when.strftime(_FORMAT)


class FutureOrdersResource(Resource):
    """Orders processed on a due date, then delivered like asynchronous orders (by webhook)."""

    __slots__ = ()

    async def create(
        self,
        package_id: str,
        quantity: int,
        due_date: datetime | str,
        *,
        webhook_url: str | None = None,
        description: str | None = None,
        brand_settings_name: str | None = None,
        to_email: str | None = None,
        sharing_option: Sequence[SharingOption] | None = None,
        copy_address: Sequence[str] | None = None,
    ) -> FutureOrder:
        """Schedule an order for ``due_date`` (UTC; day after tomorrow to one year ahead).

        The order is delivered to ``webhook_url`` (or the URL opted in for ``async_orders``).

        Raises:
            InvalidRequestError: a field failed its local check (nothing was sent).
            OutcomeUnknownError: the future order may or may not exist; it was not retried
                (look for it with :meth:`list`, which shows it until its due date).
        """
        body = order_body(
            package_id,
            quantity,
            type=None,
            description=description,
            brand_settings_name=brand_settings_name,
            to_email=to_email,
            sharing_option=sharing_option,
            copy_address=copy_address,
            webhook_url=webhook_url,
        )
        body["due_date"] = due_date_text(due_date, now=self._ctx.utcnow())
        return await self._data(
            "future_orders",
            FutureOrder,
            method="POST",
            body=body,
            encoding="json",
            outcome_hint=FUTURE_OUTCOME_HINT,
        )

    async def list(
        self,
        status: FutureStatus = "pending",
        *,
        from_due_date: datetime | str | None = None,
        to_due_date: datetime | str | None = None,
        page_size: int | None = None,
        max_items: int | None = None,
    ) -> AsyncIterator[FutureOrder]:
        """Future orders not yet processed, by ``status`` (an async iterator)."""
        params: dict[str, str | None] = {
            "status": validate_choice(status, _STATUSES, field="status"),
            "from_due_date": optional(_when, from_due_date, "from_due_date"),
            "to_due_date": optional(_when, to_due_date, "to_due_date"),
        }
        async for item in self._paginate(
            "future_orders",
            FutureOrder,
            params=params,
            page_size=page_size,
            max_items=max_items,
        ):
            yield item

    async def cancel(self, request_ids: Sequence[str]) -> None:
        """Cancel up to 10 future orders (each ``request_id`` is 25 characters), at least 24 h
        before their due date.

        Raises:
            ValidationError: a request id was refused (``.fields``, keyed ``request_ids.<n>``:
                already processed, does not exist...), also when the provider sends that
                field map with a success status: nothing is taken for cancelled unless the
                answer says so.
        """
        ids = builtins.list(request_ids)
        if isinstance(request_ids, str) or not ids or len(ids) > MAX_CANCEL:
            raise InvalidRequestError(
                f"request_ids must be a list of 1 to {MAX_CANCEL} request ids",
                field="request_ids",
            )
        for n, rid in enumerate(ids):
            if not isinstance(rid, str) or len(rid) != REQUEST_ID_LENGTH:
                raise InvalidRequestError(
                    f"request_ids[{n}] must be exactly {REQUEST_ID_LENGTH} characters",
                    field="request_ids",
                )
        if len(set(ids)) != len(ids):
            raise InvalidRequestError("request_ids must be unique", field="request_ids")
        envelope: Envelope[Any] = await self._call(
            "cancel_future_orders",
            Envelope[Any],
            method="POST",
            body={"request_ids": ids},
            encoding="json",
            idempotent=True,
        )
        _refuse_field_errors(envelope, "cancel-future-orders")


def _refuse_field_errors(envelope: Envelope[Any], endpoint: str) -> None:
    """Raise :class:`~esim_async.ValidationError` when a success answer's ``data`` is a field
    map (``{"request_ids.0": "... can not be cancelled."}``): the provider's docs show such
    bodies under success statuses, and a success has no field map."""
    data = envelope.data
    if not isinstance(data, dict) or not data:
        return
    message = envelope.meta.message if envelope.meta is not None else None
    raise validation_error(
        f"{endpoint} answered with a success status but a field error"
        + (f": {message}" if message else ""),
        data,
        status=200,
        message=message,
        body={"data": data, "meta": {"message": message}},
    )


def _utc(value: object, field: str, expected: str) -> datetime:
    """``value`` as a UTC datetime: a datetime (naive: UTC) or ``"YYYY-MM-DD HH:MM"`` naming a
    real minute; anything else is refused as not ``expected``."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and _DUE.fullmatch(value):
        try:
            return datetime.strptime(value, _FORMAT).replace(tzinfo=UTC)
        except ValueError:  # (a month 13, a 30th of February, an hour 25...)
            pass
    raise InvalidRequestError(f"{field} must be {expected}", field=field)


def _when(value: datetime | str, field: str) -> str:
    when = _utc(value, field, "'YYYY-MM-DD HH:MM'")
    return value if isinstance(value, str) else when.strftime(_FORMAT)

"""``client.vouchers``: eSIM vouchers and Airmoney vouchers (Airalo)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

from ..errors import InvalidRequestError
from ..models.account import AirmoneyVoucher, EsimVoucher
from ..validation import validate_quantity, validate_slug, validate_text
from ._base import Resource, optional

__all__ = ["EsimVoucherRequest", "VouchersResource"]

MAX_VOUCHER_QUANTITY = 100
MAX_AMOUNT = 100_000


class EsimVoucherRequest(TypedDict):
    """One line of :meth:`VouchersResource.create_esim`."""

    package_id: str
    quantity: int
    booking_reference: NotRequired[str]


class VouchersResource(Resource):
    """Vouchers: codes your customers redeem for eSIMs or Airmoney. Writes: never retried
    when their outcome is unknown."""

    __slots__ = ()

    async def create_esim(
        self, vouchers: Sequence[EsimVoucherRequest | Mapping[str, Any]]
    ) -> builtins.list[EsimVoucher]:
        """Create eSIM voucher codes: one line per package, quantity 1-100 each."""
        lines = builtins.list(vouchers)
        if not lines:
            raise InvalidRequestError("vouchers must not be empty", field="vouchers")
        body = []
        for n, line in enumerate(lines):
            field = f"vouchers.{n}"
            if not isinstance(line, Mapping):
                raise InvalidRequestError(f"{field} must be a mapping", field=field)
            item: dict[str, Any] = {
                "package_id": validate_slug(line.get("package_id"), field=f"{field}.package_id"),
                "quantity": validate_quantity(
                    line.get("quantity"), field=f"{field}.quantity", maximum=MAX_VOUCHER_QUANTITY
                ),
            }
            if line.get("booking_reference") is not None:
                item["booking_reference"] = validate_text(
                    line["booking_reference"], field=f"{field}.booking_reference"
                )
            body.append(item)
        return await self._data(
            "voucher_esim",
            builtins.list[EsimVoucher],
            method="POST",
            body={"vouchers": body},
            encoding="json",
        )

    async def create_airmoney(
        self,
        amount: int,
        quantity: int = 1,
        *,
        usage_limit: int | None = None,
        voucher_code: str | None = None,
        is_paid: bool | None = None,
    ) -> AirmoneyVoucher:
        """Create Airmoney vouchers worth ``amount`` (1-100,000), ``quantity`` 1-100; a fixed
        ``voucher_code`` (at most 255 characters) allows quantity 1 only."""
        validate_quantity(amount, field="amount", maximum=MAX_AMOUNT)
        validate_quantity(quantity, field="quantity", maximum=MAX_VOUCHER_QUANTITY)
        optional(validate_quantity, usage_limit, field="usage_limit", maximum=MAX_AMOUNT)
        if voucher_code is not None:
            validate_text(voucher_code, field="voucher_code")
            if quantity != 1:
                raise InvalidRequestError("a voucher_code allows quantity 1 only", field="quantity")
        return await self._data(
            "voucher_airmoney",
            AirmoneyVoucher,
            method="POST",
            body={
                "amount": amount,
                "quantity": quantity,
                "usage_limit": usage_limit,
                "voucher_code": voucher_code,
                "is_paid": is_paid,
            },
            encoding="json",
        )

"""``client.account`` and ``client.devices``."""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterable
from datetime import date

from ..errors import InvalidRequestError
from ..models._base import Envelope
from ..models.account import Balance, Balances, Device, ExchangeRates
from ..validation import validate_date
from ._base import Resource, optional

__all__ = ["AccountResource", "AiraloAccountResource", "DevicesResource"]

_CURRENCY = re.compile(r"[A-Za-z]{3}")


class AccountResource(Resource):
    """The account's balances."""

    __slots__ = ()

    async def balance(self) -> Balances:
        """The account's balances (``.all()`` lists them; empty without an account, whether
        the answer's ``data`` holds an empty ``balances`` or is itself an empty list)."""
        envelope: Envelope[Balances | list[Balance]] = await self._call(
            "balance", Envelope[Balances | list[Balance]]
        )
        data = envelope.data
        return data if isinstance(data, Balances) else Balances(balances=data)


class AiraloAccountResource(AccountResource):
    """Airalo's account: balances and exchange rates."""

    __slots__ = ()

    async def exchange_rates(
        self, date: date | str | None = None, to: Iterable[str] | str | None = None
    ) -> ExchangeRates:
        """Exchange rates from USD on ``date`` (default today) to the ``to`` currencies."""
        params = {"date": optional(validate_date, date, field="date")}
        if to is not None:
            codes = [c.strip() for c in to.split(",")] if isinstance(to, str) else builtins.list(to)
            if not codes or not all(isinstance(c, str) and _CURRENCY.fullmatch(c) for c in codes):
                raise InvalidRequestError("to must be 3-letter currency codes", field="to")
            params["to"] = ",".join(c.upper() for c in codes)
        return await self._data("exchange_rates", ExchangeRates, params=params)


class DevicesResource(Resource):
    """Devices known to support eSIMs."""

    __slots__ = ()

    async def compatible(self) -> builtins.list[Device]:
        """The whole list of eSIM-capable devices (no pagination)."""
        return await self._data("compatible_devices", builtins.list[Device])

"""``client.refunds``: refund requests (Airalo)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Literal, get_args

from ..errors import InvalidRequestError
from ..models.account import Refund
from ..validation import validate_choice, validate_email, validate_text
from ._base import Resource, optional

__all__ = ["RefundReason", "RefundsResource"]

RefundReason = Literal[
    "INSTALLATION_FAILURE",
    "NO_COVERAGE",
    "APN_FAILURE",
    "TRIP_CANCELLATION",
    "INTERMITTENT_CONNECTION",
    "BLOCKED_NETWORK",
    "CHANGE_OF_PLAN",
    "DELETED_ESIM",
    "EARLY_EXPIRY",
    "HOTSPOT_NOT_WORKING",
    "IMSI_CHANGE",
    "INCOMPATIBLE_DEVICE",
    "LOCKED_DEVICE",
    "NO_VOICE_TEXT_SERVICES",
    "OVERCHARGED",
    "SLOW_SPEED",
    "TOP_UP_PACKAGE_FAILURE",
    "UNKNOWN_CHARGES",
    "WRONG_PURCHASE",
    "UNABLE_TO_ACCESS_APPS",
    "SERVICE_DEGRADATION",
    "QR_ISSUE_PARTNERS",
    "OTHERS",
]
REASONS: tuple[str, ...] = get_args(RefundReason)
MAX_ICCIDS = 5


class RefundsResource(Resource):
    """Refund requests: reviewed by hand; approved refunds become Airalo credit."""

    __slots__ = ()

    async def create(
        self,
        iccids: Sequence[str],
        reason: RefundReason,
        notes: str | None = None,
        email: str | None = None,
    ) -> Refund:
        """Ask for a refund of up to 5 eSIMs (``notes`` required with reason ``OTHERS``).

        Limited to 1 request per 5 minutes (the stricter documented figure).
        """
        ids = builtins.list(iccids)
        if isinstance(iccids, str) or not ids or len(ids) > MAX_ICCIDS:
            raise InvalidRequestError(
                f"iccids must be a list of 1 to {MAX_ICCIDS} ICCIDs", field="iccids"
            )
        for iccid in ids:
            self._ctx.validate_iccid(iccid)
        validate_choice(reason, REASONS, field="reason")
        if notes is not None:
            validate_text(notes, field="notes")
        elif reason == "OTHERS":
            raise InvalidRequestError("notes are required with reason OTHERS", field="notes")
        optional(validate_email, email, field="email")
        return await self._data(
            "refund",
            Refund,
            method="POST",
            body={"iccids": ids, "reason": reason, "notes": notes, "email": email},
            encoding="form",
        )

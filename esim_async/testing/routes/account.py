"""Account endpoints: ``POST /token``, ``GET /balance``, ``GET /finance/exchange-rates`` and
``POST /refund``."""

from __future__ import annotations

from aiohttp import web

from ..guard import Routes, guarded
from ..http import invalid, now_stamp, ok, read_body, utc_now

__all__ = ["MAX_REFUND_ICCIDS", "REFUND_REASONS", "AccountRoutes"]

#: The refund reasons the provider accepts (the API reference's list for ``POST /v2/refund``).
REFUND_REASONS = frozenset(
    {
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
    }
)
#: Most eSIMs one refund request may name (the API reference: up to 5 per call).
MAX_REFUND_ICCIDS = 5
#: Mid rates ``GET /finance/exchange-rates`` reports from USD (other currencies: ``"1.0"``).
EXCHANGE_RATES = {"AUD": "1.6059162", "GBP": "0.80433592", "EUR": "0.96191527"}


def text(value: object) -> str:
    """A body field as text: strings and numbers as they are, anything else empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


class AccountRoutes(Routes):
    """Handlers for tokens, the balance, exchange rates and refunds."""

    __slots__ = ()

    def routes(self, prefix: str) -> list[web.RouteDef]:
        return [
            web.post(prefix + "/token", self.token),
            web.get(prefix + "/balance", self.balance),
            web.get(prefix + "/finance/exchange-rates", self.exchange_rates),
            web.post(prefix + "/refund", self.refund),
        ]

    @guarded("token", limited=True, auth=None)
    async def token(self, request: web.Request) -> web.StreamResponse:
        """``POST /token``: the token limit and faults apply; no bearer token is needed.

        The credentials come as a form (as documented) or as JSON (as the Node SDK sends them).
        """
        state = self.state
        body = await read_body(request)
        client_id, client_secret, grant_type = (
            text(body.get(name)) for name in ("client_id", "client_secret", "grant_type")
        )
        if not client_id:
            return invalid({"client_id": "The client id field is required."})
        credentials = state.credentials
        if credentials is not None and client_id not in credentials:
            return invalid({"client_id": "The selected client id is invalid."})
        expected = credentials.get(client_id) if credentials is not None else None
        if (
            not client_secret
            or (expected is not None and client_secret != expected)
            or grant_type != "client_credentials"
        ):
            return web.json_response(
                {"data": [], "meta": {"message": "Client authentication failed"}}, status=401
            )
        token = state.issue_token(client_id, client_secret)
        return ok(
            {
                "token_type": "Bearer",
                "expires_in": state.token_ttl,
                "access_token": token,
            }
        )

    @guarded("balance")
    async def balance(self, request: web.Request) -> web.StreamResponse:
        """``GET /balance``: the state's ``balance`` in USD."""
        return ok(
            {
                "balances": {
                    "name": "main",
                    "availableBalance": {"amount": self.state.balance, "currency": "USD"},
                }
            }
        )

    @guarded("exchange_rates")
    async def exchange_rates(self, request: web.Request) -> web.StreamResponse:
        """``GET /finance/exchange-rates``: USD mid rates for ``to`` (default: all known)."""
        wanted = [c for c in request.query.get("to", "").split(",") if c] or list(EXCHANGE_RATES)
        return ok(
            {
                "date": request.query.get("date", utc_now().date().isoformat()),
                "rates": [
                    {"from": "USD", "mid": EXCHANGE_RATES.get(c, "1.0"), "to": c} for c in wanted
                ],
            }
        )

    @guarded("refund", limited=True)
    async def refund(self, request: web.Request) -> web.StreamResponse:
        """``POST /refund``: 1 to :data:`MAX_REFUND_ICCIDS` of the company's eSIMs and a
        documented reason; 202 when accepted."""
        state = self.state
        body = await self.recorded_body(request, "refund")
        iccids = body.get("iccids") or []
        if not iccids:
            return web.json_response(
                {"data": [], "meta": {"message": "The iccids field is required."}}, status=422
            )
        if not isinstance(iccids, list) or not all(isinstance(i, str) for i in iccids):
            return invalid({"iccids": "The iccids must be an array of ICCIDs."})
        if len(iccids) > MAX_REFUND_ICCIDS:
            return invalid(
                {"iccids": f"The iccids may not have more than {MAX_REFUND_ICCIDS} items."}
            )
        foreign = [i for i in iccids if i not in state.fleet]
        if foreign:
            return web.json_response(
                {
                    "data": [],
                    "meta": {
                        "message": "The following ICCIDs do not belong to your company: "
                        + ", ".join(foreign)
                    },
                },
                status=422,
            )
        if body.get("reason") not in REFUND_REASONS:
            return invalid({"reason": "The selected reason is invalid."})
        refund = {"refund_id": str(10000 + len(state.refunds)), "created_at": now_stamp()[:16]}
        state.refunds.append({**refund, **body})
        return ok(refund, status=202)

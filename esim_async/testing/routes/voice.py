"""PressOne's voice-only API under ``/api/third-party/partner``: available numbers, claim,
renew and the user list.

It has its own authentication: the API key in ``Pressone-X-Api-Key`` and again as the bearer
token (``state.voice_api_key`` ``None`` accepts any key). Like every other endpoint, each arrival
is counted (``voice_numbers``, ``voice_claim``, ``voice_renew``, ``voice_users``), told to the
``on_request`` hook, and meets the faults queued for its name (``emu.inject("voice_renew",
"drop")``).
"""

from __future__ import annotations

from aiohttp import web

from ..guard import Routes, guarded
from ..http import read_body
from ..state import EmulatorState

__all__ = ["VOICE_PREFIX", "VoiceRoutes", "api_key_denied"]

VOICE_PREFIX = "/api/third-party/partner"
#: How many numbers the emulator has to offer.
NUMBERS = 25


def api_key_denied(state: EmulatorState, request: web.Request) -> web.Response | None:
    """The 401 for a missing or wrong API key, else ``None``. A refused key is not counted in
    ``stats.unauthorized``, which counts the data API's bearer-token refusals."""
    key = request.headers.get("Pressone-X-Api-Key", "")
    bearer = request.headers.get("Authorization", "")
    expected = state.voice_api_key
    if not key or bearer != f"Bearer {key}" or (expected is not None and key != expected):
        return web.json_response({"detail": "Invalid API key."}, status=401)
    return None


class VoiceRoutes(Routes):
    """Handlers for the voice-only API."""

    __slots__ = ()

    def routes(self, prefix: str) -> list[web.RouteDef]:
        return [
            web.get(prefix + "/available-numbers/", self.numbers),
            web.post(prefix + "/claim-number/", self.claim),
            web.post(prefix + "/renew-number/", self.renew),
            web.get(prefix + "/user/", self.users),
        ]

    @guarded("voice_numbers", auth=api_key_denied)
    async def numbers(self, request: web.Request) -> web.StreamResponse:
        """``GET /available-numbers/``: numbers nobody has claimed, page ``page_index`` (from 1)
        of ``page_size`` (10) of them."""
        page = _page(request, default_size=10)
        if isinstance(page, web.Response):
            return page
        start, size = page
        claimed = {u.get("phone_number") for u in self.state.voice_users.values()}
        numbers = [
            {"phone_number": f"+234800000{n:04d}", "country_code": "NG"}
            for n in range(NUMBERS)
            if f"+234800000{n:04d}" not in claimed
        ]
        return web.json_response(
            {"data": numbers[start : start + size], "total": len(numbers), "page_size": size}
        )

    @guarded("voice_claim", auth=api_key_denied)
    async def claim(self, request: web.Request) -> web.StreamResponse:
        """``POST /claim-number/``: a user on a trial subscription, keyed by e-mail; 201. An
        e-mail that already claimed a number, or a number already claimed, is refused (400)."""
        body = await read_body(request)
        email = body.get("email")
        if not email:
            return web.json_response({"email": ["This field is required."]}, status=400)
        users = self.state.voice_users
        if str(email) in users:
            return web.json_response(
                {"email": ["A number was already claimed with this email."]}, status=400
            )
        phone = body.get("phone_number")
        if phone and any(u.get("phone_number") == phone for u in users.values()):
            return web.json_response(
                {"phone_number": ["This number has already been claimed."]}, status=400
            )
        user = {
            "id": len(users) + 1,
            "email": email,
            "mobile": body.get("mobile"),
            "first_name": body.get("first_name"),
            "last_name": body.get("last_name"),
            "phone_number": body.get("phone_number"),
            "subscription": {"status": "trial", "plan": "basic", "renewed": 0},
        }
        users[str(email)] = user
        return web.json_response({"message": "Number claimed", "data": user}, status=201)

    @guarded("voice_renew", auth=api_key_denied)
    async def renew(self, request: web.Request) -> web.StreamResponse:
        """``POST /renew-number/``: the subscription becomes active; 404 for an unknown e-mail."""
        body = await read_body(request)
        user = self.state.voice_users.get(str(body.get("email")))
        if user is None:
            return web.json_response(
                {"message": "No number was claimed with this email."}, status=404
            )
        user["subscription"] = {
            **user["subscription"],
            "status": "active",
            "renewed": user["subscription"]["renewed"] + 1,
        }
        return web.json_response({"message": "Subscription renewed", "data": user})

    @guarded("voice_users", auth=api_key_denied)
    async def users(self, request: web.Request) -> web.StreamResponse:
        """``GET /user/``: every user, or those matching ``email`` / ``mobile``; one page of
        them when ``page_size`` is given."""
        users = list(self.state.voice_users.values())
        for key in ("email", "mobile"):
            if request.query.get(key):
                users = [u for u in users if u.get(key) == request.query[key]]
        page = _page(request, default_size=len(users) or 1)
        if isinstance(page, web.Response):
            return page
        start, size = page
        return web.json_response({"data": users[start : start + size], "total": len(users)})


def _page(request: web.Request, *, default_size: int) -> tuple[int, int] | web.Response:
    """``(offset, size)`` of the page ``page_index`` (from 1; below 1 is the first page) and
    ``page_size`` ask for, or the 400 for a value that is not a whole number or a size below 1."""
    values: dict[str, int] = {}
    for name, default in (("page_index", 1), ("page_size", default_size)):
        try:
            values[name] = int(request.query.get(name, str(default)))
        except ValueError:
            return web.json_response({name: ["A valid integer is required."]}, status=400)
    size = values["page_size"]
    if size < 1:
        return web.json_response(
            {"page_size": ["Ensure this value is greater than or equal to 1."]}, status=400
        )
    return (max(values["page_index"], 1) - 1) * size, size

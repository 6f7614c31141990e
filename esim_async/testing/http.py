"""Request and response helpers every route module uses: bodies, the providers' error shapes,
Laravel pagination, timestamps, request ids and an eSIM's payload."""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from .clock import utc_now
from .fleet import SimRecord, stamp

__all__ = [
    "NOT_FOUND",
    "REQUEST_ID_ALPHABET",
    "business",
    "form_fields",
    "invalid",
    "language",
    "new_request_id",
    "not_found",
    "now_stamp",
    "ok",
    "paginate",
    "read_body",
    "recycled",
    "sim_json",
    "utc_now",
]

#: The body of a 404: ``{"data": [], "meta": {"message": "messages.resource_not_found"}}``.
NOT_FOUND: dict[str, Any] = {"data": [], "meta": {"message": "messages.resource_not_found"}}
#: Characters of the 25-character request ids of async and future orders.
REQUEST_ID_ALPHABET = string.ascii_letters + string.digits + "-_"


def now_stamp() -> str:
    """The current UTC time as ``"YYYY-MM-DD HH:MM:SS"``."""
    return stamp(utc_now())


def new_request_id() -> str:
    """A fresh 25-character request id."""
    return "".join(secrets.choice(REQUEST_ID_ALPHABET) for _ in range(25))


#: ``name[a][]`` -> ``("name", "[a][]")``: a form key and its PHP-style bracket suffix.
_BRACKETED = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])+)$")
_BRACKET = re.compile(r"\[([^\[\]]*)\]")
#: Deepest bracket nesting read as structure; deeper keys stay plain keys.
MAX_FORM_DEPTH = 8


def _assign(node: dict[str, Any], parts: list[str], value: str) -> None:
    """Put ``value`` at the path ``parts``; an empty part appends (``name[]``)."""
    head, rest = parts[0], parts[1:]
    if head == "":
        head = str(len(node))
    if not rest:
        node[head] = value
        return
    child = node.get(head)
    if not isinstance(child, dict):
        child = {}
        node[head] = child
    _assign(child, rest, value)


def _listify(value: Any) -> Any:
    """Nested dicts whose keys are all indices become lists, in index order."""
    if not isinstance(value, dict):
        return value
    if value and all(k.isdigit() for k in value):
        return [_listify(value[k]) for k in sorted(value, key=int)]
    return {k: _listify(v) for k, v in value.items()}


def form_fields(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Form fields as a dict, the way Laravel reads them.

    A repeated plain key keeps its last value; ``name[]`` appends to a list; PHP's indexed and
    nested keys (``sharing_option[0]``, ``vouchers[0][package_id]``) build lists and objects.
    """
    out: dict[str, Any] = {}
    for key, value in pairs:
        match = _BRACKETED.match(key)
        parts = [match.group(1), *_BRACKET.findall(match.group(2))] if match else []
        if not parts or len(parts) > MAX_FORM_DEPTH:
            out[key] = value
            continue
        if not isinstance(out.get(parts[0]), dict):
            out[parts[0]] = {}
        _assign(out[parts[0]], parts[1:], value)
    return {k: _listify(v) for k, v in out.items()}


def _json_fields(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _urlencoded_fields(raw: bytes) -> dict[str, Any] | None:
    text = raw.decode("utf-8", errors="replace").strip()
    if not text or "=" not in text:
        return None
    return form_fields(parse_qsl(text, keep_blank_values=True)) or None


async def read_body(request: web.Request) -> dict[str, Any]:
    """The request's fields, from a JSON, form-urlencoded or multipart body.

    The declared content type is tried first, then the other encoding: the official PHP SDK
    sends form bodies labelled ``application/json``, and the API takes them. A body that is
    neither gives no fields (so the handler answers with its missing-field errors).
    """
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        return form_fields((key, str(value)) for key, value in form.items())
    raw = await request.read()
    if not raw:
        return {}
    readers = (_json_fields, _urlencoded_fields)
    if "json" not in request.content_type:
        readers = readers[::-1]
    for reader in readers:
        fields = reader(raw)
        if fields is not None:
            return fields
    return {}


def language(request: web.Request, default: str = "en") -> str:
    """The primary language ``Accept-Language`` asks for, upper-case (``"EN"`` when none)."""
    header = request.headers.get("Accept-Language", "")
    first = header.split(",")[0].split(";")[0].strip()
    return (first.split("-")[0] or default).upper()


def ok(data: Any, message: str = "success", status: int = 200) -> web.Response:
    """``data`` in the providers' envelope (200 unless ``status`` says otherwise)."""
    return web.json_response({"data": data, "meta": {"message": message}}, status=status)


def invalid(fields: dict[str, str]) -> web.Response:
    """422 with a validation field map."""
    return web.json_response(
        {"data": fields, "meta": {"message": "the parameter is invalid"}}, status=422
    )


def business(code: int, reason: str) -> web.Response:
    """422 with a business error ``{"code": ..., "reason": ...}``."""
    return web.json_response({"code": code, "reason": reason}, status=422)


def not_found() -> web.Response:
    """404 with the providers' not-found body."""
    return web.json_response(NOT_FOUND, status=404)


def paginate(
    request: web.Request, items: list[Any], *, base: str, object_pages: bool = False
) -> dict[str, Any]:
    """A Laravel page of ``items`` for the request's ``limit`` and ``page``.

    With ``object_pages``, pages from the second on key their items by index (a documented
    quirk of the catalogue). A non-integer ``limit`` or ``page`` answers 422 naming each such
    field; a ``page`` below 1 is the first page and a ``limit`` below 1 is 1, as Laravel's
    paginator reads them.
    """
    values: dict[str, int] = {}
    errors: dict[str, str] = {}
    for name, default in (("limit", "25"), ("page", "1")):
        try:
            values[name] = int(request.query.get(name, default))
        except ValueError:
            errors[name] = f"The {name} must be an integer."
    if errors:
        raise web.HTTPUnprocessableEntity(
            text=json.dumps({"data": errors, "meta": {"message": "the parameter is invalid"}}),
            content_type="application/json",
        )
    limit = max(1, values["limit"])
    page = max(1, values["page"])
    last = max(1, -(-len(items) // limit))
    chunk = items[(page - 1) * limit : page * limit]
    start = (page - 1) * limit
    data: Any = chunk
    if object_pages and page >= 2:
        data = {str(start + i): item for i, item in enumerate(chunk)}
    # `links` deliberately name another host: clients must not follow them.
    other = "https://sandbox-partners-api.airalo.com/v1"
    return {
        "data": data,
        "links": {
            "first": f"{other}{base}?page=1",
            "last": f"{other}{base}?page={last}",
            "prev": f"{other}{base}?page={page - 1}" if page > 1 else None,
            "next": f"{other}{base}?page={page + 1}" if page < last else None,
        },
        "meta": {
            "message": "success",
            "current_page": page,
            "from": start + 1 if chunk else None,
            "last_page": last,
            "path": f"{other}{base}",
            "per_page": str(limit),
            "to": start + len(chunk) if chunk else None,
            "total": len(items),
        },
    }


def sim_json(sim: SimRecord) -> dict[str, Any]:
    """An eSIM as ``GET /sims/{iccid}`` (and an order's ``sims`` list) shows it."""
    return {
        "id": int(sim.iccid[-6:]),
        "created_at": sim.created_at,
        "iccid": sim.iccid,
        "lpa": "lpa.emulator.test",
        "imsis": None,
        "matching_id": f"M{sim.iccid[-8:]}",
        "qrcode": f"LPA:1$lpa.emulator.test$M{sim.iccid[-8:]}",
        "qrcode_url": f"https://emulator.test/qr/{sim.iccid}",
        "direct_apple_installation_url": None,
        "voucher_code": None,
        "airalo_code": None,
        "apn_type": "automatic",
        "apn_value": None,
        "is_roaming": True,
        "confirmation_code": None,
        "order": None,
        "brand_settings_name": sim.brand_settings_name,
        "recycled": sim.status == "RECYCLED",
        "recycled_at": sim.recycled_at if sim.status == "RECYCLED" else None,
    }


def recycled(sim: SimRecord) -> web.Response:
    """Business code 73: the eSIM was recycled and can no longer be used or topped up."""
    return business(
        73,
        f"The eSIM with iccid {sim.iccid} has been recycled. It can no "
        "longer be used or topped up.",
    )

"""Request and response helpers every route module uses: bodies, the providers' error shapes,
Laravel pagination, timestamps and request ids."""

from __future__ import annotations

import json
import secrets
import string
from typing import Any

from aiohttp import web

from .clock import utc_now
from .fleet import stamp

__all__ = [
    "NOT_FOUND",
    "REQUEST_ID_ALPHABET",
    "business",
    "invalid",
    "new_request_id",
    "not_found",
    "now_stamp",
    "paginate",
    "read_body",
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


async def read_body(request: web.Request) -> dict[str, Any]:
    """A JSON or form body as a dict (form ``name[]`` fields become lists)."""
    if request.content_type == "application/json":
        body = await request.json()
        return body if isinstance(body, dict) else {}
    form = await request.post()
    out: dict[str, Any] = {}
    for key in form:
        values = [str(v) for v in form.getall(key)]
        if key.endswith("[]"):
            out[key[:-2]] = values
        else:
            out[key] = values[-1]
    return out


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
    quirk of the catalogue). A non-integer ``limit`` or ``page`` answers 422.
    """
    try:
        limit = int(request.query.get("limit", "25"))
        page = int(request.query.get("page", "1"))
    except ValueError:
        raise web.HTTPUnprocessableEntity(
            text=json.dumps(
                {
                    "data": {"limit": "The limit must be an integer."},
                    "meta": {"message": "the parameter is invalid"},
                }
            ),
            content_type="application/json",
        ) from None
    limit = max(1, limit)
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

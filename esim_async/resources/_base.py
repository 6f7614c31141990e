"""What every resource namespace shares: endpoints as declarations on the client's pipeline."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ..errors import InvalidRequestError
from ..limits import Priority
from ..models._base import Envelope, Meta
from ..models.pagination import Page
from ..transport import Request
from ..validation import validate_page_size

if TYPE_CHECKING:
    from ..context import ClientContext

__all__ = ["Resource"]

T = TypeVar("T")


#: (:class:`Envelope` parametrised at run time by a response type)
_ENVELOPE: Any = Envelope


@functools.cache
def decoder(tp: Any) -> msgspec.json.Decoder[Any]:
    """One lenient decoder per response type, built once."""
    return msgspec.json.Decoder(tp, strict=False)


def optional(check: Callable[..., T], value: object, *args: Any, **kw: Any) -> T | None:
    """``check(value, *args, **kw)``, or ``None`` (the parameter is not sent) without a value."""
    return None if value is None else check(value, *args, **kw)


def _items(data: list[T] | dict[str, T]) -> list[T]:
    """``data`` as a list: pages >= 2 of the catalogue may key items by index instead."""
    if isinstance(data, dict):
        return [data[k] for k in sorted(data, key=lambda k: (len(k), k))]
    return data


class Resource:
    """A namespace of endpoints (``client.sims``...): each method declares its request and runs
    it through the client's one pipeline, seen through a
    :class:`~esim_async.context.ClientContext`."""

    __slots__ = ("_ctx",)

    def __init__(self, context: ClientContext) -> None:
        self._ctx = context

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._ctx!r}>"

    async def _call(
        self,
        endpoint: str,
        response: Any,
        *,
        method: str = "GET",
        path_params: Mapping[str, str] | None = None,
        params: Mapping[str, str | None] | None = None,
        body: Mapping[str, Any] | None = None,
        key: str | None = None,
        language: str | None = None,
        idempotent: bool | None = None,
        nullable: tuple[str, ...] = (),
        encoding: str | None = None,
        empty_ok: bool = False,
        outcome_hint: str = "",
        timeout: float | None = None,
        max_retries: int | None = None,
    ) -> Any:
        ctx = self._ctx
        headers = {"Accept-Language": language} if language else None
        form: Sequence[tuple[str, str]] | None = None
        json_body: Any = None
        if body is not None:
            # Absent optional fields are left out; a field in `nullable` is sent as null.
            kept = {k: v for k, v in body.items() if v is not None or k in nullable}
            if (encoding or ctx.profile.write_format) == "form":
                form = _form(kept)
            else:
                json_body = kept
        request: Request[Any] = Request(
            method,
            ctx.path(endpoint, **(path_params or {})),
            decoder(response),
            limiter=ctx.limiter(endpoint),
            key=key,
            priority=Priority.INTERACTIVE,
            idempotent=method in ("GET", "PUT") if idempotent is None else idempotent,
            params={k: v for k, v in (params or {}).items() if v is not None} or None,
            form=form,
            json=json_body,
            headers=headers,
            timeout=timeout,
            max_retries=max_retries,
            account_limiter=ctx.account_limiter,
            outcome_hint=outcome_hint,
            empty_ok=empty_ok,
        )
        return await ctx.request(request, name=endpoint)

    async def _data(self, endpoint: str, data: type[T], **options: Any) -> T:
        """The ``data`` of an endpoint's envelope (``data``: its type); ``options`` as
        :meth:`_call` takes them."""
        envelope: Envelope[T] = await self._call(endpoint, _ENVELOPE[data], **options)
        return envelope.data

    async def _page(
        self,
        endpoint: str,
        item: Any,
        page: int,
        *,
        params: Mapping[str, str | None] | None = None,
        page_size: int | None = None,
        language: str | None = None,
    ) -> Page[Any]:
        """One page of a list endpoint, with its metadata."""
        limit = optional(str, validate_page_size(page_size))
        query = {**(params or {}), "page": str(page), "limit": limit}
        # Requests go to base_url + prefix only: the `links` in responses (which may name
        # another host or API version) are never followed.
        envelope: Envelope[Any] = await self._call(
            endpoint, Envelope[list[item] | dict[str, item]], params=query, language=language
        )
        meta = envelope.meta
        last = meta.last_page if meta is not None and meta.last_page else page
        return Page(_items(envelope.data), page, max(last, page), meta or Meta(), envelope.pricing)

    async def _paginate(
        self,
        endpoint: str,
        item: Any,
        *,
        params: Mapping[str, str | None] | None = None,
        page_size: int | None = None,
        max_items: int | None = None,
        language: str | None = None,
    ) -> AsyncIterator[Any]:
        if max_items is not None and max_items < 0:
            raise InvalidRequestError("max_items must be >= 0", field="max_items")
        validate_page_size(page_size)
        given = 0
        number = 1
        while max_items is None or given < max_items:
            page = await self._page(
                endpoint, item, number, params=params, page_size=page_size, language=language
            )
            for value in page.items if max_items is None else page.items[: max_items - given]:
                given += 1
                yield value
            if not page.items or not page.has_next:
                return
            number += 1


def _form(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Form fields; lists become repeated ``name[]`` fields, booleans ``1``/``0``."""
    fields: list[tuple[str, str]] = []
    for name, value in body.items():
        if value is None:
            fields.append((name, ""))
        elif isinstance(value, list | tuple):
            fields.extend((f"{name}[]", str(v)) for v in value)
        elif isinstance(value, bool):
            fields.append((name, "1" if value else "0"))
        else:
            fields.append((name, str(value)))
    return fields

"""``client.sims``: eSIM endpoints, above all usage."""

from __future__ import annotations

import builtins
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Literal

import msgspec

from ..cache import CacheEntry
from ..config import check_max_age, check_retries, check_timeout
from ..errors import NotFoundError
from ..limits import Priority, QueueTicket
from ..models._base import Envelope
from ..models.pagination import Page
from ..models.sims import Esim, Instructions, InstructionsData, PackageHistoryEntry, TopupPackage
from ..models.usage import Usage, UsageStatus
from ..sweep import SweepProgress, UsageSweep
from ..transport import Request
from ..validation import date_range, validate_includes, validate_language, validate_text
from ._base import Resource, optional

if TYPE_CHECKING:
    from ..context import ClientContext

__all__ = ["AiraloSimsResource", "SimsResource", "stamp_usage", "usage_is_recycled"]

SimInclude = Literal["order", "order.status", "order.user", "share"]
_SIM_INCLUDES = ("order", "order.status", "order.user", "share")

_usage_decoder = msgspec.json.Decoder(Envelope[Usage], strict=False)


class _UsageData:
    """Reads a usage answer to the usage itself (the envelope's ``data``)."""

    __slots__ = ()

    def decode(self, buf: bytes, /) -> Usage:
        return _usage_decoder.decode(buf).data


_usage_data = _UsageData()


def stamp_usage(usage: Usage, wall: float) -> None:
    """Stamp a new usage answer with the wall time it arrived (``usage.fetched_at``)."""
    usage.fetched_at = datetime.fromtimestamp(wall, UTC)


def usage_is_recycled(usage: Usage) -> bool:
    """A recycled eSIM's usage never changes again: it is kept for the negative TTL."""
    return usage.status is UsageStatus.RECYCLED


class _UsageCall(QueueTicket):
    """One usage request, shared by every caller waiting for it, and its limiter ticket.

    It runs with the best priority and the most patient retries of its callers: one that joins
    improves them (:meth:`join`), also while the request waits for budget or between attempts.
    """

    __slots__ = ("ctx", "iccid", "max_retries", "request", "retry_rate_limited", "timeout")

    def __init__(
        self,
        ctx: ClientContext,
        iccid: str,
        timeout: float | None,
        priority: Priority,
        max_retries: int,
        retry_rate_limited: bool,
    ) -> None:
        super().__init__(priority)
        self.ctx = ctx
        self.iccid = iccid
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_rate_limited = retry_rate_limited
        #: The request once it is built, while it lives (weakly held: it holds this ticket).
        self.request: weakref.ref[Request[Usage]] | None = None

    def join(self, other: _UsageCall) -> None:
        """A caller with the policy ``other`` joined: take the better of both."""
        self.raise_to(other.priority)
        self.max_retries = max(self.max_retries, other.max_retries)
        self.retry_rate_limited = self.retry_rate_limited or other.retry_rate_limited
        request = self.request() if self.request is not None else None
        if request is not None:
            request.priority = self.priority
            request.max_retries = self.max_retries
            request.retry_rate_limited = self.retry_rate_limited

    def __call__(self) -> Awaitable[Usage]:
        """Build the request and send it (the transport's call is the one awaited)."""
        ctx = self.ctx
        request = Request(
            "GET",
            ctx.key_path("usage", "iccid", self.iccid),
            _usage_data,
            limiter=ctx.usage_limiter,
            key=self.iccid,
            priority=self.priority,
            timeout=self.timeout,
            max_retries=self.max_retries,
            retry_rate_limited=self.retry_rate_limited,
            ticket=self,
        )
        self.request = weakref.ref(request)
        return ctx.send(request)


class SimsResource(Resource):
    """eSIM endpoints: ``usage`` and ``usage_many`` (cached, rate-limited, single-flight),
    details, lists, top-ups, package history and installation instructions."""

    __slots__ = ()

    async def usage(
        self,
        iccid: str,
        *,
        refresh: bool = False,
        max_age: float | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        priority: Priority = Priority.INTERACTIVE,
    ) -> Usage:
        """Data, voice and text usage of one eSIM.

        Answers from the cache while the provider's own cache (20 minutes) would answer the
        same; concurrent calls for one ICCID share one request; requests wait for the per-ICCID
        and per-company limits so no 429 is drawn. A call that joins a sweep's request for the
        same ICCID lifts it to the interactive lane and lends it its retries.

        Args:
            iccid: 18-22 ASCII digits (configurable with the client's ``iccid_length``).
            refresh: skip a cached value (the new answer is stored); the call never joins a
                request that was already in flight.
            max_age: accept a cached value only if it is at most this many seconds old.
            timeout: total seconds for each HTTP attempt of this call.
            max_retries: retries for this call (default: the client's).
            priority: the limiter lane the request waits in: ``Priority.BULK`` lets
                interactive calls go first (as sweeps and the fleet monitor do).

        Raises:
            InvalidIccidError: malformed ICCID (no request is made).
            NotFoundError: the provider does not know this ICCID (kept in a negative cache).
            RateLimitedError: still throttled after the retries.
            EsimError: any other failure, typed (see ``esim_async.errors``).
        """
        ctx = self._ctx
        ctx.validate_iccid(iccid)
        if timeout is not None or max_retries is not None or max_age is not None:
            _check_call_options(timeout, max_retries, max_age)
        endpoint = ctx.usage_endpoint
        entry = None if refresh else endpoint.get(iccid, max_age)
        if entry is None:
            if max_retries is None:
                max_retries = ctx.config.max_retries
            call = _UsageCall(ctx, iccid, timeout, priority, max_retries, True)
            entry, _ = await endpoint.fetch(
                iccid, call, refresh=refresh, max_age=max_age, options=call
            )
        value = entry.value
        if value is None:
            raise NotFoundError.cached(iccid)
        return value

    async def usage_entry(
        self,
        iccid: str,
        *,
        refresh: bool = False,
        max_age: float | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        priority: Priority = Priority.INTERACTIVE,
        retry_rate_limited: bool = True,
    ) -> tuple[CacheEntry[Usage], bool]:
        """The cache entry answering ``iccid`` (``value`` ``None``: the provider does not know
        the eSIM), and whether it came without a request of this call. The arguments and
        errors are those of :meth:`usage`; ``retry_rate_limited=False`` makes a 429 the answer
        at once instead of waiting out its ``Retry-After``."""
        if timeout is not None or max_retries is not None or max_age is not None:
            _check_call_options(timeout, max_retries, max_age)
        ctx = self._ctx
        ctx.validate_iccid(iccid)
        endpoint = ctx.usage_endpoint
        entry = None if refresh else endpoint.get(iccid, max_age)
        if entry is not None:
            return entry, True
        if max_retries is None:
            max_retries = ctx.config.max_retries
        call = _UsageCall(ctx, iccid, timeout, priority, max_retries, retry_rate_limited)
        return await endpoint.fetch(iccid, call, refresh=refresh, max_age=max_age, options=call)

    def usage_many(
        self,
        iccids: Iterable[str] | AsyncIterable[str],
        refresh: bool = False,
        concurrency: int | None = None,
        *,
        ordered: bool = False,
        max_age: float | None = None,
        progress: Callable[[SweepProgress], None] | None = None,
        low_data_fraction: float = 0.1,
    ) -> UsageSweep:
        """Sweep the usage of many eSIMs at the full allowed rate.

        Returns an async iterator of :class:`~esim_async.sweep.UsageResult`, one per ICCID given
        (duplicates included), in completion order (``ordered=True`` keeps input order). The
        input may be any iterable or async iterable and is streamed. Cached and negative-cached
        ICCIDs are answered at once without waiting for the limiter; invalid ICCIDs yield an
        ``InvalidIccidError`` result without a request; the sweep waits in the limiter's bulk
        lane, so interactive :meth:`usage` calls go first.

        Use it as a context manager so that leaving early cancels what is in flight::

            async with client.sims.usage_many(iccids) as results:
                async for r in results:
                    print(r.iccid, r.usage.remaining if r.usage else r.error)
            print(results.summary)

        Args:
            iccids: the ICCIDs to sweep.
            refresh: skip cached values.
            concurrency: requests in flight at once (default: derived from the company rate).
            ordered: yield results in input order instead of completion order.
            max_age: accept cached values only up to this age in seconds.
            progress: called with a :class:`~esim_async.sweep.SweepProgress` after every result.
            low_data_fraction: the summary lists limited eSIMs with at most this share left.

        Raises:
            InvalidRequestError: ``max_age`` out of range (before anything is sent).
        """
        optional(check_max_age, max_age)
        return UsageSweep(
            self,
            self._ctx,
            iccids,
            refresh=refresh,
            concurrency=concurrency,
            ordered=ordered,
            max_age=max_age,
            progress=progress,
            low_data_fraction=low_data_fraction,
        )

    async def get(self, iccid: str, include: Iterable[SimInclude] | None = None) -> Esim:
        """One eSIM ordered through the API (``include``: ``order``, ``order.status``,
        ``order.user``, ``share``)."""
        self._ctx.validate_iccid(iccid)
        return await self._data(
            "sim",
            Esim,
            path_params={"iccid": iccid},
            params={"include": validate_includes(include, _SIM_INCLUDES)},
        )

    def _list_params(
        self,
        include: Iterable[SimInclude] | None,
        created_at: tuple[date | str, date | str] | str | None,
        iccid: str | None,
    ) -> dict[str, str | None]:
        return {
            "include": validate_includes(include, _SIM_INCLUDES),
            "filter[created_at]": date_range(created_at, field="created_at"),
            "filter[iccid]": optional(validate_text, iccid, field="iccid", max_length=22),
        }

    async def list(
        self,
        *,
        include: Iterable[SimInclude] | None = None,
        created_at: tuple[date | str, date | str] | str | None = None,
        iccid: str | None = None,
        page_size: int | None = None,
        max_items: int | None = None,
    ) -> AsyncIterator[Esim]:
        """Every eSIM of the account, page after page (an async iterator). ``iccid`` matches
        partially; ``created_at`` is a ``(from, to)`` pair of dates."""
        params = self._list_params(include, created_at, iccid)
        async for sim in self._paginate(
            "sims", Esim, params=params, page_size=page_size, max_items=max_items
        ):
            yield sim

    async def page(
        self,
        page: int = 1,
        *,
        include: Iterable[SimInclude] | None = None,
        created_at: tuple[date | str, date | str] | str | None = None,
        iccid: str | None = None,
        page_size: int | None = None,
    ) -> Page[Esim]:
        """One page of eSIMs with its metadata."""
        params = self._list_params(include, created_at, iccid)
        return await self._page("sims", Esim, page, params=params, page_size=page_size)

    async def topup_packages(self, iccid: str) -> builtins.list[TopupPackage]:
        """The top-ups that can be bought for this eSIM now (never cached: the list changes).

        Raises:
            BusinessError: code 73 when the eSIM was recycled.
        """
        self._ctx.validate_iccid(iccid)
        return await self._data(
            "sim_topups", builtins.list[TopupPackage], path_params={"iccid": iccid}
        )

    async def package_history(
        self, iccid: str, *, refresh: bool = False
    ) -> builtins.list[PackageHistoryEntry]:
        """Every package and top-up this eSIM has had.

        Limited per eSIM (Airalo 10 per minute, PressOne 1 per 15 minutes) and cached for
        15 minutes, as the providers ask; ``refresh=True`` skips the cache and never joins a
        request already in flight.
        """
        ctx = self._ctx
        ctx.validate_iccid(iccid)

        async def fetch() -> builtins.list[PackageHistoryEntry]:
            return await self._data(
                "package_history",
                builtins.list[PackageHistoryEntry],
                path_params={"iccid": iccid},
                key=iccid,
            )

        entry, _ = await ctx.history_endpoint.fetch(iccid, fetch, refresh=refresh)
        if entry.value is None:
            raise NotFoundError.cached(iccid)
        return entry.value

    async def instructions(self, iccid: str, language: str = "en") -> Instructions:
        """Installation instructions (iOS and Android) in ``language`` (``Accept-Language``)."""
        self._ctx.validate_iccid(iccid)
        validate_language(language)
        data = await self._data(
            "instructions",
            InstructionsData,
            path_params={"iccid": iccid},
            language=language,
        )
        return data.instructions

    def invalidate_usage(self, iccid: str) -> None:
        """Forget the cached usage (or negative entry) of ``iccid``; the next read fetches it.

        With a shared backend the shared entry is deleted too (in the background).
        """
        self._ctx.usage_endpoint.invalidate(iccid)


class _Brand(msgspec.Struct):
    brand_settings_name: str | None = None


class AiraloSimsResource(SimsResource):
    """Airalo's eSIM endpoints, plus branding."""

    __slots__ = ()

    async def update_brand(self, iccid: str, brand_settings_name: str | None) -> str | None:
        """Set the brand used for this eSIM's sharing (``None``: unbranded); returns it."""
        self._ctx.validate_iccid(iccid)
        optional(validate_text, brand_settings_name, field="brand_settings_name")
        data = await self._data(
            "brand",
            _Brand,
            method="PUT",
            path_params={"iccid": iccid},
            body={"brand_settings_name": brand_settings_name},
            idempotent=True,
            nullable=("brand_settings_name",),
        )
        return data.brand_settings_name


def _check_call_options(
    timeout: float | None, max_retries: int | None, max_age: float | None
) -> None:
    """Refuse a call's ``timeout``, ``max_retries`` or ``max_age`` out of range before
    anything is sent (:class:`~esim_async.errors.InvalidRequestError`)."""
    optional(check_timeout, timeout)
    optional(check_retries, max_retries)
    optional(check_max_age, max_age)

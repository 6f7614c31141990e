"""The ``usage_many`` engine: sweep the usage of a whole fleet at the full allowed rate.

A feeder streams the input, answers invalid ICCIDs, cached values and duplicates itself, and hands
the rest to a bounded pool of workers waiting in the limiter's bulk lane. A throttled ICCID goes
back in the queue behind the shared cool-down instead of spending its retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter, deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sized
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Self

from ._secrets import redact, redact_deep
from .cache import CacheEntry
from .errors import (
    EsimError,
    InvalidIccidError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
)
from .limits import Priority
from .models.usage import Usage

if TYPE_CHECKING:
    from .context import ClientContext
    from .limits import LimiterState
    from .resources.sims import SimsResource


__all__ = ["SweepProgress", "SweepSummary", "UsageResult", "UsageSweep"]

#: How often a throttled ICCID is put back in the queue before its 429 becomes its result.
MAX_REQUEUES = 8
#: Usage fields of :meth:`UsageResult.as_record`, in column order.
RECORD_USAGE_FIELDS = (
    "status",
    "remaining",
    "total",
    "is_unlimited",
    "expired_at",
    "remaining_voice",
    "total_voice",
    "remaining_text",
    "total_text",
)
#: Low-data ICCIDs listed by name in the summary (the count is always complete).
MAX_LISTED_LOW = 1000


def usage_fields(usage: Usage | None) -> dict[str, object]:
    """The :data:`RECORD_USAGE_FIELDS` of ``usage`` (all ``None`` without one), JSON-ready."""
    record: dict[str, object] = {}
    for name in RECORD_USAGE_FIELDS:
        value = getattr(usage, name) if usage is not None else None
        if isinstance(value, datetime):
            value = value.isoformat()
        elif name == "status" and value is not None:
            value = str(value)
        record[name] = value
    return record


@dataclass(slots=True)
class UsageResult:
    """The answer for one ICCID of a sweep: exactly one of ``usage`` and ``error`` is set."""

    iccid: str
    usage: Usage | None
    error: EsimError | None
    #: True when answered without a request (cache, negative cache).
    from_cache: bool
    #: When the value was fetched from the provider (UTC); ``None`` for errors.
    fetched_at: datetime | None
    #: Position of this ICCID in the input (0-based).
    index: int

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_record(self) -> dict[str, object]:
        """A flat, JSON-ready dict (the CLI writes these as JSON Lines or CSV rows)."""
        error = self.error
        record: dict[str, object] = {"iccid": self.iccid, **usage_fields(self.usage)}
        record["from_cache"] = self.from_cache
        record["fetched_at"] = self.fetched_at.isoformat() if self.fetched_at else None
        record["error"] = type(error).__name__ if error is not None else None
        record["error_message"] = str(error) if error is not None else None
        record["error_status"] = getattr(error, "status", None)
        return redact_deep(record)  # a provider may echo a credential in any field


@dataclass(slots=True)
class SweepProgress:
    """Where a sweep stands: the ``progress`` hook gets this object (updated in place) after
    every result; it is also ``sweep.progress``, readable before the first one."""

    done: int = 0
    #: ICCIDs given: known from the start for a sized input (``len()``), else once the whole
    #: input has been read (``None`` before); then the number actually given.
    total: int | None = None
    cache_hits: int = 0
    errors: int = 0
    #: Usage requests the sweep asked the provider for: one per fetch the cache did not
    #: answer, whatever came of it (its retries not counted again; a throttled ICCID asked
    #: again after its cool-down counted again; the client's own refusals during a cool-down
    #: beyond ``retry_after_cap``, which send nothing, not counted). A fetch that failed
    #: before anything was sent (no connection, Redis down) still counts: ``client.stats``
    #: counts what went out on the wire.
    requests: int = 0
    elapsed: float = 0.0
    #: ICCIDs read from the input so far.
    read: int = 0
    #: ICCIDs read that needed a request (each distinct one once), and those still waiting.
    requested: int = 0
    queued: int = 0
    #: Reads the state of the usage limiter (the company budget) :attr:`eta` follows.
    budget: Callable[[], LimiterState | None] | None = field(
        default=None, kw_only=True, repr=False, compare=False
    )

    @property
    def rate(self) -> float:
        """Results per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until the sweep is done: the requests still to make (those queued, plus the
        unread ICCIDs times the share of read ones that needed one) over the usage limiter's
        effective rate; without a company limit, from the pace of results so far. ``None``
        while the total (or, without a company limit, any pace) is unknown."""
        if self.total is None:
            return None
        state = self.budget() if self.budget is not None else None
        per_second = state.effective_per_second if state is not None else None
        if per_second is not None and 0 < per_second < math.inf:
            unread = max(0, self.total - self.read)
            share = self.requested / self.read if self.read else 1.0
            return (self.queued + unread * share) / per_second
        if self.rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate)


@dataclass(slots=True)
class SweepSummary:
    """Counts at the end of a sweep."""

    total: int = 0
    ok: int = 0
    errors: int = 0
    from_cache: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_error: Counter[str] = field(default_factory=Counter)
    #: ICCIDs of limited packages with at most ``low_data_fraction`` of their data left.
    low_data: list[str] = field(default_factory=list)
    low_data_count: int = 0
    elapsed: float = 0.0

    def add(self, result: UsageResult, low_fraction: float) -> None:
        self.total += 1
        self.from_cache += result.from_cache
        if result.error is not None:
            self.errors += 1
            self.by_error[type(result.error).__name__] += 1
            return
        usage = result.usage
        assert usage is not None
        self.ok += 1
        self.by_status[redact(str(usage.status))] += 1
        if usage.is_low(fraction=low_fraction):
            self.low_data_count += 1
            if len(self.low_data) < MAX_LISTED_LOW:
                self.low_data.append(result.iccid)


#: What answers an ICCID: the cache entry of its fetch, or the error of a failed one.
_Outcome = CacheEntry[Usage] | EsimError


@dataclass(slots=True)
class _Item:
    iccid: str
    indexes: list[int]
    requeues: int = 0


def _check_arguments(
    iccids: object, concurrency: object, progress: object, low_data_fraction: object
) -> None:
    """Refuse arguments no sweep could use (:class:`InvalidRequestError` naming them), before
    anything is read or sent."""
    if isinstance(iccids, str | bytes | bytearray):
        raise InvalidRequestError(
            "iccids must be an iterable of ICCIDs, not a single "
            f"{type(iccids).__name__} (wrap one ICCID in a list)",
            field="iccids",
        )
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise InvalidRequestError(
            f"concurrency must be an int >= 1 or None, got {concurrency!r}", field="concurrency"
        )
    if progress is not None and not callable(progress):
        raise InvalidRequestError(
            f"progress must be a callable or None, got {type(progress).__name__}",
            field="progress",
        )
    if (
        isinstance(low_data_fraction, bool)
        or not isinstance(low_data_fraction, int | float)
        or not 0.0 <= low_data_fraction <= 1.0  # (also refuses NaN)
    ):
        raise InvalidRequestError(
            f"low_data_fraction must be a number in [0, 1], got {low_data_fraction!r}",
            field="low_data_fraction",
        )


def default_concurrency(per_second: float | None) -> int:
    """Workers for a company rate: enough to cover ~2 s of latency, bounded to 8..256."""
    if per_second is None or not math.isfinite(per_second):
        return 64
    return max(8, min(256, math.ceil(per_second * 2)))


class UsageSweep:
    """An async iterator of :class:`UsageResult` (one per ICCID given); also an async context
    manager. Leaving ``async with`` early cancels what is in flight; ``summary`` holds the
    counts once the sweep is done.

    Every occurrence of an ICCID is answered from one fetch, also with ``refresh=True`` and
    after that fetch finished (an error is repeated, not retried): memory grows with the
    requests made, not with the input. A ``progress`` hook that raises ends the sweep: the
    consumer's next step raises the hook's exception (``StopIteration`` and
    ``StopAsyncIteration`` as the ``__cause__`` of a ``RuntimeError``), and results not yet
    taken are not delivered.
    """

    def __init__(
        self,
        sims: SimsResource,
        ctx: ClientContext,
        iccids: Iterable[str] | AsyncIterable[str],
        *,
        refresh: bool,
        concurrency: int | None,
        ordered: bool,
        max_age: float | None,
        progress: Callable[[SweepProgress], None] | None,
        low_data_fraction: float,
    ) -> None:
        _check_arguments(iccids, concurrency, progress, low_data_fraction)
        budget = ctx.limiter("usage").state
        self._sims = sims
        self._cache = ctx.usage_endpoint
        self._validate = ctx.validate_iccid
        self._clock = ctx.clock
        self._input = iccids
        self._refresh = refresh
        self._max_age = max_age
        self._ordered = ordered
        self._concurrency = concurrency or default_concurrency(budget().effective_per_second)
        self._progress_hook = progress
        self._low_fraction = low_data_fraction
        # Results waiting for the consumer plus work in flight never exceed this window.
        self._window = asyncio.Semaphore(self._concurrency * 4)
        self._work: asyncio.Queue[_Item] = asyncio.Queue()
        self._out: deque[UsageResult] = deque()
        self._ready = asyncio.Event()
        self._pending: dict[str, _Item] = {}
        self._buffer: dict[int, UsageResult] = {}
        self._next_index = 0
        self._given = 0
        self._emitted = 0
        self._input_done = False
        self._failure: BaseException | None = None
        # What the progress hook raised; once set, the hook is not called again.
        self._hook_error: BaseException | None = None
        # The outcome of every ICCID fetched by this sweep, answering later duplicates.
        self._answered: dict[str, _Outcome] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Workers started so far (one more whenever work waits and none is free, up to the
        # concurrency), and those waiting for work.
        self._workers = 0
        self._idle = 0
        self._closed = False
        self._t0 = 0.0
        self.progress = SweepProgress(budget=budget)
        if isinstance(iccids, Sized):
            with contextlib.suppress(TypeError, ValueError, OverflowError):
                self.progress.total = len(iccids)
        self.summary = SweepSummary()

    # ----------------------------------------------------------------- consumer side

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> UsageResult:
        if not self._tasks and not self._closed:  # (not started; a closed sweep never starts)
            self._t0 = self._clock.now()
            feeder = asyncio.get_running_loop().create_task(
                self._feed(), name="esim_async sweep feeder"
            )
            self._tasks.append(feeder)
        while True:
            if self._hook_error is not None and not self._closed:
                # The sweep ends here: raise the hook's own exception, not a further result.
                self._out.clear()
                await self.aclose()
                error = self._hook_error
                if isinstance(error, StopIteration | StopAsyncIteration):
                    # Raised as they are, these would end the iteration silently (or turn into
                    # a bare RuntimeError): the consumer gets a RuntimeError that names them.
                    raise RuntimeError(
                        f"the progress hook raised {type(error).__name__}"
                    ) from error
                raise error
            if self._out:
                result = self._out.popleft()
                self._window.release()
                return result
            if self._failure is not None:
                failure, self._failure = self._failure, None
                await self.aclose()
                raise failure
            if self._input_done and self._emitted == self._given:
                self.summary.elapsed = self._elapsed()
                await self.aclose()
                raise StopAsyncIteration
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            try:
                await self._ready.wait()
            except asyncio.CancelledError:
                await self.aclose()
                raise

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel everything in flight. Idempotent. Results already received are still
        delivered by the iteration; a sweep closed before its first step never starts."""
        if self._closed:
            return
        self._closed = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        self._ready.set()
        # (gather, not an await of each task: a cancellation of this caller is not swallowed)
        await asyncio.gather(*tasks, return_exceptions=True)

    # ----------------------------------------------------------------- engine

    def _elapsed(self) -> float:
        return self._clock.now() - self._t0

    def _queue(self, item: _Item) -> None:
        """Hand ``item`` to the workers, starting one more if every worker is busy."""
        work = self._work
        work.put_nowait(item)
        if work.qsize() > self._idle and self._workers < self._concurrency and not self._closed:
            loop = asyncio.get_running_loop()
            name = f"esim_async sweep {self._workers}"
            self._workers += 1
            self._tasks.append(loop.create_task(self._worker(), name=name))

    def _emit(self, result: UsageResult) -> None:
        self.summary.add(result, self._low_fraction)
        p = self.progress
        p.done += 1
        p.cache_hits += result.from_cache
        if result.error is not None:
            p.errors += 1
        p.elapsed = self._elapsed()
        self._emitted += 1
        if self._ordered:
            self._buffer[result.index] = result
            while self._next_index in self._buffer:
                self._out.append(self._buffer.pop(self._next_index))
                self._next_index += 1
        else:
            self._out.append(result)
        self._ready.set()
        if self._progress_hook is not None and self._hook_error is None:
            try:
                self._progress_hook(p)
            except (Exception, asyncio.CancelledError) as exc:
                # A worker or the feeder must not die of it: the consumer raises it instead.
                self._hook_error = exc

    def _answer(self, iccid: str, indexes: list[int], outcome: _Outcome, from_cache: bool) -> None:
        """Emit ``outcome`` for every index."""
        for n, index in enumerate(indexes):
            cached = from_cache or n > 0  # a duplicate is answered without its own request
            if isinstance(outcome, EsimError):
                self._emit(UsageResult(iccid, None, outcome, False, None, index))
            elif outcome.value is None:
                error = NotFoundError.cached(iccid)
                self._emit(UsageResult(iccid, None, error, cached, None, index))
            else:
                fetched_at = datetime.fromtimestamp(outcome.fetched_at, UTC)
                self._emit(UsageResult(iccid, outcome.value, None, cached, fetched_at, index))

    async def _iterate(self) -> AsyncIterator[str]:
        source = self._input
        if isinstance(source, AsyncIterable):
            async for iccid in source:
                yield iccid
        else:
            for n, iccid in enumerate(source):
                yield iccid
                if n % 512 == 511:
                    await asyncio.sleep(0)  # let results flow while a huge list is read

    async def _feed(self) -> None:
        cache, validate = self._cache, self._validate
        refresh, max_age = self._refresh, self._max_age
        try:
            async for iccid in self._iterate():
                await self._window.acquire()
                index = self._given
                self._given += 1
                self.progress.read = self._given
                try:
                    validate(iccid)
                except InvalidIccidError as exc:
                    self._emit(UsageResult(str(iccid), None, exc, False, None, index))
                    continue
                pending = self._pending.get(iccid)
                if pending is not None:
                    pending.indexes.append(index)
                    continue
                if not refresh:
                    entry = cache.get(iccid, max_age)  # counted as a (negative) hit
                    if entry is not None:
                        self._answer(iccid, [index], entry, True)
                        continue
                answered = self._answered.get(iccid)
                if answered is not None:  # a duplicate of an ICCID this sweep already fetched
                    self._answer(iccid, [index], answered, True)
                    continue
                item = _Item(iccid, [index])
                self._pending[iccid] = item
                self.progress.requested += 1
                self.progress.queued = len(self._pending)
                self._queue(item)
        except Exception as exc:  # the caller's iterable failed: surface it to the consumer
            self._fail(exc)
            return
        except asyncio.CancelledError as exc:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # the sweep itself is being stopped
            # The input raised it: as it is, it would end the feeder silently and leave the
            # consumer waiting; the consumer gets a RuntimeError that names it.
            error = RuntimeError("the ICCID input raised CancelledError")
            error.__cause__ = exc
            self._fail(error)
            return
        self._input_done = True
        self.progress.total = self._given
        self._ready.set()

    async def _worker(self) -> None:
        sims = self._sims
        progress = self.progress
        while True:
            self._idle += 1
            try:
                item = await self._work.get()
            finally:
                self._idle -= 1
            outcome: _Outcome
            from_cache = False
            sent = True  # (a request went to the provider for this fetch)
            try:
                outcome, from_cache = await sims.usage_entry(
                    item.iccid,
                    refresh=self._refresh,
                    max_age=self._max_age,
                    priority=Priority.BULK,
                    retry_rate_limited=False,
                )
            except RateLimitedError as exc:
                # Sent unless this side's limiter refused, without a request, to wait out a
                # cool-down (no headers, no body).
                sent = bool(exc.headers) or exc.body is not None
                if item.requeues < MAX_REQUEUES:
                    progress.requests += sent
                    # The limiter holds every caller until Retry-After has passed; going to
                    # the back of the queue costs this ICCID no retry.
                    item.requeues += 1
                    self._work.put_nowait(item)  # (this worker takes the next item itself)
                    continue
                outcome = exc
            except NotFoundError:
                outcome = CacheEntry(None, self._clock.wall(), 0.0, True)
            except EsimError as exc:
                outcome = exc
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if me is not None and me.cancelling():
                    raise  # the sweep itself is being stopped
                outcome = EsimError("the request was cancelled")
            except Exception as exc:  # never lose an ICCID, even to a bug
                outcome = EsimError(f"unexpected {type(exc).__name__}: {exc}")
                outcome.__cause__ = exc
            else:
                sent = not from_cache
            progress.requests += sent
            try:
                del self._pending[item.iccid]  # (it no longer waits for a request)
                progress.queued = len(self._pending)
                self._answered[item.iccid] = outcome
                self._answer(item.iccid, item.indexes, outcome, from_cache)
            except Exception as exc:
                # An answer that cannot be delivered ends the sweep at the consumer: a worker
                # that died here would leave it waiting forever.
                self._fail(exc)
                return

    def _fail(self, error: BaseException) -> None:
        """End the sweep with ``error``: the consumer's next step raises it."""
        if self._failure is None:
            self._failure = error
        self._ready.set()

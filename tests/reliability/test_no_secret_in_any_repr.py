"""No object of the library ever shows a secret in its ``repr()`` or ``str()``.

Unique marker secrets (a client secret, the bearer tokens the emulator issues, PressOne's voice
API key, a webhook secret, a password in a URL) go through a representative run against the
bundled emulator: token fetches, a refused token request, a 401 that refreshes the token, usage,
a fleet sweep, orders (an async one answered by webhook), a fleet monitor, voice calls, webhook
receivers, refused settings, OpenTelemetry tracing, and error answers that echo back what the
client sent (the secret, the token, the key) in their body and headers.

Then ``repr()`` and ``str()`` are looked at for: every object of an ``esim_async`` type, every
exception and every log record reachable from the clients, the errors raised, the results and
the log records; every live object of an ``esim_async`` type (``gc``), when a request first
reaches each endpoint (what a call holds while in flight), at the end of the run and after the
clients closed; and every object of ours a library function returned during the run (what
nothing keeps: a decoded token answer). No marker may appear in any of them, nor in the log
text or the spans and metrics exported.

Every marker starts with :data:`MARK`, so a secret shown only in part is caught as well."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import json
import logging
import os
import sys
import types
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import msgspec
import pytest
from aiohttp import web

import esim_async
from esim_async import AiraloClient, BaseClient, PressOneClient, Rate
from esim_async.cli import Settings
from esim_async.errors import (
    ApiError,
    AuthenticationError,
    EsimError,
    OutcomeUnknownError,
    TransportError,
)
from esim_async.monitor import FleetMonitor
from esim_async.testing import Emulator, Fleet, ServerLimits
from esim_async.transport import Kind, Request, classify
from esim_async.webhooks import SIGNATURE_HEADER, WebhookReceiver, sign, webhook_app
from tests.telemetry import Telemetry as MemoryTelemetry

MARK = "LEAKHUNT"
CLIENT_ID = "leak-hunt-client"
CLIENT_SECRET = f"{MARK}-client-secret-Q7x9Zt"
VOICE_KEY = f"{MARK}-voice-key-3Zp2Wd"
WEBHOOK_SECRET = f"{MARK}-webhook-secret-8Rm4Kc"
#: A password in a URL (base URL, proxy): a secret the library is never told is one.
URL_PASSWORD = f"{MARK}-url-password-Hn5Tb2"
PACKAGE = "change-7days-1gb"
#: The company's usage rate on both sides: the run is not about waiting.
FAST = Rate(100, 1.0)

#: Upper bound of objects the reachability walk visits (keeps the test fast).
WALK_LIMIT = 400_000

Plan = dict[str, list[int]]


class HandlerFailure(RuntimeError):
    """What the application's webhook handler raises: its own text, quoting the secret (the
    library logs it redacted; the exception itself is the application's, not looked at)."""


def _echoing(plan: Plan) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A middleware answering the next request to a path containing a key of ``plan`` with the
    status queued there, its body and an ``X-Echo`` header repeating every credential the
    request carried (bearer token, voice API key, the token request's form)."""

    @web.middleware
    async def echo(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        queue = next((q for part, q in plan.items() if part in request.path and q), None)
        if queue is None:
            return await handler(request)
        status = queue.pop(0)
        sent = (await request.read()).decode()
        echoed = (
            f"refused auth={request.headers.get('Authorization', '')} "
            f"key={request.headers.get('Pressone-X-Api-Key', '')} body={sent}"
        )
        headers = {"X-Echo": echoed, "Retry-After": "0"}
        if status == 200:  # an answer that is not JSON, quoting the credentials
            return web.Response(text=f"<html>{echoed}</html>", status=200, headers=headers)
        body: dict[str, Any] = {
            "message": echoed,
            "meta": {"message": echoed},
            "reason": echoed,
            "detail": echoed,
            "data": {"client_secret": [echoed]},
            echoed: [echoed],
        }
        if status == 422:
            body["code"] = 99
        return web.json_response(body, status=status, headers=headers)

    return echo


def _marked_tokens(emu: Emulator) -> None:
    """Make the emulator issue tokens that carry :data:`MARK` (deterministic, unique)."""
    counter = itertools.count(1)
    issue = emu.issue_token

    def issue_marked(client_id: str, client_secret: str) -> str:
        issue(client_id, client_secret)  # counted and recorded as usual...
        token = f"{MARK}-token-{next(counter):04d}-Vq3Lm8"
        emu.tokens[token] = emu.clock.now() + emu.token_ttl  # ...then replaced by a marked one
        emu.token_owners[token] = (client_id, client_secret)
        return token

    emu.issue_token = issue_marked  # type: ignore[method-assign]


async def _raises(
    kind: type[BaseException], call: Awaitable[object], errors: list[BaseException]
) -> BaseException:
    with pytest.raises(kind) as caught:
        await call
    errors.append(caught.value)
    return caught.value


class Telemetry(MemoryTelemetry):
    """OpenTelemetry spans and metrics of a client, kept in memory."""

    def leaks(self) -> list[str]:
        """Each span or metrics export showing a marker."""
        spans = self.spans.get_finished_spans()
        assert spans, "the client's calls were traced"
        found = [f"span: {span.name}" for span in spans if MARK in span.to_json()]
        metrics = self.reader.get_metrics_data()
        if metrics is not None and MARK in metrics.to_json():
            found.append("metrics")
        return found


# ------------------------------------------------------------------ what is looked at


def _is_ours(obj: object) -> bool:
    module = getattr(type(obj), "__module__", None)
    return isinstance(module, str) and (module == "esim_async" or module.startswith("esim_async."))


def _referents(obj: object) -> Iterable[object]:
    """What ``obj`` refers to, without leaving the object graph for the whole process through
    a function's module globals, a frame's globals, a module or a class."""
    if isinstance(obj, (type, types.ModuleType, types.CodeType)):
        return ()
    if isinstance(obj, types.FunctionType):
        cells = [c.cell_contents for c in obj.__closure__ or () if _cell_filled(c)]
        return [*cells, *(obj.__defaults__ or ()), *(obj.__kwdefaults__ or {}).values()]
    if isinstance(obj, types.FrameType):
        return list(obj.f_locals.values())
    return gc.get_referents(obj)


def _cell_filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _walk(roots: Iterable[object]) -> Iterator[object]:
    """Every object reachable from ``roots`` (up to :data:`WALK_LIMIT` of them)."""
    seen: set[int] = set()
    stack = list(roots)
    keep: list[object] = []  # (ids stay unique while the objects live)
    while stack and len(seen) < WALK_LIMIT:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        keep.append(obj)
        yield obj
        if isinstance(obj, BaseException):
            stack.extend(o for o in (obj.__cause__, obj.__context__, obj.__traceback__) if o)
        stack.extend(_referents(obj))


def _shown(obj: object) -> Iterator[tuple[str, str]]:
    for how in (repr, str):
        try:
            yield how.__name__, how(obj)
        except Exception as exc:  # (a half-built object: its failure is no leak)
            yield how.__name__, f"<{how.__name__} raised {type(exc).__name__}>"


def _leaks(objects: Iterable[object]) -> list[str]:
    """``type: repr/str shown`` for each object (of ours, an exception or a log record) whose
    ``repr()`` or ``str()`` holds a marker."""
    found: dict[str, None] = {}
    for obj in objects:
        if isinstance(obj, HandlerFailure) or not (
            _is_ours(obj)
            or isinstance(obj, (BaseException, logging.LogRecord, web.Request, asyncio.Future))
        ):
            continue
        for how, text in _shown(obj):
            if MARK in text:
                where = text.find(MARK)
                shown = text[max(0, where - 80) : where + 60]
                found[f"{type(obj).__module__}.{type(obj).__qualname__} {how}: ...{shown}..."] = (
                    None
                )
    return list(found)


def _live_objects_of_ours(collect: bool = True) -> list[object]:
    if collect:
        gc.collect()
    return [obj for obj in gc.get_objects() if _is_ours(obj) or isinstance(obj, asyncio.Future)]


def _sampling(leaks: list[str]) -> Callable[[str, web.Request], None]:
    """An ``on_request`` hook looking at every live object of ours when a request first
    reaches an endpoint: what the client holds only while its call is in flight."""
    seen: set[str] = set()

    def on_request(endpoint: str, request: web.Request) -> None:
        if endpoint not in seen:
            seen.add(endpoint)
            leaks.extend(_leaks(_live_objects_of_ours(collect=False)))

    return on_request


class Returns:
    """Every object of ours a function of the library returns during the run (a decoded
    token, an attempt's outcome...): seen even when nothing keeps it afterwards."""

    def __init__(self) -> None:
        self.objects: dict[int, object] = {}
        self._package = os.path.dirname(esim_async.__file__)
        self._previous: Any = None

    def __enter__(self) -> Returns:
        self._previous = sys.getprofile()
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(self._previous)

    def _profile(self, frame: types.FrameType, event: str, arg: object) -> None:
        if (
            event == "return"
            and arg is not None
            and _is_ours(arg)
            and frame.f_code.co_filename.startswith(self._package)
        ):
            self.objects.setdefault(id(arg), arg)


# ------------------------------------------------------------------ the run


async def _airalo_run(
    emu: Emulator,
    plan: Plan,
    errors: list[BaseException],
    kept: list[object],
    telemetry: Telemetry,
) -> AiraloClient:
    iccids = emu.fleet.iccids()
    client = AiraloClient(
        CLIENT_ID,
        CLIENT_SECRET,
        base_url=emu.url,
        max_retries=1,
        retry_after_cap=5.0,
        token_rate=None,  # (several token requests in a row)
        company_rate=FAST,
    )
    kept.append(client)
    telemetry.instrument(client)
    # A token request refused with an answer that quotes the form (the client secret).
    plan["/token"] = [422]
    await _raises(AuthenticationError, client.sims.usage(iccids[0]), errors)
    kept.append(await client.sims.usage(iccids[0]))  # the token, then usage
    emu.expire_tokens()
    kept.append(await client.sims.usage(iccids[1]))  # a 401 that refreshes the token
    # Twice refused, each time quoting the bearer token: the second 401 is the error.
    plan["/usage"] = [401, 401]
    await _raises(AuthenticationError, client.sims.usage(iccids[2]), errors)
    plan["/usage"] = [422]  # a business error quoting the token
    await _raises(ApiError, client.sims.usage(iccids[3]), errors)
    plan["/usage"] = [200, 200]  # undecodable answers quoting the token
    await _raises(TransportError, client.sims.usage(iccids[4]), errors)
    plan["/usage"] = [404]
    await _raises(ApiError, client.sims.usage(iccids[5]), errors)
    kept.append(await client.orders.create(PACKAGE, 1, description="leak-hunt"))
    plan["/orders"] = [500]  # a write answered 5xx quoting the token: outcome unknown
    await _raises(OutcomeUnknownError, client.orders.create(PACKAGE, 1), errors)
    plan["/orders"] = [422]
    await _raises(ApiError, client.orders.create(PACKAGE, 1), errors)
    # A sweep: fresh, cached, invalid, refused (quoting the token) and throttled eSIMs.
    plan["/usage"] = [422, 429, 503, 503]
    sweep = client.sims.usage_many(
        [*iccids[6:16], iccids[0], "12345", iccids[16]], concurrency=4, ordered=True
    )
    kept.append(sweep)
    async with sweep as results:
        async for result in results:
            kept.append(result)
            if result.error is not None:
                errors.append(result.error)
    kept.append(sweep.summary)
    kept.append(client.rate_limit_state())
    kept.append(client.stats)
    kept.append(client.config)
    return client


async def _pressone_run(
    emu: Emulator, plan: Plan, errors: list[BaseException], kept: list[object]
) -> PressOneClient:
    iccids = emu.fleet.iccids()
    client = PressOneClient(
        CLIENT_ID,
        CLIENT_SECRET,
        base_url=emu.url,
        voice_base_url=emu.url,
        voice_api_key=VOICE_KEY,
        max_retries=1,
        token_rate=None,
        company_rate=FAST,
    )
    kept.append(client)
    kept.append(await client.sims.usage(iccids[20]))
    kept.append(client.voice)
    kept.append(await client.voice.claim_number("ada@example.com"))
    kept.append(await client.voice.users(email="ada@example.com"))
    kept.append(await client.voice.available_numbers(page_index=1, page_size=5))
    plan["/claim-number/"] = [422]  # a refusal quoting the key (and a field named after it)
    await _raises(ApiError, client.voice.claim_number("bob@example.com"), errors)
    plan["/user/"] = [401]
    await _raises(AuthenticationError, client.voice.users(), errors)
    plan["/renew-number/"] = [500]
    await _raises(OutcomeUnknownError, client.voice.renew_number("ada@example.com"), errors)
    plan["/available-numbers/"] = [200, 200]
    await _raises(TransportError, client.voice.available_numbers(), errors)
    broken = PressOneClient(
        CLIENT_ID,
        CLIENT_SECRET,
        base_url=emu.url,
        voice_base_url=emu.url,
        voice_api_key=f"{VOICE_KEY}-read-from-a-file\n",
    )
    kept.append(broken)
    await _raises(EsimError, broken.voice.users(), errors)
    await broken.aclose()
    return client


async def _async_order_run(
    emu: Emulator, client: AiraloClient, errors: list[BaseException], kept: list[object]
) -> None:
    """An async order whose webhook (signed with the client secret) reaches the client."""
    app = webhook_app(CLIENT_SECRET, client=client)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        kept.extend((app, runner))
        submitted = await client.orders.create_async(PACKAGE, 1, webhook_url=url)
        kept.append(submitted)
        event = await client.orders.wait_async(submitted.request_id, timeout=5.0)
        assert event.request_id == submitted.request_id
        kept.append(event)
    finally:
        await runner.cleanup()


async def _monitor_run(emu: Emulator, client: AiraloClient, kept: list[object]) -> None:
    """A fleet monitor over the client, reading a few eSIMs."""
    monitor = FleetMonitor(client, expiring_within=0.0)
    kept.append(monitor)
    assert await monitor.track(emu.fleet.iccids()[:3]) == 3
    async with monitor:
        for _ in range(500):  # (it reads them at once; a loaded machine may take longer)
            if monitor.stats.reads >= 3:
                break
            await asyncio.sleep(0.01)
        kept.extend(monitor.snapshot(i) for i in emu.fleet.iccids()[:3])
    assert monitor.stats.reads >= 3


def _refused_settings(errors: list[BaseException], kept: list[object]) -> list[BaseClient]:
    """Settings refused or kept out of sight: credentials in a URL, a key with a line break,
    a proxy with a password, the command line's settings."""
    for url in (
        f"https://u:{URL_PASSWORD}@h",
        f"ftp://u:{URL_PASSWORD}@h",
        f"u:{URL_PASSWORD}@h",
        f"https://h/?token={URL_PASSWORD}",
    ):
        with pytest.raises(EsimError) as refused:
            AiraloClient(CLIENT_ID, CLIENT_SECRET, base_url=url)
        errors.append(refused.value)
        with pytest.raises(EsimError) as refused:
            PressOneClient(
                CLIENT_ID, CLIENT_SECRET, base_url="https://p1.example", voice_base_url=url
            )
        errors.append(refused.value)
    proxied = AiraloClient(
        CLIENT_ID, CLIENT_SECRET, proxy=f"http://proxy-user:{URL_PASSWORD}@127.0.0.1:9"
    )
    settings = Settings(
        provider="airalo",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        base_url="http://127.0.0.1:9",
        sandbox=False,
        company_rate=None,
        iccid_rate=None,
    )
    kept.append(settings)
    from_cli = settings.client()
    kept.extend((proxied, from_cli))
    return [proxied, from_cli]


async def _webhook_run(errors: list[BaseException], kept: list[object]) -> None:
    async def on_event(event: object) -> None:
        kept.append(event)
        raise HandlerFailure(f"downstream refused secret={WEBHOOK_SECRET}")

    receiver = WebhookReceiver(WEBHOOK_SECRET, on_event, ack="after_handler")
    kept.append(receiver)
    body = json.dumps({"level": "90%", "iccid": "8944001", "note": WEBHOOK_SECRET}).encode()
    kept.append(await receiver.handle(body, {SIGNATURE_HEADER: sign(body, WEBHOOK_SECRET)}))
    forged = hashlib.sha512(WEBHOOK_SECRET.encode()).hexdigest()
    kept.append(await receiver.handle(body, {SIGNATURE_HEADER: forged}))
    try:
        await receiver.receive(b"{" + WEBHOOK_SECRET.encode(), {SIGNATURE_HEADER: "x"})
    except EsimError as exc:
        errors.append(exc)
    await receiver.drain()
    app = webhook_app(WEBHOOK_SECRET, on_event=on_event)
    kept.append(app)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        kept.append(runner)
    finally:
        await runner.cleanup()


async def test_no_repr_or_str_of_the_library_shows_a_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    plan: Plan = {}
    errors: list[BaseException] = []
    kept: list[object] = []
    async with Emulator(
        fleet=Fleet.generate(30, seed=11),
        limits=ServerLimits(usage_company=FAST, token=None),
        credentials={CLIENT_ID: CLIENT_SECRET},
        middlewares=[_echoing(plan)],
    ) as emu:
        emu.voice_api_key = VOICE_KEY
        in_flight: list[str] = []
        emu.on_request = _sampling(in_flight)
        _marked_tokens(emu)
        telemetry = Telemetry()
        clients: list[BaseClient] = []
        try:
            with Returns() as returns:
                airalo = await _airalo_run(emu, plan, errors, kept, telemetry)
                clients.append(airalo)
                await _async_order_run(emu, airalo, errors, kept)
                await _monitor_run(emu, airalo, kept)
                clients += _refused_settings(errors, kept)
                pressone = await _pressone_run(emu, plan, errors, kept)
                clients.append(pressone)
                await _webhook_run(errors, kept)
            # The run went where it was meant to: tokens refreshed, every echo served, and
            # echoed secrets reached the errors' bodies (redacted).
            assert emu.stats.tokens_issued >= 3
            assert not any(plan.values()), plan
            assert len(errors) >= 12
            assert any("***" in str(getattr(e, "body", "")) for e in errors)
            # Looked at while the clients are open (sessions, limiters, caches alive)...
            walked = _walk([clients, errors, kept, caplog.records])
            leaks = in_flight + _leaks(walked) + _leaks(returns.objects.values())
            leaks += _leaks(_live_objects_of_ours())
        finally:
            for client in clients:
                await client.aclose()
    await asyncio.sleep(0)
    # ...and after they closed.
    leaks += _leaks(_walk([clients, errors, kept])) + _leaks(_live_objects_of_ours())
    leaks += [f"log: {r.getMessage()}" for r in caplog.records if MARK in r.getMessage()]
    leaks += ["log text"] if MARK in caplog.text else []
    leaks += telemetry.leaks()
    assert not list(dict.fromkeys(leaks)), "\n".join(dict.fromkeys(leaks))


def test_an_attempts_outcome_shows_neither_its_answer_nor_its_headers() -> None:
    """What one attempt came to holds the raw answer and headers, as the provider sent them
    (a voice answer echoing the key is redacted only once the call returns it)."""
    req: Request[Any] = Request("POST", "/claim-number/", msgspec.json.Decoder(), empty_ok=True)
    raw = json.dumps({"api_key": VOICE_KEY}).encode()
    outcome = classify(req, 201, raw, {"X-Echo": f"Bearer {VOICE_KEY}"})
    assert outcome.kind is Kind.ANSWER and outcome.value == {"api_key": VOICE_KEY}
    assert MARK not in repr(outcome) and MARK not in str(outcome)
    assert "201" in repr(outcome)

"""The ``esim-async`` command line: usage, fleet sweeps, the fleet monitor, webhooks and the
bundled emulator.

Credentials come from flags or the environment (``AIRALO_CLIENT_ID``, ``AIRALO_CLIENT_SECRET``,
``PRESSONE_CLIENT_ID``, ``PRESSONE_CLIENT_SECRET``, ``PRESSONE_BASE_URL``), read by the clients'
``from_env`` (the names are ``AiraloClient.ENV_VARS`` and ``PressOneClient.ENV_VARS``), and are
never echoed.

Exit codes: 0 every ICCID answered, 1 at least one ICCID ended in error, 2 bad usage,
130 interrupted.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import io
import json
import os
import signal
import sqlite3
import stat
import sys
from collections import Counter, deque
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._version import __version__
from .client import AiraloClient, BaseClient, PressOneClient
from .clock import MonotonicClock
from .errors import InvalidIccidError, InvalidRequestError
from .limits import Rate
from .sweep import RECORD_USAGE_FIELDS, SweepProgress, UsageResult, usage_fields

if TYPE_CHECKING:
    from .monitor import FleetMonitor, UsageEvent
    from .testing import ServerLimits

__all__ = ["main"]

RECORD_FIELDS = (
    "iccid",
    *RECORD_USAGE_FIELDS,
    "from_cache",
    "fetched_at",
    "error",
    "error_message",
    "error_status",
)
EMULATOR_ID = "emulator"
EMULATOR_SECRET = "emulator-secret"  # noqa: S105 - the emulator accepts any credentials
#: The flag that stands for each client argument the environment can give.
_FLAGS = {
    "client_id": "--client-id/--client-secret",
    "client_secret": "--client-id/--client-secret",
    "base_url": "--base-url",
}
#: The emulator demonstration of the monitor runs the providers' time 1,200 times faster:
#: their 20-minute usage cache lasts a second, and their limits are scaled the same way.
EMULATOR_SCALE = 1200.0
EMULATOR_CACHE_TTL = 1.0
EMULATOR_COMPANY_RATE = Rate(50, 1.0)
EMULATOR_ICCID_RATE = Rate(10, 3.0)
#: The monitor's thresholds when none are given (fractions of data used).
DEFAULT_THRESHOLDS = (0.75, 0.9)
#: Events kept on screen by the live view.
RECENT_EVENTS = 8
#: What a file that is not a usable monitor store raises (not SQLite, damaged, newer).
_STORE_ERRORS = (sqlite3.Error, msgspec.MsgspecError)
_SYSTEM_CLOCK = MonotonicClock()
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

F = TypeVar("F", bound=Callable[..., Any])


def _options(*options: Callable[[Any], Any]) -> Callable[[F], F]:
    """One decorator applying ``options`` in the order they are listed (as ``--help`` shows)."""

    def apply(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def _parse_rate(_ctx: Any, _param: Any, value: str | None) -> Rate | None:
    if value is None:
        return None
    try:
        count, _, period = value.partition("/")
        return Rate(int(count), float(period or 1))
    except ValueError as exc:
        raise click.BadParameter(f"expected COUNT/SECONDS such as 5/1, got {value!r}") from exc


def _parse_thresholds(_ctx: Any, _param: Any, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        marks = tuple(sorted({float(part) for part in value.split(",") if part.strip()}))
    except ValueError as exc:
        raise click.BadParameter(f"expected fractions such as 0.75,0.9, got {value!r}") from exc
    if not marks or any(not (0.0 < t <= 1.0) for t in marks):
        raise click.BadParameter("thresholds are fractions of data used, each in (0, 1]")
    return marks


_rates = _options(
    *(
        click.option(
            f"--{name}-rate",
            metavar="COUNT/SECONDS",
            callback=_parse_rate,
            help=f"Override the per-{label} usage limit, e.g. {example}.",
        )
        for name, label, example in (("company", "company", "5/1"), ("iccid", "ICCID", "10/60"))
    )
)
_duration = click.option(
    "--duration",
    type=click.FloatRange(min=0.0),
    help="Stop after this many seconds (default: run until interrupted).",
)
_port = click.option("--port", type=click.IntRange(0, 65535), default=8080)
_as_json = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
_refresh = click.option("--refresh", is_flag=True, help="Skip cached values.")
_metrics = _options(
    click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        help="Serve Prometheus metrics at http://METRICS_HOST:PORT/metrics.",
    ),
    click.option(
        "--metrics-host",
        default="127.0.0.1",
        help="Address of the metrics page (loopback by default).",
    ),
)


def _emulator_options(size: int, what: str) -> Callable[[F], F]:
    return _options(
        click.option("--emulator", is_flag=True, help=what + " (no credentials needed)."),
        click.option(
            "--emulator-size",
            type=click.IntRange(min=1),
            default=size,
            help="eSIMs in the emulator's fleet.",
        ),
    )


@dataclass
class Settings:
    """The options every API command shares."""

    provider: str
    client_id: str | None
    client_secret: str | None = field(repr=False)
    base_url: str | None
    sandbox: bool
    company_rate: Rate | None
    iccid_rate: Rate | None

    def client(self, *, emulator: str | None = None, **overrides: Any) -> BaseClient:
        """The provider's client from ``from_env``, the flags winning over the environment
        (``emulator``: a bundled emulator's URL; ``overrides``: more constructor keywords). A
        missing variable or a bad setting is a usage error (exit 2)."""
        names = ("client_id", "client_secret", "base_url", "company_rate", "iccid_rate")
        options: dict[str, Any] = {name: value for name in names if (value := getattr(self, name))}
        if emulator is not None:
            options.update(client_id=EMULATOR_ID, client_secret=EMULATOR_SECRET, base_url=emulator)
        options.update(overrides)
        try:
            if self.provider == "pressone":
                return PressOneClient.from_env(**options)
            return AiraloClient.from_env(sandbox=self.sandbox, **options)
        except InvalidRequestError as exc:
            flag = _FLAGS.get(exc.field or "")
            raise click.UsageError(f"{exc} (or pass {flag})" if flag else str(exc)) from None


_common = _options(
    click.option(
        "--provider",
        type=click.Choice(["airalo", "pressone"]),
        default="airalo",
        envvar="ESIM_PROVIDER",
        help="Which API to call.",
    ),
    click.option(
        "--client-id",
        help=(
            f"API client id (default: ${AiraloClient.ENV_VARS.client_id} or "
            f"${PressOneClient.ENV_VARS.client_id})."
        ),
    ),
    click.option(
        "--client-secret", help="API client secret (default: from the environment; never echoed)."
    ),
    click.option(
        "--base-url",
        help=f"Scheme + host (PressOne: default ${PressOneClient.ENV_VARS.base_url}).",
    ),
    click.option("--sandbox", is_flag=True, help="Airalo Sandbox mode (usage cached 60 min)."),
    _rates,
)


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


async def _wait(duration: float | None) -> None:
    """Wait ``duration`` seconds, or until cancelled when it is ``None``."""
    await (asyncio.Event().wait() if duration is None else asyncio.sleep(duration))


def _table(title: str, rows: Iterable[tuple[str, object]], **options: Any) -> Table:
    """A two-column table of ``(label, value)`` rows, without a header."""
    table = Table(title=title, show_header=False, **options)
    for label, value in rows:
        table.add_row(label, str(value))
    return table


def _counted(prefix: str, counts: dict[str, int]) -> list[tuple[str, object]]:
    return [(f"  {prefix} {name}", count) for name, count in sorted(counts.items())]


def _server_limits(
    kind: str, company: Rate | None, iccid: Rate | None, **changes: Any
) -> ServerLimits:
    """The emulator's limits of ``kind`` (``airalo``, ``pressone``, ``none``), with the usage
    limits given overriding its own, and the further ``changes``."""
    from .testing import ServerLimits

    limits: ServerLimits = getattr(ServerLimits, "unlimited" if kind == "none" else kind)()
    return replace(
        limits,
        usage_company=company or limits.usage_company,
        usage_iccid=iccid or limits.usage_iccid,
        **changes,
    )


def _open_iccids(stack: contextlib.AsyncExitStack, source: str) -> IO[str]:
    """``source`` opened for reading (stdin for ``-``) as UTF-8, or as UTF-16 when it is a
    regular file starting with a UTF-16 byte order mark (a file saved as "Unicode" on Windows;
    a pipe reads once, so it is not looked at first). A byte that does not decode reads as
    U+FFFD (its line is then no ICCID); a file that cannot be opened is a usage error."""
    if source == "-":
        stdin = sys.stdin
        if isinstance(stdin, io.TextIOWrapper):
            stdin.reconfigure(errors="replace")
        return stdin
    try:
        encoding = "utf-8"
        if stat.S_ISREG(os.stat(source).st_mode):
            with open(source, "rb") as f:
                if f.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
                    encoding = "utf-16"
        return stack.enter_context(open(source, encoding=encoding, errors="replace"))
    except OSError as exc:
        raise click.UsageError(f"cannot read --iccids {source}: {exc.strerror or exc}") from None


def _line_iccid(line: str) -> str | None:
    """The ICCID of a line: its text without the blanks and byte order marks around it (an
    editor may start a file with one, and joined files keep theirs); ``None`` for a blank
    line or a ``#`` comment."""
    text = line.strip().strip("\ufeff").strip()
    return text if text and not text.startswith("#") else None


def _open_events(stack: contextlib.AsyncExitStack, path: str) -> IO[str]:
    """``--events`` opened for appending (stdout for ``-``); a path that cannot be written is
    a usage error."""
    if path == "-":
        return sys.stdout
    try:
        return stack.enter_context(Path(path).open("a", encoding="utf-8"))
    except OSError as exc:
        raise click.UsageError(f"cannot write --events {path}: {exc.strerror or exc}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="esim-async")
def main() -> None:
    """Usage of eSIM fleets from Airalo and PressOne, at the full allowed rate."""


# --------------------------------------------------------------------------- usage


@main.command()
@click.argument("iccids", nargs=-1, required=True)
@_as_json
@_refresh
@_common
def usage(iccids: tuple[str, ...], as_json: bool, refresh: bool, **kw: Any) -> None:
    """Show the usage of one or more eSIMs."""
    settings = Settings(**kw)

    async def run() -> list[UsageResult]:
        async with (
            settings.client() as client,
            client.sims.usage_many(iccids, refresh=refresh, ordered=True) as results,
        ):
            return [r async for r in results]

    results = _run(run())
    if as_json:
        click.echo(json.dumps([r.as_record() for r in results], indent=2))
    else:
        table = Table(title="eSIM usage")
        table.add_column("ICCID", no_wrap=True)
        table.add_column("status", no_wrap=True)
        for column in ("data left", "voice left", "text left", "expires"):
            table.add_column(column)
        for r in results:
            if r.usage is None:
                table.add_row(r.iccid, f"[red]{type(r.error).__name__}[/red]", str(r.error))
                continue
            u = r.usage
            data = "unlimited" if u.is_unlimited else f"{u.remaining} / {u.total} MB"
            voice = f"{u.remaining_voice} / {u.total_voice} min" if u.total_voice else "-"
            text = f"{u.remaining_text} / {u.total_text}" if u.total_text else "-"
            expires = u.expired_at.strftime("%Y-%m-%d %H:%M UTC") if u.expired_at else "-"
            table.add_row(r.iccid, str(u.status), data, voice, text, expires)
        Console().print(table)
    if any(not r.ok for r in results):
        sys.exit(1)


# --------------------------------------------------------------------------- sweep


def _read_iccids(stream: IO[str], skip: set[str]) -> Iterator[str]:
    for line in stream:
        iccid = _line_iccid(line)
        if iccid is not None and iccid not in skip:
            yield iccid


class _CountedIccids:
    """The ICCIDs of a seekable stream (a file), counted by a quick pre-pass before the sweep
    starts: the sweep's progress knows its total from the first result."""

    def __init__(self, stream: IO[str], skip: set[str]) -> None:
        self._stream = stream
        self._skip = skip
        start = stream.tell()
        self._count = sum(1 for _ in _read_iccids(stream, skip))
        stream.seek(start)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[str]:
        return _read_iccids(self._stream, self._skip)


def _iccid_source(stream: IO[str], skip: set[str]) -> Iterable[str] | AsyncIterable[str]:
    """ICCIDs of ``stream``: counted first when it can be read twice (a file, stdin redirected
    from one); from a pipe or a socket, read by the event loop as they come (the requests under
    way go on while its writer is quiet; Windows cannot watch an inherited pipe)."""
    seekable, mode = False, 0
    with contextlib.suppress(OSError, ValueError):
        seekable = stream.seekable()
    if seekable:
        return _CountedIccids(stream, skip)
    with contextlib.suppress(OSError, ValueError):
        mode = os.fstat(stream.fileno()).st_mode
    if sys.platform != "win32" and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return _piped_iccids(stream, skip)
    return _read_iccids(stream, skip)


#: The longest line of a piped input read whole (a longer one is no ICCID: it is cut here).
_MAX_LINE = 64 * 1024


async def _piped_iccids(stream: IO[str], skip: set[str]) -> AsyncGenerator[str, None]:
    """The ICCIDs of a pipe, each as soon as its line comes (a blocking read would stop the
    whole sweep until the writer sends the next line). Close it with ``aclose`` before closing
    ``stream``: that stops watching the pipe and puts it back in blocking mode, as a shell's
    stdin shared with the commands that follow expects."""
    reader = asyncio.StreamReader(limit=_MAX_LINE)
    fd = stream.fileno()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(_set_blocking, fd, os.get_blocking(fd))
        pipe = cleanup.enter_context(open(fd, "rb", buffering=0, closefd=False))
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        cleanup.callback(transport.close)
        while True:
            try:
                raw = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                raw = exc.partial  # the last line, without its newline (or the end)
                if not raw:
                    return
            except asyncio.LimitOverrunError as exc:
                raw = await reader.readexactly(exc.consumed)  # one line that is no ICCID
                await _skip_line(reader)
            iccid = _line_iccid(raw.decode("utf-8", "replace"))
            if iccid is not None and iccid not in skip:
                yield iccid


def _set_blocking(fd: int, blocking: bool) -> None:
    """Put ``fd`` back in (non-)blocking mode, unless it is closed already."""
    with contextlib.suppress(OSError):
        os.set_blocking(fd, blocking)


async def _skip_line(reader: asyncio.StreamReader) -> None:
    """Read past the end of the current line."""
    while True:
        try:
            await reader.readuntil(b"\n")
            return
        except asyncio.IncompleteReadError:
            return
        except asyncio.LimitOverrunError as exc:
            await reader.readexactly(exc.consumed)


def _format_eta(seconds: float | None) -> str:
    """``H:MM:SS`` (``-:--:--`` while unknown), like rich's own time columns."""
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _answered(out: str, fmt: str) -> set[str]:
    """ICCIDs that already have an answer (not an error) in an earlier output file; a file
    that cannot be read, or holds results in the other format (told by its first line), is a
    usage error (exit 2)."""
    path = Path(out)
    if not path.exists():
        return set()
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as f:
            first = f.readline(4096)
            header = first.rstrip("\r\n") == ",".join(RECORD_FIELDS)
            written = "jsonl" if first.startswith("{") else "csv" if header else None
            if written not in (None, fmt):
                raise click.UsageError(
                    f"--out {out} holds {written} results: resume it with --format {written}"
                )
            f.seek(0)
            if fmt == "csv":
                # A row cut short by the interruption lacks its last fields: it is no answer.
                records: list[Any] = [r for r in csv.DictReader(f) if None not in r.values()]
            else:
                records = []
                for line in f:
                    with contextlib.suppress(ValueError):  # a line cut short by the interruption
                        records.append(json.loads(line))
    except (OSError, csv.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise click.UsageError(f"cannot read --out {path} to resume: {reason}") from None
    return {
        str(r["iccid"])
        for r in records
        if isinstance(r, dict) and r.get("iccid") and not r.get("error")
    }


def _is_input(source: str, out: str) -> bool:
    """Whether the results file ``out`` is the file the ICCIDs are read from: ``source`` itself,
    or for ``-`` the regular file stdin is redirected from (``< fleet.txt``)."""
    try:
        if source != "-":
            return os.path.samefile(source, out)
        stdin = os.fstat(sys.stdin.fileno())
        return stat.S_ISREG(stdin.st_mode) and os.path.samestat(stdin, os.stat(out))
    except (OSError, ValueError):
        return False  # (one of them does not exist yet, or there is no stdin file)


def _open_results(path: Path, resume: bool) -> IO[str]:
    """``--out`` opened for appending whatever ``resume`` says (:func:`_start_results` empties
    it); a path that cannot be written is a usage error, raised before any request."""
    try:
        return path.open("a", newline="", encoding="utf-8")
    except OSError as exc:
        raise click.UsageError(f"cannot write --out {path}: {exc.strerror or exc}") from None


def _start_results(stream: IO[str], path: Path, resume: bool, header: bool) -> None:
    """Make the ``--out`` file ready once every check has passed: emptied for a new sweep (a
    regular file; a device or a pipe has nothing to empty), or with the line an interruption
    cut short ended for ``resume``."""
    if not resume:
        if stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            stream.truncate(0)
    elif not header:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                stream.write("\n")


def _release(stream: IO[str], created: Path | None, started: list[bool]) -> None:
    """Close ``--out`` at the end (a failure to write was already reported), and remove the
    file ``created`` for a sweep that never started (a usage error)."""
    with contextlib.suppress(OSError):
        stream.close()
    if created is not None and not started:
        with contextlib.suppress(OSError):
            created.unlink()


#: What makes a spreadsheet read a cell as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cells(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with every text that a spreadsheet would read as a formula (a status or an
    error message the provider sent) made plain text by a leading ``'``; numbers stay."""
    return {
        name: "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value
        for name, value in record.items()
    }


def _writer(stream: IO[str] | None, fmt: str, header: bool) -> Callable[[UsageResult], Any]:
    """Writes one result as a JSON line or a CSV row to ``stream`` (nowhere when ``None``)."""
    if stream is None:
        return lambda result: None
    if fmt == "csv":
        rows = csv.DictWriter(stream, fieldnames=RECORD_FIELDS)
        if header:
            rows.writeheader()
        return lambda result: rows.writerow(_cells(result.as_record()))
    return lambda result: stream.write(json.dumps(result.as_record(), separators=(",", ":")) + "\n")


@contextlib.contextmanager
def _writing(target: str) -> Iterator[None]:
    """Make a failure to write to ``target`` (a full disk, a closed pipe...) a ClickException:
    raised out of the sweep, it stops the sweep. Also a decorator."""
    try:
        yield
    except OSError as exc:
        raise click.ClickException(f"cannot write --out {target}: {exc.strerror or exc}") from None


@main.command()
@click.option(
    "--iccids",
    "source",
    metavar="FILE|-",
    help=(
        "ICCIDs, one per line ('-' for stdin), in UTF-8; a file given by path may also be "
        "UTF-16 with a byte order mark (a pipe or stdin is read as UTF-8)."
    ),
)
@click.option("--out", default="-", metavar="FILE|-", help="Where results go ('-' for stdout).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl")
@click.option(
    "--resume", is_flag=True, help="Skip ICCIDs already answered in --out and append to it."
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Requests in flight (default: derived from the company limit).",
)
@_refresh
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@_emulator_options(300, "Sweep a generated fleet on the bundled emulator")
@_common
def sweep(
    source: str | None,
    out: str,
    fmt: str,
    resume: bool,
    concurrency: int | None,
    refresh: bool,
    quiet: bool,
    emulator: bool,
    emulator_size: int,
    **kw: Any,
) -> None:
    """Sweep the usage of a fleet, streaming results as JSON Lines or CSV.

    With --emulator, starts the bundled emulator in-process with a fleet of valid eSIMs and the
    provider's real limits, and sweeps it.
    """
    settings = Settings(**kw)
    if source is None and not emulator:
        raise click.UsageError("give --iccids FILE (or - for stdin), or --emulator")
    if resume and out == "-":
        raise click.UsageError("--resume needs --out FILE")
    console = Console(stderr=True)
    if emulator and out == "-" and sys.stdout.isatty():
        out = ""  # the progress bar and summary are the show; --out FILE keeps the results
    if source is not None and out not in ("", "-") and _is_input(source, out):
        what = "the --iccids file" if source != "-" else "the file stdin (--iccids -) reads"
        raise click.UsageError(f"--out {out} is {what}: the results would overwrite the ICCIDs")
    skip = _answered(out, fmt) if resume else set()
    received: list[int] = []  # the stop signals that came

    async def run() -> int:
        main_task = asyncio.current_task()
        assert main_task is not None
        try:
            async with contextlib.AsyncExitStack() as stack:
                stack.callback(_interrupt_on_signals(main_task, received))
                # The input and the output first: a path that cannot be read or written costs no
                # request, and --out loses nothing until every check has passed.
                iccids: Iterable[str] | AsyncIterable[str] | None = None
                if source is not None:
                    iccids = _iccid_source(_open_iccids(stack, source), skip)
                    if isinstance(iccids, AsyncGenerator):
                        # Closed before its stream is: it stops watching the pipe at once.
                        await stack.enter_async_context(contextlib.aclosing(iccids))
                out_stream: IO[str] | None = sys.stdout if out == "-" else None
                owned: IO[str] | None = None  # the --out file opened here
                header = True
                path = Path(out)
                started: list[bool] = []
                if out and out != "-":
                    header = not (resume and path.exists() and path.stat().st_size > 0)
                    created = None if path.exists() else path
                    out_stream = owned = _open_results(path, resume)
                    stack.callback(_release, owned, created, started)
                url = None
                if emulator:
                    from .testing import Emulator, Fleet

                    limits = _server_limits(
                        settings.provider, settings.company_rate, settings.iccid_rate
                    )
                    emu = await stack.enter_async_context(
                        Emulator(fleet=Fleet.generate(emulator_size, seed=2026), limits=limits)
                    )
                    url = emu.url
                    if not quiet:
                        console.print(
                            f"[bold]Emulator[/bold] on {emu.url} with {emulator_size} eSIMs "
                            f"and {settings.provider}'s limits"
                        )
                if iccids is None:
                    iccids = [i for i in emu.fleet.iccids() if i not in skip]
                client = await stack.enter_async_context(settings.client(emulator=url))
                # Every check has passed: the sweep starts.
                started.append(True)
                with _writing(out):
                    if owned is not None:
                        _start_results(owned, path, resume, header)
                    write = _writing(out)(_writer(out_stream, fmt, header))  # (a CSV header)
                # Closing --out flushes it: a file system may report a failure to write only then.
                finish = _writing(out)(owned.close if owned is not None else sys.stdout.flush)
                progress = Progress(
                    TextColumn("[bold]sweep"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[sweep].rate:.1f}/s"),
                    TextColumn("cache {task.fields[sweep].cache_hits}"),
                    TextColumn("errors {task.fields[sweep].errors}"),
                    TimeElapsedColumn(),
                    TextColumn("eta {task.fields[eta]}"),
                    console=console,
                    disable=quiet or not console.is_terminal,
                )

                def show(p: SweepProgress) -> dict[str, Any]:
                    return {"total": p.total, "sweep": p, "eta": _format_eta(p.eta)}

                swept = client.sims.usage_many(
                    iccids,
                    refresh=refresh,
                    concurrency=concurrency,
                    progress=lambda p: progress.update(task, completed=p.done, **show(p)),
                )
                # A sized input (a counted file, the emulator's fleet) shows its total and ETA from
                # the first frame, before any result.
                task = progress.add_task("sweep", **show(swept.progress))
                # A failure to write raises out of the sweep, which stops it: nothing more is asked
                # for that cannot be kept.
                with progress:
                    async with swept as results:
                        try:
                            async for result in results:
                                write(result)
                        except asyncio.CancelledError:
                            if not received:
                                raise
                            main_task.uncancel()
                            # Stopped by a signal: the sweep is closed, and what it had already
                            # received is written before the end.
                            async for result in results:
                                write(result)
                    finish()
                if received:
                    click.echo("interrupted", err=True)
                    return 130
                summary = swept.summary
                if not quiet:
                    notes = [f"{len(skip)} skipped (already answered)"] if resume else []
                    if emulator:
                        notes.append(f"429s from the emulator: {client.stats.rate_limited}")
                    rate = summary.total / summary.elapsed if summary.elapsed else 0.0
                    rows: list[tuple[str, object]] = [
                        ("eSIMs", summary.total),
                        ("answered", summary.ok),
                        ("errors", summary.errors),
                        ("from cache", summary.from_cache),
                        *_counted("status", summary.by_status),
                        *_counted("error", summary.by_error),
                        ("nearly out of data (<= 10 %)", summary.low_data_count),
                        ("time", f"{summary.elapsed:.1f} s ({rate:.1f} eSIMs/s)"),
                    ]
                    if notes:
                        rows.append(("", "; ".join(notes)))
                    console.print(_table("Sweep summary", rows))
                return 1 if summary.errors else 0
        except asyncio.CancelledError:
            if not received:
                raise
            main_task.uncancel()
            click.echo("interrupted", err=True)
            return 130

    try:
        code = _run(run())
    finally:
        if received:
            # Python's exit puts the default handlers back, by which a further signal would
            # end the process with -15 or -2 instead of 130: ignore them from now on.
            for sig in _STOP_SIGNALS:
                with contextlib.suppress(ValueError):  # not the main thread
                    signal.signal(sig, signal.SIG_IGN)
    sys.exit(code)


def _interrupt_on_signals(task: asyncio.Task[Any], received: list[int]) -> Callable[[], None]:
    """On a first SIGINT or SIGTERM, note it in ``received`` and cancel ``task`` (which then
    ends cleanly); a second one raises :class:`KeyboardInterrupt` at once, even out of a
    blocking read (exit code 130).

    Returns what to call when ``task`` has ended: it puts the previous handlers back when no
    signal came (one not installed from Python cannot be, and is skipped); else the process
    is ending with 130, and any further signal ends it with 130 at once."""
    loop = asyncio.get_running_loop()
    finishing = False  # once set, a signal ends the process at once

    def handler(number: int, _frame: object) -> None:
        nonlocal finishing
        if not received:
            received.append(number)
            loop.call_soon_threadsafe(task.cancel)
            return
        if finishing:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):  # (the signal may come mid-write)
                    stream.flush()
            os._exit(130)
        finishing = True
        raise KeyboardInterrupt

    previous: dict[int, Any] = {}
    for sig in _STOP_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:
            continue  # not the main thread: Ctrl-C interrupts as usual

    def restore() -> None:
        nonlocal finishing
        if received:
            finishing = True
            return
        for sig, old in previous.items():
            if old is not None:
                signal.signal(sig, old)

    return restore


# --------------------------------------------------------------------------- emulator


@main.command(name="emulator")
@click.option(
    "--host",
    default="127.0.0.1",
    type=click.Choice(["127.0.0.1", "localhost", "::1"]),
    help="Loopback only.",
)
@_port
@click.option("--fleet", "size", type=click.IntRange(min=1), default=300)
@click.option("--seed", type=int, default=2026)
@click.option("--limits", type=click.Choice(["airalo", "pressone", "none"]), default="airalo")
@click.option("--algorithm", type=click.Choice(["sliding", "fixed"]), default="sliding")
@click.option(
    "--iccids-out", type=click.Path(dir_okay=False), help="Write the fleet's ICCIDs to this file."
)
@_duration
@_rates
@click.option(
    "--tls",
    is_flag=True,
    help="Serve https with a throwaway certificate for loopback (for https-only clients).",
)
@click.option(
    "--cert-out",
    type=click.Path(dir_okay=False),
    help="With --tls: write the certificate clients should trust here (PEM), e.g. for "
    "SSL_CERT_FILE or NODE_EXTRA_CA_CERTS.",
)
def emulator_command(
    host: str,
    port: int,
    size: int,
    seed: int,
    limits: str,
    algorithm: str,
    iccids_out: str | None,
    duration: float | None,
    company_rate: Rate | None,
    iccid_rate: Rate | None,
    tls: bool,
    cert_out: str | None,
) -> None:
    """Serve the bundled emulator (Airalo /v2 and PressOne /customer/v2) on loopback.

    With --tls it serves https; the certificate to trust is written to --cert-out (or a
    temporary file whose path is printed), so clients in any language can verify it.
    """
    from .testing import Emulator, Fleet

    if cert_out is not None and not tls:
        raise click.UsageError("--cert-out needs --tls")
    server_limits = _server_limits(limits, company_rate, iccid_rate, algorithm=algorithm)
    fleet = Fleet.generate(size, seed=seed)
    if iccids_out:
        Path(iccids_out).write_text("\n".join(fleet.iccids()) + "\n")

    async def serve() -> None:
        async with Emulator(
            fleet=fleet, limits=server_limits, host=host, port=port, tls=tls, cert_out=cert_out
        ) as emu:
            click.echo(
                f"emulator listening on {emu.url} ({size} eSIMs, {limits} limits, "
                f"{algorithm} window); any client id and secret are accepted"
            )
            if emu.cert_path is not None:
                click.echo(f"certificate to trust: {emu.cert_path}")
            await _wait(duration)

    _run(serve())


# --------------------------------------------------------------------------- webhooks


@main.group()
def webhooks() -> None:
    """Receive Airalo's signed notifications."""


@webhooks.command(name="serve")
@click.option(
    "--host",
    default="127.0.0.1",
    help="Address to bind (put a TLS-terminating proxy in front in production).",
)
@_port
@click.option("--path", default="/", help="Where the receiver is mounted.")
@click.option(
    "--secret-env",
    default=AiraloClient.ENV_VARS.client_secret,
    help="Environment variable holding the signing secret (your client secret).",
)
@click.option("--ack", type=click.Choice(["immediate", "after_handler"]), default="immediate")
@_duration
@_metrics
def webhooks_serve(
    host: str,
    port: int,
    path: str,
    secret_env: str,
    ack: str,
    duration: float | None,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Receive notifications and print each verified event as a JSON line."""
    from aiohttp import web

    from .metrics import serve_app
    from .webhooks import RECEIVER, WebhookEvent, webhook_app

    secret = os.environ.get(secret_env)
    if not secret:
        raise click.UsageError(f"set {secret_env} to the signing secret")
    by_type: Counter[str] = Counter()

    async def on_event(event: WebhookEvent) -> None:
        by_type[type(event).__name__] += 1
        record = {"event": type(event).__name__, **msgspec.to_builtins(event)}
        click.echo(json.dumps(record, separators=(",", ":"), default=str))

    async def serve() -> None:
        receiver = webhook_app(secret, on_event=on_event, ack=ack)  # type: ignore[arg-type]
        root = receiver
        if path not in ("", "/"):
            root = web.Application()
            root.add_subapp(path.rstrip("/"), receiver)
        async with contextlib.AsyncExitStack() as stack:
            bound = await stack.enter_async_context(serve_app(root, host, port))
            click.echo(f"receiving notifications on http://{host}:{bound}{path}", err=True)
            if metrics_port is not None:
                from .metrics import WebhookCollector

                collector = WebhookCollector(receiver[RECEIVER].stats, by_type)
                await _serve_metrics(stack, collector, metrics_host, metrics_port)
            await _wait(duration)

    _run(serve())


async def _serve_metrics(
    stack: contextlib.AsyncExitStack, collector: Any, host: str, port: int
) -> None:
    """Serve ``collector`` at ``http://host:port/metrics`` until ``stack`` closes."""
    from .metrics import new_registry, serve_metrics

    try:
        registry = new_registry(collector)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    bound = await stack.enter_async_context(serve_metrics(registry, host, port))
    click.echo(f"metrics on http://{host}:{bound}/metrics", err=True)


# --------------------------------------------------------------------------- monitor


def event_record(event: UsageEvent) -> dict[str, object]:
    """A monitor event as a flat, JSON-ready dict (one JSON Lines record)."""
    return {
        "iccid": event.iccid,
        "kind": event.kind,
        "threshold": event.threshold,
        "level": event.level,
        "detected_at": event.detected_at.isoformat(),
        **usage_fields(event.usage),
    }


def _listed_iccids(stream: IO[str], source: str) -> dict[str, int]:
    """The ICCIDs of ``stream``, each with the number of the line it first appears on."""
    listed: dict[str, int] = {}
    try:
        for number, line in enumerate(stream, start=1):
            iccid = _line_iccid(line)
            if iccid is not None:
                listed.setdefault(iccid, number)
    except (OSError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"cannot read --iccids {source}: {exc}") from None
    return listed


@dataclass
class _ResumedClock:
    """The emulator's clock for the demonstration: monotonic time from ``base`` on, so a
    resumed run continues the fleet's life where the previous one stopped."""

    base: float = 0.0
    start: float = field(default_factory=_SYSTEM_CLOCK.now)

    def now(self) -> float:
        return self.base + (_SYSTEM_CLOCK.now() - self.start)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@dataclass
class _LiveView:
    """What the terminal shows while the monitor runs."""

    monitor: FleetMonitor
    client: BaseClient
    title: str
    recent: deque[UsageEvent] = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))
    #: When the read rate was last worked out, and the reads then.
    last: tuple[float, int] = field(default_factory=lambda: (_SYSTEM_CLOCK.now(), 0))
    rate: float = 0.0

    def __rich__(self) -> Table:
        from .metrics import fleet_summary

        stats = self.monitor.stats
        now, reads = _SYSTEM_CLOCK.now(), stats.reads
        then, before = self.last
        if now - then >= 1.0:
            self.rate = (reads - before) / (now - then)
            self.last = (now, reads)
        summary = fleet_summary(self.monitor)
        rows: list[tuple[str, object]] = [
            ("tracked", summary.tracked),
            ("by status", ", ".join(f"{k} {v}" for k, v in sorted(summary.by_status.items()))),
            ("reads", f"{stats.reads} ({self.rate:.1f}/s), errors {stats.errors}"),
            ("429s", self.client.stats.rate_limited),
            ("near a threshold", summary.near_threshold),
            ("events", ", ".join(f"{k} {v}" for k, v in sorted(stats.events.items())) or "-"),
        ]
        for event in reversed(self.recent):
            what = event.kind if event.threshold is None else f"{event.kind} {event.threshold:g}"
            rows.append((event.detected_at.strftime("%H:%M:%S"), f"{event.iccid} {what}"))
        return _table(self.title, rows, expand=False)


@main.group(invoke_without_command=True)
@click.option("--iccids", "source", metavar="FILE|-", help="ICCIDs to track, one per line.")
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    help="SQLite file keeping the monitor's state: a later run resumes from it.",
)
@click.option(
    "--events",
    "events_out",
    metavar="FILE|-",
    help="Append each event as a JSON line to FILE ('-' for stdout).",
)
@click.option(
    "--thresholds",
    default="0.75,0.9",
    callback=_parse_thresholds,
    help="Fractions of data used to report, comma-separated.",
)
@click.option(
    "--share",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=1.0,
    help="Fraction of the usage budget the monitor may use.",
)
@_duration
@_emulator_options(
    200, "Monitor a draining fleet on the bundled emulator, 1,200 times faster than real time"
)
@_metrics
@click.option("--quiet", "-q", is_flag=True, help="No live view.")
@_common
@click.pass_context
def monitor(
    ctx: click.Context,
    /,
    source: str | None,
    db: str | None,
    events_out: str | None,
    thresholds: tuple[float, ...],
    share: float,
    duration: float | None,
    emulator: bool,
    emulator_size: int,
    metrics_port: int | None,
    metrics_host: str,
    quiet: bool,
    **kw: Any,
) -> None:
    """Watch a fleet's usage and report threshold crossings, status changes, exhaustion and
    coming expiries as they happen.

    Ctrl-C stops cleanly; with --db the next run resumes (nothing reported is reported
    again). The live view shows on a terminal only.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = Settings(**kw)
    if source is None and not emulator:
        raise click.UsageError("give --iccids FILE (or - for stdin), or --emulator")
    console = Console(stderr=True)

    async def run() -> int:
        from rich.live import Live

        from .monitor import FleetMonitor

        received: list[int] = []
        async with contextlib.AsyncExitStack() as stack:
            stopped = _stop_on_signals(stack, received)
            options: dict[str, Any] = {}
            if emulator:
                options, iccids = await _monitor_emulator(stack, settings, emulator_size, db)
            else:
                assert source is not None
                lines = _listed_iccids(_open_iccids(stack, source), source)
                iccids = list(lines)
            out = _open_events(stack, events_out) if events_out else None
            client = await stack.enter_async_context(settings.client(**options))
            fleet_monitor = FleetMonitor(client, thresholds, store=db, share=share)
            try:
                await fleet_monitor.track(iccids)
            except InvalidIccidError as exc:
                where = f", line {lines[exc.iccid]}" if exc.iccid in lines else ""
                raise click.UsageError(f"--iccids {source}{where}: {exc}") from None
            except _STORE_ERRORS as exc:
                raise click.UsageError(
                    f"cannot use --db {db} as the monitor's store: {exc}"
                ) from None
            if metrics_port is not None:
                from .metrics import MonitorCollector

                collector = MonitorCollector(fleet_monitor, client)
                await _serve_metrics(stack, collector, metrics_host, metrics_port)
            title = "fleet monitor" + (" (emulator)" if emulator else "")
            view = _LiveView(fleet_monitor, client, title)
            show = not quiet and console.is_terminal

            async def consume() -> None:
                async for event in fleet_monitor.events():
                    view.recent.append(event)
                    if out is not None:
                        out.write(json.dumps(event_record(event), separators=(",", ":")) + "\n")
                        out.flush()

            live = Live(view, console=console, refresh_per_second=2) if show else None
            with live or contextlib.nullcontext():
                consumer = asyncio.ensure_future(consume())
                try:
                    async with fleet_monitor:
                        await asyncio.wait(
                            {stopped, consumer}, timeout=duration, return_when="FIRST_COMPLETED"
                        )
                finally:
                    # The monitor has stopped: the consumer takes what is left, then ends.
                    await consumer
            if show:
                console.print(
                    f"stopped after {fleet_monitor.stats.reads} reads"
                    + ("; run again with the same --db to resume" if db else ""),
                    highlight=False,
                )
        return 130 if signal.SIGINT in received else 0

    sys.exit(_run(run()))


def _stored_thresholds(value: object) -> tuple[float, ...] | None:
    """The thresholds a store keeps (as written, in their order), if they are usable."""
    if not isinstance(value, list | tuple) or not value:
        return None
    if any(isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 1 for t in value):
        return None
    return tuple(float(t) for t in value)


def _stop_on_signals(stack: contextlib.AsyncExitStack, received: list[int]) -> asyncio.Future[None]:
    """Done at the first SIGINT or SIGTERM (each noted in ``received``), until ``stack`` closes."""
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[None] = loop.create_future()

    def on_signal(number: int) -> None:
        received.append(number)
        if not stopped.done():
            stopped.set_result(None)

    for sig in _STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, on_signal, int(sig))
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread, or no signals here: Ctrl-C interrupts instead
        stack.callback(loop.remove_signal_handler, sig)
    return stopped


class _SavedLife(msgspec.Struct):
    """What the demonstration's side file keeps of its fleet's life between runs."""

    elapsed: float = 0.0
    generated_at: datetime | None = None


async def _monitor_emulator(
    stack: contextlib.AsyncExitStack, settings: Settings, size: int, db: str | None
) -> tuple[dict[str, Any], list[str]]:
    """Start the demonstration emulator with a living fleet (resumed from ``db``'s side file
    when there is one, and saved to it at the end); returns the client's options for it, and
    its ICCIDs."""
    from .testing import Emulator, Fleet, ServerLimits
    from .testing.life import FleetLife

    life_file = Path(f"{db}.emulator.json") if db is not None else None
    saved = _SavedLife()
    if life_file is not None:
        with contextlib.suppress(OSError, msgspec.MsgspecError):  # missing or damaged: a new life
            saved = msgspec.json.decode(life_file.read_bytes(), type=_SavedLife)
    fleet = Fleet.generate(size, seed=2026, now=saved.generated_at)
    clock = _ResumedClock()
    company = settings.company_rate or EMULATOR_COMPANY_RATE
    iccid = settings.iccid_rate or EMULATOR_ICCID_RATE
    limits = ServerLimits(usage_company=company, usage_iccid=iccid, token=None)
    emu = Emulator(fleet=fleet, limits=limits, cache_ttl=EMULATOR_CACHE_TTL, clock=clock)
    life = FleetLife(emu, time_scale=EMULATOR_SCALE, seed=2026)
    clock.base = saved.elapsed  # the fleet's life resumes where it was
    life.attach()
    await stack.enter_async_context(emu)
    if life_file is not None:
        stack.callback(
            lambda: life_file.write_bytes(
                msgspec.json.encode(_SavedLife(clock.now(), fleet.generated_at))
            )
        )
    options = {"company_rate": company, "iccid_rate": iccid, "cache_ttl": EMULATOR_CACHE_TTL}
    return {"emulator": emu.url, **options}, list(fleet.iccids())


@monitor.command(name="status")
@click.option(
    "--db",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="The monitor's SQLite file.",
)
@click.option(
    "--thresholds",
    callback=_parse_thresholds,
    help=(
        "The thresholds the monitor runs with, for the near-threshold count [default: those "
        f"the store was last written with, else {','.join(map(str, DEFAULT_THRESHOLDS))}]."
    ),
)
@_as_json
def monitor_status(db: str, thresholds: tuple[float, ...] | None, as_json: bool) -> None:
    """Print a monitored fleet's state from its store: eSIMs by status, how many are near a
    threshold, the last event of each kind, and the ages of the freshest and stalest
    readings."""
    from .metrics import summarise
    from .monitor.store import SqliteStore

    async def load() -> tuple[list[Any], dict[str, Any], list[Any]]:
        store = SqliteStore(db, read_only=True)
        try:
            try:
                await store.open()
                rows, meta = await store.load()
                return rows, meta, await store.events()
            finally:
                await store.close()
        except _STORE_ERRORS as exc:
            raise click.UsageError(f"cannot read --db {db} as a monitor's store: {exc}") from None

    rows, meta, events = _run(load())
    # The fired marks of each row are bits in the order of the thresholds the store was
    # written with; without them, in the order of those given.
    written = _stored_thresholds(meta.get("thresholds"))
    marks = thresholds or (tuple(sorted(written)) if written else DEFAULT_THRESHOLDS)
    bits = written or marks

    summary = summarise(
        (
            (
                row.usage,
                None if row.read_at is None else datetime.fromtimestamp(row.read_at, UTC),
                [t for i, t in enumerate(bits) if row.fired & (1 << i) and t in marks],
                row.missing,
            )
            for _, row in rows
        ),
        marks,
    )
    counts = Counter(event.kind for event in events)
    last = {event.kind: event.detected_at for event in sorted(events, key=lambda e: e.detected_at)}
    last_event = {k: datetime.fromtimestamp(v, UTC).isoformat() for k, v in last.items()}
    if as_json:
        record: dict[str, Any] = {
            "tracked": summary.tracked,
            "by_status": summary.by_status,
            "near_threshold": summary.near_threshold,
            "events": counts,
            "last_event": last_event,
            "freshest_reading_age": summary.freshest_age,
            "stalest_reading_age": summary.stalest_age,
        }
        click.echo(json.dumps(record, indent=2, sort_keys=True))
        return
    rows_shown: list[tuple[str, object]] = [
        ("tracked", summary.tracked),
        *_counted("status", summary.by_status),
        ("near a threshold", summary.near_threshold),
        *[
            (f"  events {kind}", f"{count} (last {last_event[kind]})")
            for kind, count in sorted(counts.items())
        ],
    ]
    for name, age in (("freshest", summary.freshest_age), ("stalest", summary.stalest_age)):
        rows_shown.append((f"{name} reading", "-" if age is None else f"{age:.0f} s ago"))
    Console().print(_table(f"Fleet monitor: {db}", rows_shown))

"""The ``esim-async`` command line: usage, fleet sweeps and the bundled emulator.

Credentials come from flags or the environment (``AIRALO_CLIENT_ID``, ``AIRALO_CLIENT_SECRET``,
``PRESSONE_CLIENT_ID``, ``PRESSONE_CLIENT_SECRET``, ``PRESSONE_BASE_URL``) and are never echoed.

Exit codes: 0 every ICCID answered, 1 at least one ICCID ended in error, 2 bad usage,
130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ._version import __version__
from .client import AiraloClient, BaseClient, PressOneClient
from .limits import Rate
from .sweep import RECORD_USAGE_FIELDS, SweepProgress, SweepSummary, UsageResult

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


def _parse_rate(value: str | None) -> Rate | None:
    if value is None:
        return None
    try:
        count, _, period = value.partition("/")
        return Rate(int(count), float(period or 1))
    except ValueError as exc:
        raise click.BadParameter(f"expected COUNT/SECONDS such as 5/1, got {value!r}") from exc


@dataclass
class Settings:
    provider: str
    client_id: str | None
    client_secret: str | None
    base_url: str | None
    sandbox: bool
    company_rate: Rate | None
    iccid_rate: Rate | None

    def credentials(self) -> tuple[str, str]:
        prefix = self.provider.upper()
        cid = self.client_id or os.environ.get(f"{prefix}_CLIENT_ID")
        secret = self.client_secret or os.environ.get(f"{prefix}_CLIENT_SECRET")
        if not cid or not secret:
            raise click.UsageError(
                f"credentials missing: pass --client-id/--client-secret or set "
                f"{prefix}_CLIENT_ID and {prefix}_CLIENT_SECRET"
            )
        return cid, secret

    def client(
        self, *, base_url: str | None = None, cid: str | None = None, secret: str | None = None
    ) -> BaseClient:
        if cid is None or secret is None:
            cid, secret = self.credentials()
        options: dict[str, Any] = {}
        if self.company_rate is not None:
            options["company_rate"] = self.company_rate
        if self.iccid_rate is not None:
            options["iccid_rate"] = self.iccid_rate
        if self.provider == "pressone":
            url = base_url or self.base_url or os.environ.get("PRESSONE_BASE_URL")
            if not url:
                raise click.UsageError("PressOne needs --base-url or PRESSONE_BASE_URL")
            return PressOneClient(cid, secret, base_url=url, **options)
        if base_url or self.base_url:
            options["base_url"] = base_url or self.base_url
        return AiraloClient(cid, secret, sandbox=self.sandbox, **options)


def _common(f: Any) -> Any:
    options = [
        click.option(
            "--provider",
            type=click.Choice(["airalo", "pressone"]),
            default="airalo",
            show_default=True,
            envvar="ESIM_PROVIDER",
            help="Which API to call.",
        ),
        click.option(
            "--client-id",
            default=None,
            help="API client id (default: $AIRALO_CLIENT_ID or $PRESSONE_CLIENT_ID).",
        ),
        click.option(
            "--client-secret",
            default=None,
            help="API client secret (default: from the environment; never echoed).",
        ),
        click.option(
            "--base-url", default=None, help="Scheme + host (PressOne: default $PRESSONE_BASE_URL)."
        ),
        click.option("--sandbox", is_flag=True, help="Airalo Sandbox mode (usage cached 60 min)."),
        click.option(
            "--company-rate",
            default=None,
            metavar="COUNT/SECONDS",
            help="Override the per-company usage limit, e.g. 5/1.",
        ),
        click.option(
            "--iccid-rate",
            default=None,
            metavar="COUNT/SECONDS",
            help="Override the per-ICCID usage limit, e.g. 10/60.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _settings(kw: dict[str, Any]) -> Settings:
    return Settings(
        provider=kw.pop("provider"),
        client_id=kw.pop("client_id"),
        client_secret=kw.pop("client_secret"),
        base_url=kw.pop("base_url"),
        sandbox=kw.pop("sandbox"),
        company_rate=_parse_rate(kw.pop("company_rate")),
        iccid_rate=_parse_rate(kw.pop("iccid_rate")),
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="esim-async")
def main() -> None:
    """Usage of eSIM fleets from Airalo and PressOne, at the full allowed rate."""


# --------------------------------------------------------------------------- usage


@main.command()
@click.argument("iccids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--refresh", is_flag=True, help="Skip cached values.")
@_common
def usage(iccids: tuple[str, ...], as_json: bool, refresh: bool, **kw: Any) -> None:
    """Show the usage of one or more eSIMs."""
    settings = _settings(kw)

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
                table.add_row(
                    r.iccid, f"[red]{type(r.error).__name__}[/red]", str(r.error), "", "", ""
                )
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
        iccid = line.strip()
        if not iccid or iccid.startswith("#") or iccid in skip:
            continue
        yield iccid


def _answered(path: Path, fmt: str) -> set[str]:
    """ICCIDs that already have an answer (not an error) in an earlier output file."""
    done: set[str] = set()
    if not path.exists():
        return done
    with path.open(newline="") as f:
        if fmt == "csv":
            for row in csv.DictReader(f):
                if row.get("iccid") and not row.get("error"):
                    done.add(row["iccid"])
        else:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short by the interruption
                if isinstance(record, dict) and record.get("iccid") and not record.get("error"):
                    done.add(str(record["iccid"]))
    return done


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


class _Writer:
    def __init__(self, stream: IO[str] | None, fmt: str, header: bool) -> None:
        self._stream = stream
        self._csv: Any = None
        if stream is not None and fmt == "csv":
            self._csv = csv.DictWriter(stream, fieldnames=RECORD_FIELDS)
            if header:
                self._csv.writeheader()

    def write(self, result: UsageResult) -> None:
        if self._stream is None:
            return
        record = result.as_record()
        if self._csv is not None:
            self._csv.writerow(record)
        else:
            self._stream.write(json.dumps(record, separators=(",", ":")) + "\n")


def _print_summary(console: Console, summary: SweepSummary, extra: str = "") -> None:
    table = Table(title="Sweep summary", show_header=False)
    table.add_row("eSIMs", str(summary.total))
    table.add_row("answered", str(summary.ok))
    table.add_row("errors", str(summary.errors))
    table.add_row("from cache", str(summary.from_cache))
    for status, count in sorted(summary.by_status.items()):
        table.add_row(f"  status {status}", str(count))
    for kind, count in sorted(summary.by_error.items()):
        table.add_row(f"  error {kind}", str(count))
    table.add_row("nearly out of data (<= 10 %)", str(summary.low_data_count))
    rate = summary.total / summary.elapsed if summary.elapsed else 0.0
    table.add_row("time", f"{summary.elapsed:.1f} s ({rate:.1f} eSIMs/s)")
    if extra:
        table.add_row("", extra)
    console.print(table)


@main.command()
@click.option(
    "--iccids",
    "source",
    default=None,
    metavar="FILE|-",
    help="ICCIDs, one per line ('-' for stdin).",
)
@click.option(
    "--out",
    default="-",
    show_default=True,
    metavar="FILE|-",
    help="Where results go ('-' for stdout).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True
)
@click.option(
    "--resume", is_flag=True, help="Skip ICCIDs already answered in --out and append to it."
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Requests in flight (default: derived from the company limit).",
)
@click.option("--refresh", is_flag=True, help="Skip cached values.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@click.option(
    "--emulator",
    is_flag=True,
    help="Sweep a generated fleet on the bundled emulator (no credentials needed).",
)
@click.option(
    "--emulator-size",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="eSIMs in the emulator's fleet.",
)
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
    settings = _settings(kw)
    if source is None and not emulator:
        raise click.UsageError("give --iccids FILE (or - for stdin), or --emulator")
    if resume and out == "-":
        raise click.UsageError("--resume needs --out FILE")
    console = Console(stderr=True)
    if emulator and out == "-" and sys.stdout.isatty():
        out = ""  # the progress bar and summary are the show; --out FILE keeps the results
    code = _run(
        _sweep(
            settings,
            source,
            out,
            fmt,
            resume,
            concurrency,
            refresh,
            quiet,
            emulator,
            emulator_size,
            console,
        )
    )
    sys.exit(code)


async def _sweep(
    settings: Settings,
    source: str | None,
    out: str,
    fmt: str,
    resume: bool,
    concurrency: int | None,
    refresh: bool,
    quiet: bool,
    emulator: bool,
    emulator_size: int,
    console: Console,
) -> int:
    skip = _answered(Path(out), fmt) if resume else set()
    async with contextlib.AsyncExitStack() as stack:
        base_url = None
        cid = secret = None
        iccid_stream: Iterator[str]
        if emulator:
            from .testing import Emulator, Fleet, ServerLimits

            limits = (
                ServerLimits.airalo()
                if settings.provider == "airalo"
                else (ServerLimits.pressone())
            )
            if settings.company_rate is not None:
                limits.usage_company = settings.company_rate
            if settings.iccid_rate is not None:
                limits.usage_iccid = settings.iccid_rate
            emu = await stack.enter_async_context(
                Emulator(fleet=Fleet.generate(emulator_size, seed=2026), limits=limits)
            )
            base_url, cid, secret = emu.url, EMULATOR_ID, EMULATOR_SECRET
            if not quiet:
                console.print(
                    f"[bold]Emulator[/bold] on {emu.url} with {emulator_size} eSIMs "
                    f"and {settings.provider}'s limits"
                )
        if source is not None:
            stream = sys.stdin if source == "-" else stack.enter_context(open(source))  # noqa: SIM115
            iccid_stream = _read_iccids(stream, skip)
        else:
            assert emulator
            iccid_stream = (i for i in emu.fleet.iccids() if i not in skip)
        out_stream: IO[str] | None = None
        header = True
        if out == "-":
            out_stream = sys.stdout
        elif out:
            path = Path(out)
            header = not (resume and path.exists() and path.stat().st_size > 0)
            out_stream = stack.enter_context(
                path.open("a" if resume else "w", newline="", encoding="utf-8")
            )
            if resume and not header and not _ends_with_newline(path):
                out_stream.write("\n")  # close a line cut short by the interruption
        writer = _Writer(out_stream, fmt, header)
        client = await stack.enter_async_context(
            settings.client(base_url=base_url, cid=cid, secret=secret)
        )
        show = not quiet and console.is_terminal
        progress = Progress(
            TextColumn("[bold]sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f}/s"),
            TextColumn("cache {task.fields[hits]}"),
            TextColumn("errors {task.fields[errors]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not show,
            transient=False,
        )
        task: TaskID = progress.add_task("sweep", total=None, rate=0.0, hits=0, errors=0)

        def on_progress(p: SweepProgress) -> None:
            progress.update(
                task,
                completed=p.done,
                total=p.total,
                rate=p.rate,
                hits=p.cache_hits,
                errors=p.errors,
            )

        with progress:
            sweep = client.sims.usage_many(
                iccid_stream, refresh=refresh, concurrency=concurrency, progress=on_progress
            )
            async with sweep as results:
                async for result in results:
                    writer.write(result)
            if out_stream is not None:
                out_stream.flush()
        summary = sweep.summary
        if not quiet:
            extra = f"{len(skip)} skipped (already answered)" if resume else ""
            if emulator:
                extra = (extra + "; " if extra else "") + (
                    f"429s from the emulator: {client.stats.rate_limited}"
                )
            _print_summary(console, summary, extra)
        return 1 if summary.errors else 0


# --------------------------------------------------------------------------- emulator


@main.command(name="emulator")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    type=click.Choice(["127.0.0.1", "localhost", "::1"]),
    help="Loopback only.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--fleet", "size", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--seed", type=int, default=2026, show_default=True)
@click.option(
    "--limits",
    type=click.Choice(["airalo", "pressone", "none"]),
    default="airalo",
    show_default=True,
)
@click.option(
    "--algorithm", type=click.Choice(["sliding", "fixed"]), default="sliding", show_default=True
)
@click.option(
    "--iccids-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the fleet's ICCIDs to this file.",
)
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop after this many seconds (default: run until interrupted).",
)
@click.option(
    "--company-rate",
    default=None,
    metavar="COUNT/SECONDS",
    help="Override the per-company usage limit.",
)
@click.option(
    "--iccid-rate",
    default=None,
    metavar="COUNT/SECONDS",
    help="Override the per-ICCID usage limit.",
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
    company_rate: str | None,
    iccid_rate: str | None,
) -> None:
    """Serve the bundled emulator (Airalo /v2 and PressOne /customer/v2) on loopback."""
    from .testing import Emulator, Fleet, ServerLimits

    server_limits = {
        "airalo": ServerLimits.airalo,
        "pressone": ServerLimits.pressone,
        "none": ServerLimits.unlimited,
    }[limits]()
    server_limits.algorithm = algorithm  # type: ignore[assignment]
    if company_rate is not None:
        server_limits.usage_company = _parse_rate(company_rate)
    if iccid_rate is not None:
        server_limits.usage_iccid = _parse_rate(iccid_rate)
    fleet = Fleet.generate(size, seed=seed)
    if iccids_out:
        Path(iccids_out).write_text("\n".join(fleet.iccids()) + "\n")

    async def serve() -> None:
        async with Emulator(fleet=fleet, limits=server_limits, host=host, port=port) as emu:
            click.echo(
                f"emulator listening on {emu.url} ({size} eSIMs, {limits} limits, "
                f"{algorithm} window); any client id and secret are accepted"
            )
            if duration is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(duration)

    _run(serve())


@main.group()
def webhooks() -> None:
    """Receive Airalo's signed notifications."""


@webhooks.command(name="serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (put a TLS-terminating proxy in front in production).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--path", default="/", show_default=True, help="Where the receiver is mounted.")
@click.option(
    "--secret-env",
    default="AIRALO_CLIENT_SECRET",
    show_default=True,
    help="Environment variable holding the signing secret (your client secret).",
)
@click.option(
    "--ack",
    type=click.Choice(["immediate", "after_handler"]),
    default="immediate",
    show_default=True,
)
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop after this many seconds (default: run until interrupted).",
)
def webhooks_serve(
    host: str, port: int, path: str, secret_env: str, ack: str, duration: float | None
) -> None:
    """Receive notifications and print each verified event as a JSON line."""
    import msgspec
    from aiohttp import web

    from .webhooks import WebhookEvent, webhook_app

    secret = os.environ.get(secret_env)
    if not secret:
        raise click.UsageError(f"set {secret_env} to the signing secret")

    async def on_event(event: WebhookEvent) -> None:
        record = {"event": type(event).__name__, **msgspec.to_builtins(event)}
        click.echo(json.dumps(record, separators=(",", ":"), default=str))

    async def serve() -> None:
        receiver = webhook_app(secret, on_event=on_event, ack=ack)  # type: ignore[arg-type]
        root = web.Application()
        if path in ("", "/"):
            root = receiver
        else:
            root.add_subapp(path.rstrip("/"), receiver)
        runner = web.AppRunner(root, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound = runner.addresses[0][1] if runner.addresses else port
            click.echo(f"receiving notifications on http://{host}:{bound}{path}", err=True)
            if duration is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(duration)
        finally:
            await runner.cleanup()

    _run(serve())


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)

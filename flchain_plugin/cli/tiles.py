"""`flchain tiles export` and `flchain serve`: the log published as C2SP tlog-tiles, as
static files for any web server, or over HTTP straight from the ledger.

Both read the ledger only (it is opened read-only, so an archive can be published too).
"""

from __future__ import annotations

import contextlib
import socket
import sys
from pathlib import Path
from typing import Any

import click
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from ..tiles_export import ExportReport, TilesExportError, export_tiles
from .errors import Command, Group, InputError
from .root import Output, Settings, common_options, kv_table, open_ledger

PROGRESS_MIN = 50_000
"""Entries from which `tiles export` shows a progress bar on a terminal (as `verify`)."""


@click.group(cls=Group)
def tiles() -> None:
    """Publish the log as C2SP tlog-tiles (static files).

    https://c2sp.org/tlog-tiles; `flchain serve` answers the same paths over HTTP.
    """


@tiles.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: on a terminal for large ledgers).")
@common_options
def export(settings: Settings, out: Output, directory: Path, progress: bool | None) -> None:
    """Write or update DIRECTORY as tlog-tiles.

    checkpoint, tile/<L>/<N>[.p/<W>], tile/entries/<N>[.p/<W>] of the latest signed
    checkpoint. Only new tiles are written (a full tile never twice), each file
    atomically, the checkpoint last; a directory holding another log's tiles is refused.
    """
    with open_ledger(settings, read_only=True) as led:
        show = progress if progress is not None else (
            out.err.is_terminal and led.size >= PROGRESS_MIN)
        with Progress(TextColumn("exporting tiles"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=out.err, transient=True,
                      disable=not show) as bar:
            task = bar.add_task("export", total=None)
            try:
                report = export_tiles(led, directory, progress=lambda done, total: bar.update(
                    task, completed=done, total=total))
            except TilesExportError as e:
                raise InputError(str(e)) from e
    doc = _report_doc(report)
    out.emit(doc, lambda: out.console.print(Panel(kv_table([
        ("directory", report.directory), ("origin", report.origin),
        ("checkpoint", f"size {report.size}" + (
            f" (was {report.previous_size})" if report.previous_size else "")),
        ("tiles written", report.tiles), ("files written", report.files),
        ("bytes written", f"{report.bytes:,}"), ("time", f"{report.seconds:.3f} s")]),
        title="tiles exported", expand=False)))


def _report_doc(report: ExportReport) -> dict[str, Any]:
    return {"ok": True, "directory": str(report.directory), "origin": report.origin,
            "size": report.size, "previous_size": report.previous_size,
            "tiles": report.tiles, "files": report.files, "bytes": report.bytes,
            "seconds": report.seconds}


@click.command(cls=Command)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 or :: for every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on (0: any free port; the URL printed says which).")
@common_options
def serve(settings: Settings, out: Output, host: str, port: int) -> None:
    """Serve the log's tlog-tiles over HTTP, read-only.

    Straight from the ledger: GET /checkpoint and /tile/...: the bytes `tiles export`
    writes. Ctrl-C stops it.
    """
    import uvicorn

    from ..tiles_export import TilesExportError, published_checkpoint
    from ..tiles_http import tiles_app

    sock = _listen(host, port)
    with sock, open_ledger(settings, read_only=True) as led:
        try:  # a damaged store is refused here, not served to readers
            published_checkpoint(led)
        except TilesExportError as e:
            out.err.print(Text(f"warning: {e}; /checkpoint answers 404 until then",
                               style="yellow"))
        bound = sock.getsockname()
        url = f"http://{_url_host(bound[0])}:{bound[1]}/"
        doc = {"url": url, "ledger": str(settings.ledger), "origin": led.origin}
        out.emit(doc, lambda: out.console.print(Text.assemble(
            ("serving ", "dim"), (str(settings.ledger), "bold"), (" at ", "dim"),
            (url, "bold"), (" (Ctrl-C stops)", "dim"))))
        sys.stdout.flush()
        server = uvicorn.Server(uvicorn.Config(tiles_app(led), log_level="warning",
                                               lifespan="off"))
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C once stopped
            server.run(sockets=[sock])
    if not out.json:
        out.err.print(Text("stopped", style="dim"))


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a busy port is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another "
                         "--host or --port (--port 0 picks a free one)") from None
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host

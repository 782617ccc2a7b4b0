"""`flchain migrate SRC DST`: copy a ledger between SQLite and PostgreSQL, proven the same."""

from __future__ import annotations

from pathlib import Path

import click
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..ledger import Ledger
from ..migrate import CopyDiffers, NotAPrefix, migrate
from ..store import StoreError
from ..store.url import is_postgres_url
from .errors import Command, InputError, VerificationFailed
from .root import Output, Settings, common_options, kv_table, ledger_name, open_ledger


def _name(target: str) -> str:
    return ledger_name(Settings(Path(target), False, target))


def _open_destination(target: str, origin: str) -> Ledger:
    """The destination, created with the source's origin where there is no ledger yet."""
    try:
        return Ledger(target if is_postgres_url(target) else Path(target), origin=origin)
    except StoreError as e:
        if "ledger origin is" in str(e):
            raise InputError(f"{_name(target)} holds another ledger ({e}): migrate into an "
                             "empty database or a new file") from e
        raise InputError(str(e)) from e


@click.command(name="migrate", cls=Command)
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DST")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: on a terminal).")
@common_options
def migrate_(settings: Settings, out: Output, source: str, destination: str,
             progress: bool | None) -> None:
    """Copy the ledger SRC into DST (a file path or postgresql:// URL) and prove the copy.

    Entries go over batch by batch and are hashed again by DST, so every tree head is
    recomputed; checkpoints and metadata (origin, pinned key) follow. The copy must have
    the source's root at every stored size and verify. A DST that already holds a prefix
    of SRC is continued (rerun an interrupted migration); any other ledger is refused.
    """
    if _name(source) == _name(destination):
        raise InputError("SRC and DST are the same ledger: name another destination")
    with open_ledger(Settings(Path(source), settings.json, source)) as src, \
            _open_destination(destination, src.origin) as dst:
        show = progress if progress is not None else out.err.is_terminal
        with Progress(TextColumn("copying"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=out.err, transient=True,
                      disable=not show) as bar:
            task = bar.add_task("copy", total=src.size, completed=dst.size)
            try:
                done = migrate(src, dst, progress=lambda n, _: bar.update(task, completed=n))
            except NotAPrefix as e:
                raise InputError(f"{_name(destination)}: {e}") from e
            except CopyDiffers as e:
                raise VerificationFailed(f"{_name(destination)}: {e}") from e
    doc = {"source": _name(source), "destination": _name(destination), **done.to_json()}
    out.emit(doc, lambda: out.console.print(Panel(kv_table([
        ("source", doc["source"]), ("destination", doc["destination"]),
        ("origin", done.origin), ("entries", f"{done.size:,} ({done.copied_entries:,} copied)"),
        ("tree heads", f"{done.heads:,} ({done.copied_heads:,} copied)"),
        ("checkpoints copied", done.copied_checkpoints),
        ("roots checked", f"{done.checked_sizes:,} stored sizes, all equal"),
        ("root", doc["root"])]), title="ledger migrated", expand=False)))

"""`flchain mirror SOURCE LEDGER`: keep a verified copy of a tiles log (see `mirror`).

Exit 0 when the mirror is up to date, 1 when the source does not verify (a fork or a
rewrite, shown with the evidence kept; tampered tiles), 2 when the source cannot be read.
With --interval the command follows the log until interrupted; an unreachable source is
reported and retried at the next interval, anything that does not verify stops it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from .. import notes
from ..checkpoint import unverified_checkpoint
from ..mirror import MirrorConflict, MirrorError, MirrorReport, evidence_path, read_evidence
from ..mirror import mirror as run_mirror
from ..tile_source import TileSourceError
from .errors import Command, InputError, VerificationFailed
from .root import (
    Output,
    Settings,
    common_options,
    key_verifier_option,
    kv_table,
)


class SourceUnreachable(InputError):
    """The source could not be read (exit 2); `--interval` retries it."""


def _show_report(out: Output, r: MirrorReport) -> None:
    """One line (or JSON document) per run, and a warning while earlier conflicts are kept:
    a log that once signed two histories stays suspect after it goes back to one."""
    try:
        kept = read_evidence(r.ledger)
    except MirrorError as e:
        raise VerificationFailed(f"{e}: the evidence file was damaged; restore it from a "
                                 "copy") from None
    if out.json:
        click.echo(json.dumps({
            "ok": True, "status": r.status, "source": r.source, "ledger": r.ledger,
            "origin": r.origin, "old_size": r.old_size, "size": r.size, "root": r.root.hex(),
            "appended": r.appended, "evidence": len(kept)}, ensure_ascii=False))
    else:
        what = (f"{r.appended:,} entries verified and appended, size {r.old_size:,} -> "
                f"{r.size:,}" if r.appended else f"size {r.size:,}")
        out.console.print(Text.assemble((time.strftime("%H:%M:%S "), "dim"),
                                        (r.status, "bold"), f": {what}"))
    if kept:
        click.echo(f"flchain: warning: {evidence_path(r.ledger)} keeps {len(kept)} pair(s) of "
                   "conflicting checkpoints this log signed", err=True)


def _conflict(out: Output, e: MirrorConflict) -> VerificationFailed:
    ev = e.evidence
    doc = {"ok": False, "status": "conflict", "kind": ev.kind, "detail": ev.detail,
           "source": ev.source, "evidence": str(e.path), "mirrored": ev.mirrored,
           "offered": ev.offered}
    if not out.json:
        rows: list[tuple[str, Any]] = [("conflict", ev.kind), ("detail", ev.detail),
                                       ("evidence file", str(e.path))]
        for label, note in (("mirrored checkpoint", ev.mirrored),
                            ("offered checkpoint", ev.offered)):
            rows.append((label, _body(note)))
        out.console.print(Panel(kv_table(rows), title="the log signed two histories",
                                border_style="red", expand=False))
    return VerificationFailed(f"mirror refused {ev.source}: {e}", doc)


def _body(note: str) -> str:
    if not note:
        return "(none stored)"
    try:
        return unverified_checkpoint(note).body().rstrip("\n").replace("\n", " | ")
    except (ValueError, notes.NoteError):
        return note[:200]


def _once(out: Output, source: str, ledger: Path, key: notes.Verifier | None) -> MirrorReport:
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=out.err, transient=True,
                  disable=out.json or not out.err.is_terminal) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"{stage}ing", total=total)
            bar.update(tasks[stage], completed=done, total=total)

        try:
            return run_mirror(source, ledger, key, progress=progress)
        except MirrorConflict as e:
            raise _conflict(out, e) from None
        except MirrorError as e:
            raise VerificationFailed(str(e), {"ok": False, "status": "refused",
                                              "detail": str(e)}) from None
        except TileSourceError as e:
            raise SourceUnreachable(f"cannot read the source: {e}",
                             {"ok": False, "status": "unreachable", "detail": str(e)}) from None


@click.command(cls=Command)
@click.argument("source")
@click.argument("ledger", required=False, type=click.Path(dir_okay=False, path_type=Path))
@key_verifier_option("The log's verifier key (or a file holding it), pinned in the mirror at "
                     "its first run; later runs may omit it and refuse any other key.")
@click.option("--once", is_flag=True, help="Mirror once and exit (the default).")
@click.option("--interval", type=click.FloatRange(min=0.1), metavar="S",
              help="Follow the log: mirror every S seconds until interrupted.")
@common_options
def mirror(settings: Settings, out: Output, source: str, ledger: Path | None,
           key_verifier: notes.Verifier | None, once: bool, interval: float | None) -> None:
    """Keep LEDGER a verified copy of the tiles log at SOURCE (a directory or an http(s) URL).

    Checks the checkpoint's signature, a consistency proof from the last mirrored
    checkpoint (computed from the tiles), every new entry's leaf hash and the root, then
    appends the entries; a fork or a rewrite is refused and both checkpoints are kept in
    LEDGER.evidence.jsonl. LEDGER may be given as --ledger instead; every flchain command
    reads the mirror. With --json, one JSON document per run (JSON lines under --interval).
    """
    if once and interval is not None:
        raise click.UsageError("give --once or --interval, not both")
    target = _mirror_file(settings, ledger)
    if interval is None:
        _show_report(out, _once(out, source, target, key_verifier))
        return
    _follow(out, source, target, key_verifier, interval)


def _mirror_file(settings: Settings, ledger: Path | None) -> Path:
    """LEDGER, else --ledger (or $FLCHAIN_LEDGER, which often names the source's own
    ledger: so LEDGER wins); a mirror is never made at the default path."""
    if ledger is not None:
        return ledger
    if settings.chosen is None:
        raise click.UsageError("give the mirror's ledger file: LEDGER or --ledger")
    return settings.ledger


def _follow(out: Output, source: str, ledger: Path, key: notes.Verifier | None,
            interval: float) -> None:
    """Mirror every `interval` seconds; a source that cannot be read is retried."""
    while True:
        try:
            _show_report(out, _once(out, source, ledger, key))
        except SourceUnreachable as e:
            click.echo(f"flchain: warning: {e.message}; retrying in {interval:g} s", err=True)
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return

"""`flchain audit replay`: recompute every round from the committed updates (see `replay`).

Reads the ledger (the operator's, or a mirror of it) and the blob store only; exits 1
naming the first round whose recomputed model differs or whose inputs are missing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from ..blobs import BlobStore, default_root
from ..replay import ReplayReport, replay
from .errors import Group, VerificationFailed
from .root import Output, Settings, common_options, open_ledger, short_digest

STYLE = {"ok": "green", "differs": "red", "missing": "red", "erased": "yellow",
         "not_replayable": "yellow"}


@click.group(cls=Group)
def audit() -> None:
    """Check how the recorded models were made."""


@audit.command("replay")
@click.option("--blobs", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Blob store directory holding the weights and kept updates (default: "
                   "<ledger>.blobs; give the operator's when --ledger is a mirror).")
@common_options
def replay_(settings: Settings, out: Output, blobs: Path | None) -> None:
    """Recompute every round's model from its parent and the kept updates, with the
    recorded aggregator, and compare digests bit for bit.

    Exit status 1 if a round differs or an input is missing (erased inputs and rounds
    that cannot be recomputed, e.g. with DP noise, are reported, not failed).
    """
    store = BlobStore(blobs if blobs is not None else default_root(settings.ledger))
    logging.getLogger("flwr").setLevel(logging.WARNING)  # its per-aggregation INFO lines
    with open_ledger(settings) as led, Progress(
            TextColumn("replaying rounds"), BarColumn(), MofNCompleteColumn(),
            console=out.err, transient=True, disable=not out.err.is_terminal) as bar:
        task = bar.add_task("replay", total=None)
        report = replay(led, store, progress=lambda done, total: bar.update(
            task, completed=done, total=total))
    doc = report.to_json()
    if not out.json:
        _render(report, out)
    first = report.first_problem
    if first is not None:
        raise VerificationFailed(f"replay fails at run {first.run} round {first.round} "
                                 f"(entry {first.index}): {first.status}: {first.detail}", doc)
    out.emit(doc, lambda: None)


def _render(report: ReplayReport, out: Output) -> None:
    t = Table(title="replay")
    for c in ("run", "round", "entry", "model", "status", "detail"):
        t.add_column(c, overflow="fold")
    for r in report.rounds:
        style = STYLE.get(r.status, "")
        t.add_row(r.run, str(r.round), str(r.index), short_digest(r.model or "-"),
                  f"[{style}]{r.status}[/{style}]", r.detail)
    out.console.print(t)
    counts = ", ".join(f"{n} {s}" for s, n in report.counts().items() if n)
    out.console.print(f"{len(report.rounds)} rounds: {counts or 'none recorded'}")

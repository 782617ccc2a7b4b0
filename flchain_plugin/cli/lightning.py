"""`flchain lightning verify`: check checkpoint files against the ledger, outside a Trainer.

The same check LedgerCallback makes before a resume (`checkpoint_lineage`), for files about
to be loaded another way (`Module.load_from_checkpoint`, an inference server) or audited.
Framework-free: it reads the files and the ledger only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..digest import file_digest
from ..ledger import Ledger
from ..lightning.lineage import CheckpointLineageError, checkpoint_lineage
from ..notes import Verifier
from ..pinning import VERIFIER_ENV
from .errors import Group, VerificationFailed
from .root import Output, Settings, common_options, key_verifier_option, open_ledger


def _short(d: str | None) -> str:
    return d[7:19] if d else "-"


def check(led: Ledger, path: Path, verifier: Verifier | None = None) -> dict[str, Any]:
    """One file's verdict as JSON: its digest, and its lineage or why it has none.
    `verifier`: the log's pinned key; the lineage must then be covered by a checkpoint it
    signed (what a resume pinning that key requires)."""
    digest = file_digest(path)
    try:
        lin = checkpoint_lineage(led, digest, verifier=verifier)
    except CheckpointLineageError as e:
        return {"path": str(path), "file": digest, "ok": False, "problem": str(e)}
    return {
        "path": str(path), "file": digest, "ok": True, "tree_size": lin.size,
        "verifier": lin.verifier,
        "chain": [{"index": c.index, "name": c.entry.name, "epoch": c.entry.epoch,
                   "step": c.entry.step, "file": c.entry.file, "model": c.entry.model,
                   "parent": c.entry.parent}
                  for c in lin.chain],
        "datasets": [{"index": d.index, "dataset": d.entry.dataset, "name": d.entry.name,
                      "examples": d.entry.examples} for d in lin.datasets],
        "origin": None if lin.origin is None else {"index": lin.origin.index,
                                                   "type": lin.origin.entry.TYPE},
    }


def render(result: dict[str, Any], console: Console) -> None:
    """`check`'s verdict as the table `flchain lightning verify` prints."""
    if not result["ok"]:
        console.print(f"[red]UNVERIFIED[/red] {result['path']} ({result['file']}): "
                      f"{result['problem']}")
        return
    t = Table(title=f"{result['path']}: verified against tree size {result['tree_size']}")
    for c in ("entry", "checkpoint", "epoch", "step", "weights", "parent weights"):
        t.add_column(c)
    for c in result["chain"]:
        t.add_row(str(c["index"]), c["name"], str(c["epoch"]), str(c["step"]),
                  _short(c["model"]), _short(c["parent"]))
    if result["origin"]:
        o = result["origin"]
        t.add_row(str(o["index"]), f"recorded {o['type']} (start)", "", "", "", "")
    for d in result["datasets"]:
        t.add_row(str(d["index"]), f"dataset {d['name']} ({d['examples']} examples)", "", "",
                  _short(d["dataset"]), "")
    console.print(t)


@click.group("lightning", cls=Group)
def lightning() -> None:
    """Lightning checkpoints in the ledger."""


@lightning.command("verify")
@click.argument("checkpoints", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@key_verifier_option("Require the lineage to be covered by a checkpoint signed with this log "
                     f"key (default: ${VERIFIER_ENV}; none: the ledger's own head).")
@common_options
def verify(settings: Settings, out: Output, checkpoints: tuple[Path, ...],
           key_verifier: Verifier | None) -> None:
    """Check CHECKPOINTS: recorded, and their lineage back to the datasets verifies.

    Exit status 1 if any does not verify.
    """
    with open_ledger(settings) as led:
        results = [check(led, p, key_verifier) for p in checkpoints]
    doc = {"ok": all(r["ok"] for r in results), "checkpoints": results}
    if not out.json:
        for r in results:
            render(r, out.console)
    bad = [r for r in results if not r["ok"]]
    if bad:
        raise VerificationFailed(f"{len(bad)} of {len(results)} checkpoint files do not verify,"
                                 f" the first: {bad[0]['path']}: {bad[0]['problem']}", doc)
    if out.json:
        out.emit(doc, lambda: None)

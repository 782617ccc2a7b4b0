"""`flchain report`: the audit report of a ledger as one self-contained HTML page (and JSON).

Framework-free: it reads the ledger, its checkpoint notes and the blob store only. The
page is written whatever it finds (an auditor wants to see a tampered ledger too); the
exit status says whether everything holds: 0 all checks pass, 1 something does not
verify (the first problem on stderr), 2 bad input.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.panel import Panel

from .. import notes
from ..blobs import BlobStore, default_root
from ..digest import DigestError, parse_digest
from ..pinning import PinError, parse_verifier
from ..report import build_report
from ..report_html import render
from .errors import Command, InputError, VerificationFailed
from .root import (
    Output,
    Settings,
    common_options,
    key_verifier_option,
    kv_table,
    open_ledger,
    write_atomic,
)


def _witness_keys(values: tuple[str, ...]) -> list[notes.Verifier]:
    try:
        return [parse_verifier(v, "--witness-key") for v in values]
    except PinError as e:
        raise InputError(str(e)) from None


def _model(value: str | None) -> str | None:
    if value is None or value == "latest":
        return None
    try:
        parse_digest(value)
    except DigestError as e:
        raise InputError(f"--model: {e}; or pass 'latest'") from None
    return value


@click.command("report", cls=Command)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("report.html"), show_default=True,
              help="Where to write the HTML page.")
@click.option("--model", "model", metavar="DIGEST", default=None,
              help="The model whose lineage to draw (default: the latest recorded).")
@click.option("--blobs", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Blob store directory (default: <ledger>.blobs).")
@click.option("--witness-key", "witness_keys", multiple=True, metavar="VKEY",
              help="A witness's verifier key (or a file holding it): check its "
                   "cosignatures. Repeat for each witness.")
@click.option("--replay/--no-replay", default=True, show_default=True,
              help="Recompute every round from the kept update blobs "
                   "(as `flchain audit replay`).")
@key_verifier_option("The log's verifier key to check checkpoints with (default: the key "
                     "pinned in the ledger, else <ledger>.key's).")
@common_options
def report(settings: Settings, out: Output, out_path: Path, model: str | None,
           blobs: Path | None, witness_keys: tuple[str, ...], replay: bool,
           key_verifier: notes.Verifier | None) -> None:
    """Write the audit report: runs, rounds, clients, lineage, credits, checkpoints and
    witnesses, anchors, verification and replay, and the record-keeping duties they serve.

    One self-contained HTML file (no network, no scripts) at --out; with --json the same
    facts as one JSON document on stdout. Exit status 1 if anything does not verify (the
    page is written all the same).
    """
    wanted = _model(model)
    keys = _witness_keys(witness_keys)
    store = BlobStore(blobs if blobs is not None else default_root(settings.ledger))
    with open_ledger(settings) as led:
        rep = build_report(led, blobs=store, model=wanted, verifier=key_verifier,
                           witness_keys=keys, replay=replay, path=str(settings.ledger))
    doc = rep.to_json()
    write_atomic(out_path, render(doc))
    doc["html"] = str(out_path)
    problems = rep.problems()
    if out.json:
        click.echo(json.dumps(doc, ensure_ascii=False))
    else:
        out.console.print(Panel(kv_table([
            ("report", out_path), ("entries", doc["ledger"]["size"]),
            ("runs", len(doc["runs"])), ("clients", len(doc["clients"])),
            ("checkpoints", len(doc["checkpoints"])), ("anchors", len(doc["anchors"])),
            ("replay", f"{doc['replay']['status']}: {doc['replay']['detail']}"),
            ("result", "all checks pass" if not problems else f"{len(problems)} problem(s)")]),
            title="audit report written", border_style="red" if problems else "green",
            expand=False))
    if problems:
        raise VerificationFailed(f"{problems[0]} (report written to {out_path})")

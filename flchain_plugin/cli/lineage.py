"""`flchain lineage` and `flchain rollback`: a model version's ancestry, and going back to it.

Framework-free: they read the ledger and blob store only, so they work without Flower,
torch or any other framework installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from .. import entries as E
from ..access import ClientRecords, client_records
from ..blobs import BlobError, BlobStore, default_root
from ..commit import commit, key_path, log_signer
from ..digest import DigestError, parse_digest
from ..ledger import Ledger
from ..lineage import Lineage, LineageError, Round, latest_model, records
from ..lineage import lineage as trace
from ..vault import UpdateVault
from .errors import Command, InputError, VerificationFailed
from .root import Output, Settings, common_options, open_ledger


def _short(d: str | None) -> str:
    return d[7:19] if d and d.startswith("sha256:") else str(d)


def _node(n: str) -> str:
    return n if len(n) <= 8 else "…" + n[-6:]


def _add_round(branch: Tree, r: Round) -> None:
    """One round under the version it made: its accepted updates, then its refusals."""
    if r.kept:
        branch = branch.add(f"[yellow]round {r.round} of run {r.run} kept this model[/yellow]"
                            f" ({r.metrics.get('kept', '')})")
    if r.updates:
        t = Table(box=None, pad_edge=False, show_edge=False)
        for c in ("accepted update", "node", "examples", "dataset", "signature"):
            t.add_column(c)
        for u in r.updates:
            sig = {True: "[green]valid[/green]", False: "[red]INVALID[/red]",
                   None: "unsigned"}[u.signature]
            t.add_row(_short(u.update), _node(u.node), str(u.num_examples),
                      _short(u.dataset) if u.dataset else "-", sig)
        branch.add(t)
    if r.rejected:
        t = Table(box=None, pad_edge=False, show_edge=False)
        for c in ("refused", "node", "reason", "detail"):
            t.add_column(c)
        for x in r.rejected:
            t.add_row(_short(x.update) if x.update else "-", _node(x.node),
                      f"[red]{x.reason}[/red]", x.detail[:90])
        branch.add(t)


def render_lineage(lin: Lineage, console: Console) -> None:
    """The ancestry as a rich tree: versions newest first, rounds, updates, refusals."""
    tree = Tree(f"[bold]{lin.model}[/bold]")
    for v in lin.versions:
        head = f"[bold cyan]{_short(v.model)}[/bold cyan] {v.source}"
        p = v.producer
        if p is not None:
            head += f" · run {p.run} round {p.round} · {p.aggregator} · entry {p.index}"
        elif v.index is not None:
            head += f" · entry {v.index}"
        if v.runs:
            head += f" · starts run {', '.join(v.runs)}"
        head += f" · weights {v.blob}"
        branch = tree.add(head)
        for rb in v.rollbacks:
            branch.add(f"[yellow]rollback[/yellow] to this version (entry {rb['index']}, "
                       f"from {_short(rb['previous'])}, {rb['reason']})")
        for r in v.rounds:
            _add_round(branch, r)
        for ev in v.evaluations:
            ms = ", ".join(f"{k}={val:.4g}" if isinstance(val, float) else f"{k}={val}"
                           for k, val in sorted(ev["metrics"].items()))
            branch.add(f"[dim]evaluation ({ev['source']}, round {ev['round']}): {ms}[/dim]")
    console.print(tree)
    if lin.datasets:
        t = Table(title="datasets behind this model")
        for c in ("commitment", "clients", "scheme"):
            t.add_column(c)
        for d in lin.datasets:
            scheme = d["entries"][0]["scheme"] if d["entries"] else "-"
            t.add_row(d["dataset"], ", ".join(_node(n) for n in d["nodes"]), scheme)
        console.print(t)
    total = len(lin.accepted_updates())
    console.print(f"{len(lin.versions)} versions, {total} accepted updates, "
                  f"{len(lin.rejections())} refused replies")
    if lin.problems:
        for prob in lin.problems:
            console.print(f"[red]problem:[/red] {prob}")
    else:
        console.print("[green]lineage consistent[/green]: every input is an update of its "
                      "round, every signature verifies")


def _resolve(led: Ledger, digest: str) -> str:
    if digest == "latest":
        found = latest_model(led)
        if found is None:
            raise InputError("the ledger records no model yet: give a model DIGEST, or train "
                             "a round first")
        return found
    try:
        parse_digest(digest)
    except DigestError as e:
        raise InputError(f"{e}; or pass 'latest'") from None
    return digest


def _blob_store(ledger: Path, blobs: Path | None) -> BlobStore:
    return BlobStore(blobs if blobs is not None else default_root(ledger))


_blobs_option = click.option(
    "--blobs", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Blob store directory (default: <ledger>.blobs).")


@click.command("lineage", cls=Command)
@click.argument("digest", required=False)
@_blobs_option
@click.option("--dot", "dot", is_flag=True, help="Print a Graphviz DOT graph instead.")
@click.option("--no-signatures", is_flag=True, help="Skip re-verifying update signatures.")
@click.option("--client", "client", metavar="NODE",
              help="Instead: everything client NODE contributed (an access request).")
@common_options
def lineage(settings: Settings, out: Output, digest: str | None, blobs: Path | None,
            dot: bool, no_signatures: bool, client: str | None) -> None:
    """Trace model DIGEST (or 'latest') back through rounds, updates and refusals; or,
    with --client NODE, list everything that client contributed.

    Exit status 1 if the lineage has a problem (an input that is not an update of its
    round, a signature that does not verify).
    """
    if dot and out.json:
        raise InputError("give --dot or --json, not both")
    if client is not None:
        if digest is not None or dot:
            raise InputError("give a model DIGEST or --client NODE, not both (and no --dot "
                             "with --client)")
        _client(settings, out, client, blobs)
        return
    if digest is None:
        raise InputError("give a model DIGEST (or 'latest'), or --client NODE")
    with open_ledger(settings) as led:
        digest = _resolve(led, digest)
        try:
            lin = trace(led, digest, blobs=_blob_store(settings.ledger, blobs),
                        verify_signatures=not no_signatures)
        except LineageError as e:
            raise InputError(str(e)) from None
    doc = lin.to_json()
    if dot:
        click.echo(lin.to_dot(), nl=False)
    elif not out.json:
        render_lineage(lin, out.console)
    if lin.problems:
        raise VerificationFailed(f"the lineage of {digest} has {len(lin.problems)} problem(s), "
                                 f"the first: {lin.problems[0]}", doc)
    if out.json:
        out.emit(doc, lambda: None)


def _client(settings: Settings, out: Output, node: str, blobs: Path | None) -> None:
    """`lineage --client NODE`: an access request's answer, as tables or one JSON document."""
    with open_ledger(settings) as led:
        rec = client_records(led, node, UpdateVault(_blob_store(settings.ledger, blobs).root))
    if rec.empty:
        raise InputError(f"the ledger records nothing about client {node!r}: node ids are "
                         "the `node` field of `flchain log --type update` entries")
    out.emit(rec.to_json(), lambda: _render_client(rec, out.console))


def _render_client(rec: ClientRecords, console: Console) -> None:
    sections: list[tuple[str, list[str], list[dict[str, Any]]]] = [
        ("keys", ["index", "run", "via", "key"], rec.members),
        ("datasets", ["index", "dataset", "scheme", "examples"], rec.datasets),
        ("updates", ["index", "run", "round", "update", "num_examples", "stored", "models"],
         rec.updates),
        ("refused", ["index", "run", "round", "reason", "update"], rec.rejected),
        ("credits", ["index", "run", "round", "rule", "amount"], rec.credits)]
    for title, cols, rows in sections:
        if not rows:
            continue
        t = Table(title=f"client {rec.node}: {title}", title_justify="left")
        for c in cols:
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*(", ".join(_short(m) for m in r[c]) if isinstance(r[c], list)
                        else _short(r[c]) if isinstance(r[c], str) and r[c].startswith("sha256:")
                        else str(r[c]) for c in cols))
        console.print(t)


@click.command("rollback", cls=Command)
@click.argument("digest")
@_blobs_option
@click.option("--reason", default="operator rollback", show_default=True,
              help="Why (recorded in the entry).")
@common_options
def rollback(settings: Settings, out: Output, digest: str, blobs: Path | None,
             reason: str) -> None:
    """Make recorded model DIGEST the one training restarts from (a `rollback` entry).

    The weights must still be in the blob store. Restart the run with
    LedgerStrategy(..., resume_from=DIGEST). Where the ledger's checkpoint key sits beside
    it (<ledger>.key, as a Flower run leaves it), the new tree head is signed too, so the
    log's newest head stays covered by a checkpoint.
    """
    store = _blob_store(settings.ledger, blobs)
    with open_ledger(settings) as led:
        digest = _resolve(led, digest)
        known = records(led, digest)  # the entry types that record a model declare it
        if not known:
            raise InputError(f"{digest} is not a model version recorded in {settings.ledger}; "
                             "list versions with `flchain log --type model`")
        erased = next(iter(led.find(digest, type="erasure")), None)
        if erased is not None:
            raise InputError(f"cannot roll back to {digest}: its weights were erased (erasure "
                             f"entry {erased.index}: {erased.entry.reason}); choose another "
                             "version from `flchain log --type model`")
        try:
            store.get(digest)
        except BlobError as e:
            raise InputError(f"cannot roll back: {e}") from None
        previous = latest_model(led)
        entry = E.Rollback(model=digest, previous=previous, reason=reason)
        signer = log_signer(led) if key_path(settings.ledger).exists() else None
        done = commit(led, [entry], signer=signer)
    head = done.head
    doc: dict[str, Any] = {"index": done.first, "model": digest, "previous": previous,
                           "reason": reason, "size": head.size, "root": head.root.hex(),
                           "checkpoint": done.checkpoint,
                           "resume": f"LedgerStrategy(..., resume_from={digest!r})"}

    def human() -> None:
        t = Table(title="rollback recorded", show_header=False)
        for k in ("index", "model", "previous", "reason", "size"):
            t.add_row(k, str(doc[k]))
        out.console.print(t)
        out.console.print(f"restart training with [bold]{doc['resume']}[/bold]")

    out.emit(doc, human)

"""`flchain credits`: each client's balance and awards, and `--replay` to recompute them.

Framework-free: reads the ledger (and, to replay quality rules, the blob store and a
validation set the auditor names), so it runs without Flower installed.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..blobs import BlobStore, default_root
from ..contracts import CreditReplay, Validation, awards, balances, replay_credits
from ..ledger import LoggedEntry
from .errors import Command, InputError, VerificationFailed
from .root import Output, Settings, common_options, open_ledger


def load_validation(spec: str) -> Validation:
    """The Validation named `MODULE:NAME` (a Validation, or a function of no argument
    returning one), imported with the current directory on the path."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise InputError(f"--validation {spec!r}: want MODULE:NAME, e.g. myval:validation")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        obj: Any = getattr(importlib.import_module(module), name)
        if not isinstance(obj, Validation) and callable(obj):
            obj = obj()
    except Exception as e:  # the auditor's code: any failure is their input's
        raise InputError(f"--validation {spec}: {type(e).__name__}: {e}") from None
    if not isinstance(obj, Validation):
        raise InputError(f"--validation {spec}: got {type(obj).__name__}, want a "
                         "flchain_plugin.contracts.Validation (or a function returning one)")
    return obj


def _award_json(le: LoggedEntry) -> dict[str, Any]:
    return {"index": le.index, **{k: v for k, v in le.entry.to_json().items()
                                  if k not in ("v", "type")}}


def _render(out: Output, total: dict[str, int], listed: list[LoggedEntry]) -> None:
    t = Table(title="balances")
    t.add_column("node")
    t.add_column("credits", justify="right")
    for node, amount in sorted(total.items(), key=lambda kv: (-kv[1], kv[0])):
        t.add_row(node, str(amount))
    out.console.print(t)
    a = Table(title="awards")
    for c in ("entry", "run", "round", "node", "rule", "amount"):
        a.add_column(c, justify="right" if c in ("entry", "round", "amount") else "left")
    for le in listed:
        e = le.entry
        a.add_row(str(le.index), e.run, str(e.round), e.node, e.rule,  # type: ignore[attr-defined]
                  str(e.amount))  # type: ignore[attr-defined]
    out.console.print(a)


def _replay(led: Any, settings: Settings, blobs: Path | None, validation: str | None
            ) -> CreditReplay:
    store = BlobStore(blobs if blobs is not None else default_root(settings.ledger))
    val = load_validation(validation) if validation else None
    try:
        return replay_credits(led, store, validation=val)
    except ValueError as e:
        raise InputError(f"cannot replay credits: {e}") from None


@click.command("credits", cls=Command)
@click.option("--run", "run", default=None, help="Only this run's credits.")
@click.option("--replay", is_flag=True,
              help="Recompute every award from the ledger and fail on the first difference.")
@click.option("--validation", default=None, metavar="MODULE:NAME",
              help="The validation set quality rules were computed on (a contracts."
                   "Validation); its digest must equal the one the run committed.")
@click.option("--blobs", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Blob store with the models and updates (default: <ledger>.blobs).")
@common_options
def credits(settings: Settings, out: Output, run: str | None, replay: bool,
            validation: str | None, blobs: Path | None) -> None:
    """Each client's credit balance and per-round awards.

    With --replay, every award is recomputed from the ledger (and, for quality rules,
    the validation set and the stored blobs); exit status 1 names the run, round, node
    and rule of the first credit that differs.
    """
    with open_ledger(settings) as led:
        listed = awards(led, run)
        total = balances(led, run)
        report = _replay(led, settings, blobs, validation) if replay else None
    doc: dict[str, Any] = {"balances": total, "awards": [_award_json(le) for le in listed]}
    if report is not None:
        doc["replay"] = report.to_json()
    if not out.json:
        _render(out, total, listed)
    if report is not None and not report.ok:
        first = report.differences[0]
        raise VerificationFailed(f"credits do not replay ({len(report.differences)} "
                                 f"difference(s)); the first: {first}", doc)
    if out.json:
        out.emit(doc, lambda: None)
    elif report is not None:
        out.console.print(f"[green]credits replay[/green]: {report.credits} credit entries "
                          f"over {report.rounds} rounds of {report.runs} run(s) recomputed "
                          "identically")

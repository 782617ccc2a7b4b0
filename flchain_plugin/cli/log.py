"""`flchain append|log|show|prove|consistency`: write entries, read them, prove them.

Reads stream from the store page by page, so listing a large ledger starts at once and
stays in flat memory.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Iterator
from dataclasses import fields
from typing import Any, BinaryIO

import click
from rich import box
from rich.console import Console
from rich.json import JSON
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..digest import parse_digest
from ..entries import ENTRY_TYPES, Entry, EntryError, parse_json
from ..ledger import Ledger, LoggedEntry
from .errors import Command, InputError, VerificationFailed
from .root import (
    INDEX,
    MAX_INDEX,
    Output,
    Settings,
    common_options,
    hashes_text,
    kv_table,
    open_ledger,
    short_digest,
)

_LOG_CHUNK = 256  # rows per rendered table when streaming `log`


def _parse_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes, Entry]]:
    """(line number, raw line, entry) for every non-blank line; the first bad line raises."""
    for n, raw in enumerate(stream, 1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            yield n, line, parse_json(line)
        except EntryError as e:
            raise InputError(f"line {n}: {e}; nothing was appended") from None
        except RecursionError:
            raise InputError(f"line {n}: JSON nested too deeply to read; nothing was appended"
                             ) from None


def _no_entries(source: BinaryIO) -> InputError:
    name = getattr(source, "name", "-")
    name = "stdin" if name in ("-", "<stdin>") else str(name)
    return InputError(f"no entries in {name}: give JSON lines, one entry per line")


def _append_batch(led: Ledger, batch: list[Entry], heads: list[dict[str, Any]]) -> None:
    head = led.append(batch)
    heads.append({"first": head.size - len(batch), "count": len(batch), "size": head.size,
                  "root": head.root.hex()})


@click.command(cls=Command)
@click.argument("source", type=click.File("rb"), default="-")
@click.option("--batch-size", type=click.IntRange(1, MAX_INDEX), default=None,
              help="Split the input into batches of N entries (default: one batch).")
@common_options
def append(settings: Settings, out: Output, source: BinaryIO, batch_size: int | None) -> None:
    """Append entries from stdin (JSON lines) as one batch.

    Each line is one entry object with "v" and "type"; SOURCE may name a file instead of
    stdin. Every line is checked before anything is written, so a bad line appends nothing.
    """
    with open_ledger(settings) as led:
        heads: list[dict[str, Any]] = []
        if batch_size is None:
            batch = [e for _, _, e in _parse_lines(source)]
            if not batch:
                raise _no_entries(source)
            _append_batch(led, batch, heads)
        else:
            # Check everything first, keeping only the raw lines (spooled to disk if large),
            # then append batch by batch.
            with tempfile.SpooledTemporaryFile(max_size=64 << 20) as spool:
                count = 0
                for _, line, _ in _parse_lines(source):
                    spool.write(line + b"\n")
                    count += 1
                if not count:
                    raise _no_entries(source)
                spool.seek(0)
                batch = []
                for line in spool:
                    batch.append(parse_json(line.rstrip(b"\n")))
                    if len(batch) == batch_size:
                        _append_batch(led, batch, heads)
                        batch = []
                if batch:
                    _append_batch(led, batch, heads)
    total = sum(h["count"] for h in heads)
    doc = {"appended": total, "size": heads[-1]["size"], "root": heads[-1]["root"],
           "batches": heads}

    def human() -> None:
        t = Table("batch", "entries", "tree size", "root", box=box.SIMPLE)
        for i, h in enumerate(heads):
            t.add_row(str(i), f"{h['first']}..{h['first'] + h['count'] - 1}", str(h["size"]),
                      h["root"])
        out.console.print(t)
        out.console.print(f"appended {total} entries; tree size {doc['size']}")

    out.emit(doc, human)


def _summary(entry: Entry) -> str:
    """The entry's scalar facts that are not subjects or signature material, on one line."""
    parts = []
    for f in fields(entry):
        v = getattr(entry, f.name)
        if f.name in entry.SUBJECTS or f.name in ("signature", "key", "nonce") or v is None:
            continue
        if isinstance(v, str):
            v = short_digest(v)
        elif isinstance(v, (dict, list)):
            if not v:
                continue
            v = json.dumps(v, separators=(",", ":"), ensure_ascii=False)
        parts.append(f"{f.name}={v}")
    return " ".join(parts)


def _entry_doc(e: LoggedEntry) -> dict[str, Any]:
    return {"index": e.index, "type": e.entry.TYPE, "leaf_hash": e.leaf_hash.hex(),
            "subjects": list(e.entry.subjects), "entry": e.entry.to_json()}


@click.command(name="log", cls=Command)
@click.option("--type", "type_", type=click.Choice(sorted(ENTRY_TYPES)),
              help="Only entries of this type.")
@click.option("--from", "start", type=click.IntRange(-MAX_INDEX, MAX_INDEX), default=0,
              show_default=True,
              help="First index; negative counts back from the end.")
@click.option("--limit", type=INDEX, default=None,
              help="At most this many entries.")
@common_options
def log_(settings: Settings, out: Output, type_: str | None, start: int,
         limit: int | None) -> None:
    """List entries: index, type, subjects, summary.

    Streams: output starts at once and memory stays flat on any ledger size.
    """
    with open_ledger(settings) as led:
        size = led.size
        if start < 0:
            start = max(0, size + start)
        rows = led.iter_entries(start, size, type=type_)
        if limit is not None:
            rows = itertools.islice(rows, limit)
        if out.json:
            click.echo(f'{{"size": {size}, "entries": [', nl=False)
            for i, r in enumerate(rows):
                click.echo(("," if i else "") + "\n" + json.dumps(_entry_doc(r),
                                                                 ensure_ascii=False), nl=False)
            click.echo("\n]}")
            return
        _print_log(out.console, rows, size)


def _print_log(console: Console, rows: Iterator[LoggedEntry], size: int) -> None:
    """Print fixed-width rows in chunks as they are read, so output starts at once.

    Plain formatted lines, not a rich Table: rendering tables cost ~250 µs a row, which
    is minutes on a large ledger. On a terminal, lines are cut to its width.
    """
    w_idx = max(5, len(str(max(size - 1, 0))))
    w_subj = 41 if console.width >= 110 else 20
    cut = console.width if console.is_terminal else None

    def line(index: str, type_: str, subjects: str, summary: str) -> str:
        text = f"{index:>{w_idx}}  {type_:<10}  {subjects:<{w_subj}}  {summary}".rstrip()
        return text if cut is None or len(text) <= cut else text[: cut - 1] + "…"

    console.print(Text(line("index", "type", "subjects", "summary"), style="bold"))
    shown = 0
    chunk: list[str] = []
    for r in rows:
        chunk.append(line(str(r.index), r.entry.TYPE,
                          " ".join(short_digest(s) for s in r.entry.subjects),
                          _summary(r.entry)))
        shown += 1
        if len(chunk) == _LOG_CHUNK:
            click.echo("\n".join(chunk))
            chunk.clear()
    if chunk:
        click.echo("\n".join(chunk))
    console.print(f"{shown} entries shown; tree size {size}", style="dim")


@click.command(cls=Command)
@click.argument("index", type=INDEX)
@common_options
def show(settings: Settings, out: Output, index: int) -> None:
    """Show an entry, its leaf hash and its proof.

    The inclusion proof is against the latest tree head and is checked before printing.
    """
    with open_ledger(settings) as led:
        try:
            e = led.get(index)
            proof = led.inclusion_proof(index)
        except IndexError as err:
            raise InputError(f"{err}") from None
        proof.verify()
    doc = _entry_doc(e)
    doc["inclusion"] = {"size": proof.size, "root": proof.root.hex(),
                        "hashes": [h.hex() for h in proof.hashes]}

    def human() -> None:
        out.console.print(Panel(JSON.from_data(doc["entry"]),
                                title=f"entry {index} ({e.entry.TYPE})", expand=False))
        out.console.print(kv_table([
            ("leaf hash", e.leaf_hash.hex()), ("tree size", proof.size),
            ("root", proof.root.hex()), ("proof", hashes_text(proof.hashes)),
            ("verified", "yes")]))

    out.emit(doc, human)


# -- proofs ----------------------------------------------------------------------------------


def _inclusion_doc(led: Ledger, index: int, size: int | None) -> dict[str, Any]:
    try:
        proof = led.inclusion_proof(index, size)
    except (IndexError, ValueError) as err:
        raise InputError(f"{err}") from None
    proof.verify()
    try:
        entry = led.get(index).entry
    except IndexError as err:  # the tree has the leaf, the entries table lost its row
        raise VerificationFailed(f"the ledger is damaged: {err}, yet its tree has entry "
                                 f"{index}; run `flchain verify`") from None
    return {"index": index, "type": entry.TYPE, "size": proof.size,
            "leaf_hash": proof.leaf_hash.hex(), "root": proof.root.hex(),
            "hashes": [h.hex() for h in proof.hashes]}


@click.command(cls=Command)
@click.argument("index", type=INDEX, required=False)
@click.option("--size", type=INDEX, default=None,
              help="Prove against the tree of this size (default: latest).")
@click.option("--digest", help="Prove every entry about this digest (sha256:...).")
@click.option("--type", "type_", type=click.Choice(sorted(ENTRY_TYPES)),
              help="With --digest: only entries of this type.")
@common_options
def prove(settings: Settings, out: Output, index: int | None, size: int | None,
          digest: str | None, type_: str | None) -> None:
    """Prove an entry is in the log (INDEX or --digest).

    Prints the RFC 9162 inclusion proof, checked before printing, so an auditor holding
    only a signed checkpoint can check the entry against it.
    """
    if (index is None) == (digest is None):
        raise InputError("give an entry INDEX or --digest sha256:..., not both or neither")
    with open_ledger(settings) as led:
        if index is not None:
            doc = _inclusion_doc(led, index, size)
            proofs = [doc]
        else:
            assert digest is not None
            parse_digest(digest)
            try:
                found = led.find(digest, type=type_)
            except IndexError as err:  # the digest index names a row the ledger lacks
                raise VerificationFailed(f"the ledger is damaged: {err}, yet its digest "
                                         "index names it; run `flchain verify`") from None
            if size is not None:
                found = [e for e in found if e.index < size]
            if not found:
                raise VerificationFailed(
                    f"no entry about {digest} in the ledger"
                    + (f" within size {size}" if size is not None else ""),
                    {"digest": digest, "proofs": []})
            proofs = [_inclusion_doc(led, e.index, size) for e in found]
            doc = {"digest": digest, "proofs": proofs}

    def human() -> None:
        for p in proofs:
            out.console.print(kv_table([
                ("entry", f"{p['index']} ({p['type']})"), ("leaf hash", p["leaf_hash"]),
                ("tree size", p["size"]), ("root", p["root"]),
                ("proof", Text("\n".join(p["hashes"]) or "(none)")), ("verified", "yes")],
                title="inclusion proof"))

    out.emit(doc, human)


@click.command(cls=Command)
@click.argument("old", type=INDEX)
@click.argument("new", type=INDEX, required=False)
@common_options
def consistency(settings: Settings, out: Output, old: int, new: int | None) -> None:
    """Prove the tree of size NEW extends tree OLD.

    Prints the RFC 9162 consistency proof (NEW defaults to the latest size): the log
    only appended between the two sizes.
    """
    with open_ledger(settings) as led:
        try:
            proof = led.consistency_proof(old, new)
        except ValueError as err:
            raise InputError(f"{err}") from None
    proof.verify()
    doc = {"size1": proof.size1, "size2": proof.size2, "root1": proof.root1.hex(),
           "root2": proof.root2.hex(), "hashes": [h.hex() for h in proof.hashes]}
    out.emit(doc, lambda: out.console.print(kv_table([
        ("old size", proof.size1), ("old root", doc["root1"]), ("new size", proof.size2),
        ("new root", doc["root2"]), ("proof", hashes_text(proof.hashes)),
        ("verified", "yes")], title="consistency proof")))


"""Copy a ledger into another store (SQLite to PostgreSQL and back) and prove it the same log.

The copy is made batch by batch through `Ledger.append_stored`: the destination hashes
every entry's bytes and builds its own nodes and tree heads, trusting no hash of the
source. Then the copy must have a tree head at every size the source has one, with the
same root, and its own `verify` must pass (with the pinned key, the copied checkpoints
too). A destination that already holds a ledger is continued only if it is a prefix of
the source (the same origin, heads, roots and checkpoints as far as it goes), so an
interrupted migration is resumed by running it again, and nothing else is overwritten.

Not copied: head timestamps (each copied head has the time of its copy), and what lives
beside a ledger file rather than in it (the `.key` file, the `.blobs/` weights).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .ledger import Ledger
from .store import HeadRow, StoreError

ProgressFn = Callable[[int, int], None]


class NotAPrefix(ValueError):
    """The destination holds a ledger that is not a beginning of the source."""


class CopyDiffers(StoreError):
    """The finished copy does not reproduce the source's tree at some stored size."""


@dataclass(frozen=True)
class Migration:
    """What `migrate` did and checked."""

    origin: str
    size: int
    root: bytes
    heads: int
    copied_entries: int
    copied_heads: int
    copied_checkpoints: int
    checked_sizes: int

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin, "size": self.size, "root": self.root.hex(),
                "heads": self.heads, "copied_entries": self.copied_entries,
                "copied_heads": self.copied_heads,
                "copied_checkpoints": self.copied_checkpoints,
                "checked_sizes": self.checked_sizes, "consistent": True}


def check_prefix(source: Ledger, destination: Ledger) -> None:
    """Raise NotAPrefix unless `destination` is empty or a beginning of `source`."""
    if destination.origin != source.origin:
        raise NotAPrefix(f"the destination is the ledger {destination.origin!r}, the source "
                         f"{source.origin!r}: migrate into an empty database or file")
    size = destination.size
    if size > source.size:
        raise NotAPrefix(f"the destination holds {size} entries, the source only "
                         f"{source.size}: it is not a copy of this source")
    mine = [(h.size, h.root) for h in destination.heads()]
    theirs = [(h.size, h.root) for h in source.heads() if h.size <= size]
    if mine != theirs:
        where = next((a for a, b in zip(mine, theirs, strict=False) if a != b), None)
        raise NotAPrefix(f"the destination's tree heads differ from the source's (first at "
                         f"size {where[0] if where else size}): it is another log")
    notes = destination.store.checkpoints()
    if notes != source.store.checkpoints()[: len(notes)]:
        raise NotAPrefix("the destination's checkpoints are not the source's: it is another log")
    for key, value in destination.store.meta_items():
        if key != "schema" and source.store.meta(key) not in (None, value):
            raise NotAPrefix(f"the destination's {key!r} differs from the source's")


def _copy_batches(source: Ledger, destination: Ledger, progress: ProgressFn | None
                  ) -> tuple[int, int]:
    """Append the source's batches the destination lacks, one batch per source head."""
    start = destination.size
    entries = heads = 0
    for head in source.heads():
        if head.size <= start:
            continue
        datas = [row.data for row in source.store.entries(start, head.size)]
        destination.append_stored(datas, expect_size=start)
        entries, heads, start = entries + len(datas), heads + 1, head.size
        if progress is not None:
            progress(start, source.size)
    return entries, heads


def _check_copy(source_heads: list[HeadRow], destination: Ledger) -> int:
    """Every stored size of the source is a head of the copy with the same root (that
    each head's root is the copy's tree at its size is `verify`'s, run after this: not
    recomputed here, a read per head)."""
    copied = {h.size: h.root for h in destination.heads()}
    if sorted(copied) != [h.size for h in source_heads]:
        raise CopyDiffers("the copy's tree heads are at other sizes than the source's")
    for h in source_heads:
        if copied[h.size] != h.root:
            raise CopyDiffers(f"the copy's root at size {h.size} is {copied[h.size].hex()}, "
                              f"the source's {h.root.hex()}: the source's stored entries do "
                              "not make its stored tree; run `flchain verify` on it")
    return len(source_heads)


def migrate(source: Ledger, destination: Ledger, *, progress: ProgressFn | None = None
            ) -> Migration:
    """Copy `source` into `destination` (opened with the source's origin), check the copy.

    Raises NotAPrefix (nothing written) when the destination holds another log, and
    CopyDiffers when the copy does not reproduce every stored root of the source.
    """
    check_prefix(source, destination)
    for key, value in source.store.meta_items():
        if key != "schema":
            destination.store.set_meta(key, value, replace=False)
    entries, heads = _copy_batches(source, destination, progress)
    have = len(destination.store.checkpoints())
    notes = source.store.checkpoints()[have:]
    for size, note in notes:
        destination.store.add_checkpoint(size, note)
    checked = _check_copy(list(source.store.heads()), destination)
    report = destination.verify()
    if not report.ok:
        raise CopyDiffers(f"the copy does not verify: {report.problem}")
    head = destination.head()
    return Migration(source.origin, head.size, head.root, checked, entries, heads, len(notes),
                     checked)

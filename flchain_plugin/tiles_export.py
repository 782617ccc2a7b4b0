"""Publish a ledger as static C2SP tlog-tiles files (https://c2sp.org/tlog-tiles).

`export_tiles` writes `checkpoint`, the hash tiles and the entry bundles of the ledger's
latest signed checkpoint into a directory that any web server or object store can serve.
It is incremental: the `checkpoint` already in the directory says what was exported, so
the next run writes only the tiles the log grew into (a full tile is never rewritten) and
the partial tiles of every checkpoint signed since. Each file is replaced atomically and
`checkpoint` is written last, after every tile is durable: a reader that sees a checkpoint
finds all its tiles, and a crash leaves the previous, still complete, view.

Tile contents come from the store as it is, read level by level in bulk: level-L hashes
(L >= 1) are the stored subtree hashes of height 8L; level 0 and the bundles come from one
read of the entry rows, each entry checked against its stored leaf hash. `read_tile` is
the one-tile read `flchain serve` answers with, so the files and the server hold the same
bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from . import merkle, notes
from .canonical import parse_json
from .checkpoint import Checkpoint, CheckpointError, open_checkpoint, unverified_checkpoint
from .ledger import Ledger
from .store import EntryRow, StoreError
from .tiles import (
    ENTRIES,
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    edge_tiles,
    encode_bundle,
    encode_hashes,
    level_size,
    levels,
    new_tiles,
)

CHECKPOINT = "checkpoint"
"""The checkpoint's file name under the export directory (and its URL path)."""
STATE = ".flchain-tiles.json"
"""Bookkeeping beside the tiles, no part of the spec: how many distinct checkpointed sizes
the last export saw, so the next one knows whether an older size was signed since (else
it would stat the edge tiles of every checkpoint: 4,000 files at 1,000 checkpoints).
Removed when an export starts writing and written when it ends, so its absence also
says an export broke off and its temp files need sweeping."""

ProgressFn = Callable[[int, int], None]

_CHUNK = 64 * TILE_WIDTH
"""Hashes (or entries) read per step of a level: tile-aligned, so no tile straddles two."""
_ALL_SIZES = 2**62
"""`checkpoint_sizes(last=...)` for all of them."""


class TilesExportError(ValueError):
    """The export cannot be made (no checkpoint, a foreign directory); the message says
    what to do. Nothing in the directory was changed."""


@dataclass(frozen=True)
class ExportReport:
    """What one export did: `size` is the exported checkpoint's, `previous_size` the one
    the directory held before (0 for a new directory)."""

    directory: Path
    origin: str
    size: int
    previous_size: int
    tiles: int
    files: int
    bytes: int
    seconds: float


def published_checkpoint(ledger: Ledger) -> tuple[str, Checkpoint]:
    """The note a tiles reader gets and its body, checked against the ledger so a damaged
    store is never published: the latest stored note of the largest signed size, so a
    checkpoint signed or cosigned late for an older size never rolls readers back."""
    note = _latest_of_largest(ledger)
    if note is None:
        raise TilesExportError(
            "the ledger has no signed checkpoint to publish: sign one first "
            "(`flchain checkpoint sign`)"
        )
    verifier = ledger.pinned_verifier
    try:
        cp = (open_checkpoint(note, verifier, origin=ledger.origin)[0] if verifier
              else unverified_checkpoint(note))
    except (CheckpointError, notes.NoteError) as e:
        raise StoreError(f"the latest stored checkpoint does not open: {e}; "
                         "run `flchain verify`") from e
    if cp.origin != ledger.origin or cp.size > ledger.size or (
            ledger.root_at(cp.size) != cp.root_hash):
        raise StoreError(f"the latest stored checkpoint (size {cp.size}) does not match the "
                         "ledger's tree; run `flchain verify`")
    return note, cp


def _latest_of_largest(ledger: Ledger) -> str | None:
    """Usually the latest note; all notes are read only when a smaller size came last."""
    last = ledger.store.checkpoints(last=1)
    if not last:
        return None
    if last[0][0] >= max(ledger.checkpoint_sizes(_ALL_SIZES)):
        return last[0][1]
    stored = ledger.store.checkpoints()
    return max(enumerate(stored), key=lambda r: (r[1][0], r[0]))[1][1]


def checkpoint_tiles(ledger: Ledger, size: int) -> set[Tile]:
    """The partial (edge) tiles of every checkpointed size up to `size`: the spec requires
    them to exist for each size a checkpoint was published at."""
    sizes = {s for s in ledger.checkpoint_sizes(_ALL_SIZES) if 0 < s <= size}
    return {t for s in sizes for t in edge_tiles(s)}


def export_tiles(ledger: Ledger, directory: Path, *,
                 progress: ProgressFn | None = None) -> ExportReport:
    """Bring the tiles in `directory` up to the ledger's latest signed checkpoint.

    Refuses (TilesExportError) a ledger without a checkpoint and a directory that holds
    another log's tiles (another origin, or a checkpoint this ledger's tree does not have).
    Holds a lock on the directory, so two exports never interleave.
    """
    start = time.perf_counter()
    directory = Path(directory)
    if ledger.latest_checkpoint() is None:
        published_checkpoint(ledger)  # says what to do, before anything is created
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):  # read under the lock: a concurrent export may be newer
        note, cp = published_checkpoint(ledger)
        sizes = ledger.checkpoint_sizes(_ALL_SIZES)  # distinct, the largest is cp.size
        old, old_note = _exported(ledger, directory)
        old_size = old.size if old else 0
        if cp.size < old_size:
            raise TilesExportError(
                f"{directory} already publishes size {old_size}, beyond this ledger's latest "
                f"checkpoint (size {cp.size}): publishing it would roll readers back; sign a "
                "checkpoint of the current tree first (`flchain checkpoint sign`)"
            )
        seen = _seen(directory, old)
        plan = _plan(directory, sizes, seen, old_size, cp.size)
        tick = None if progress is None else (lambda done: progress(min(done, len(plan)),
                                                                    len(plan)))
        if plan or old_note != note:  # STATE is back at the end: gone, an export broke off
            (directory / STATE).unlink(missing_ok=True)
        with _Writer(directory, len(plan) + 1, tick, sweep=seen is None) as writer:
            writer.prepare(t.path for t in plan)
            if old_note != note:
                writer.stage(CHECKPOINT, note.encode("utf-8"))
            for tile, data in _tile_contents(ledger, plan):
                writer.put(tile.path, data)
            writer.publish()  # the checkpoint last, once every tile is durable
        if plan or old_note != note or seen != len(sizes):
            _replace(directory / STATE, json.dumps(  # no fsync: lost, the next export stats
                {"origin": cp.origin, "size": cp.size, "sizes": len(sizes)}).encode(),
                durable=False)
    return ExportReport(directory, cp.origin, cp.size, old_size, len(plan), writer.files,
                        writer.bytes, time.perf_counter() - start)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _exported(ledger: Ledger, directory: Path) -> tuple[Checkpoint | None, str | None]:
    """The checkpoint the directory publishes and its note, if it is one of this ledger's
    trees; (None, None) for a directory without one."""
    path = directory / CHECKPOINT
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as e:
        raise TilesExportError(f"cannot read {path}: {e}") from None
    redo = "export into an empty directory, or remove it if it is a stale copy of this log"
    try:
        cp = unverified_checkpoint(text)
    except (CheckpointError, notes.NoteError) as e:
        raise TilesExportError(f"{path} is not a checkpoint note ({e}): {redo}") from None
    if cp.origin != ledger.origin:
        raise TilesExportError(f"{directory} holds the tiles of log {cp.origin!r}, not of "
                               f"{ledger.origin!r}: {redo}")
    if cp.size > ledger.size or ledger.root_at(cp.size) != cp.root_hash:
        raise TilesExportError(
            f"{directory} holds a checkpoint (size {cp.size}, root {cp.root_hash.hex()}) "
            f"that is not in this ledger's tree: another log's tiles or a forked history "
            f"of {ledger.origin!r}; keep it as evidence, and {redo}"
        )
    return cp, text


def _seen(directory: Path, old: Checkpoint | None) -> int | None:
    """How many checkpointed sizes the export of `old` saw (STATE), or None when unknown
    (no state, one that does not belong to that checkpoint, or an export broke off)."""
    if old is None:
        return 0
    try:
        state = parse_json((directory / STATE).read_bytes())
        seen = state["sizes"]
        if (state["origin"], state["size"]) == (old.origin, old.size) and seen >= 0:
            return int(seen)
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return None


def _plan(directory: Path, sizes: list[int], seen: int | None, old_size: int,
          size: int) -> list[Tile]:
    """The tiles to write, in level then index order: every tile the tree grew into since
    `old_size` and the edge tiles of the sizes signed since. The last export saw `seen`
    distinct sizes, all up to `old_size`: if more are up to it now, an older size was
    signed late, and every such size's edge tiles are written where their file is
    missing (so too when `seen` is unknown)."""
    plan = {t for level in (*levels(size), ENTRIES) for t in new_tiles(old_size, size, level)}
    newer = {s for s in sizes if old_size < s <= size}
    for s in newer:
        plan.update(t for t in edge_tiles(s) if _covers_new(t, old_size))
    if seen is None or len(sizes) - len(newer) > seen:
        for s in {s for s in sizes if 0 < s <= old_size}:
            plan.update(t for t in edge_tiles(s) if not (directory / t.path).exists())
    return sorted(plan)


def _covers_new(tile: Tile, old_size: int) -> bool:
    """Whether `tile` holds anything beyond the tree of `old_size`."""
    return level_size(old_size, tile.level) < tile.first_hash + tile.width


def _spans(tiles: list[Tile]) -> Iterator[tuple[int, int, int, list[Tile]]]:
    """(level, first, end, tiles): runs of tiles of one level over adjacent hashes."""
    run: list[Tile] = []
    end = 0
    for t in tiles:
        if run and (t.level != run[0].level or t.first_hash > end):
            yield run[0].level, run[0].first_hash, end, run
            run = []
        end = max(end, t.first_hash + t.width) if run else t.first_hash + t.width
        run.append(t)
    if run:
        yield run[0].level, run[0].first_hash, end, run


def _tile_contents(ledger: Ledger, plan: list[Tile]) -> Iterator[tuple[Tile, bytes]]:
    """Each planned tile with its bytes, reading each span of a level once, in chunks.
    Level 0 comes from the entry rows read for the bundles (their stored leaf hashes):
    the two levels have the same tiles, so the rows are read once for both."""
    wanted = set(plan)
    merged = sorted({Tile(ENTRIES, t.index, t.width) if t.level == 0 else t for t in plan})
    for level, first, end, tiles in _spans(merged):
        items = _level_items(ledger, level, first, end)
        pending = iter(tiles)
        tile = next(pending, None)
        for lo in range(first, end, _CHUNK):
            hi = min(end, lo + _CHUNK)
            chunk = _take(items, level, lo, hi)
            while tile is not None and tile.first_hash < hi:
                part = chunk[tile.first_hash - lo:tile.first_hash - lo + tile.width]
                yield from _encoded(tile, part, wanted)
                tile = next(pending, None)


def _encoded(tile: Tile, part: list[Any], wanted: set[Tile]) -> Iterator[tuple[Tile, bytes]]:
    if tile.level != ENTRIES:
        yield tile, encode_hashes(part)
        return
    if tile in wanted:
        yield tile, encode_bundle([row.data for row in part])
    if (twin := Tile(0, tile.index, tile.width)) in wanted:
        yield twin, encode_hashes([row.leaf for row in part])


def _level_items(ledger: Ledger, level: int, first: int, end: int) -> Iterator[tuple[int, Any]]:
    """(index, item) of one level from `first` on: entry rows (checked) for the bundles,
    leaf hashes for level 0, stored subtree hashes of height 8L above."""
    if level == ENTRIES:
        return ((row.index, _checked(row)) for row in ledger.store.entries(first, end))
    return ledger.store.level(TILE_HEIGHT * level, first)


def _checked(row: EntryRow) -> EntryRow:
    """An entry whose bytes hash to its stored leaf: a bundle that disagrees with level 0
    would be refused by every reader, so a tampered row stops the export instead."""
    if merkle.leaf_hash(row.data) != row.leaf:
        raise StoreError(f"ledger is damaged: entry {row.index} does not hash to its stored "
                         "leaf hash; run `flchain verify`")
    return row


def _take(items: Iterator[tuple[int, Any]], level: int, lo: int, hi: int) -> list[Any]:
    """Items lo..hi-1 of a level, refusing a store that lacks one (a damaged ledger)."""
    got = list(islice(items, hi - lo))
    if len(got) != hi - lo or got[0][0] != lo or got[-1][0] != hi - 1:
        what = "entry" if level == ENTRIES else f"level-{TILE_HEIGHT * level} hash"
        have = {i for i, _ in got}
        missing = next(i for i in range(lo, hi) if i not in have)
        raise StoreError(f"ledger is damaged: {what} {missing} is missing; "
                         "run `flchain verify`")
    return [b for _, b in got]


def read_tile(ledger: Ledger, tile: Tile) -> bytes:
    """One tile's bytes, as `export_tiles` writes them (for `flchain serve`)."""
    level = ENTRIES if tile.level == 0 else tile.level
    items = _level_items(ledger, level, tile.first_hash, tile.first_hash + tile.width)
    part = _take(items, level, tile.first_hash, tile.first_hash + tile.width)
    return next(data for _, data in _encoded(Tile(level, tile.index, tile.width), part, {tile}))


class _Writer:
    """Atomic file replacement: a temp file in the same directory, fsync, rename.

    Tiles are written WRITE_THREADS at a time: each waits on its fsync, not on the CPU,
    and the file system commits overlapping fsyncs together; at most `_IN_FLIGHT` wait in
    memory. The checkpoint's temp file is written and fsynced beside them, and renamed
    in by `publish` only once every tile is renamed and its directory fsynced: two fsync
    round trips in all, however many files. Errors surface in the calling thread.
    """

    def __init__(self, root: Path, files: int, progress: Callable[[int], None] | None = None,
                 *, sweep: bool = True):
        """`sweep`: remove the temp files a killed export left in each directory written
        (a listing of each: asked for only when the last export did not finish)."""
        self.root = root
        self.sweep = sweep
        self.pool = ThreadPoolExecutor(max(1, min(WRITE_THREADS, files)),
                                       thread_name_prefix="tiles-export")
        self.progress = progress
        self.known: set[Path] = set()
        self.dirty: set[Path] = set()
        self.pending: set[Future[int]] = set()
        self.staged: Future[str] | None = None
        self.staged_path = root
        self.staged_bytes = 0
        self.files = 0
        self.bytes = 0

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True)
        if self.staged is not None and self.staged.exception() is None:
            with contextlib.suppress(FileNotFoundError):  # not published: an error came first
                os.unlink(self.staged.result())

    def _directory(self, path: Path) -> None:
        parent = path.parent
        if parent not in self.known:  # a new directory adds an entry to the one above
            if _mkdir(parent):
                self.dirty.update(p for p in parent.parents
                                  if p == self.root or self.root in p.parents)
            if self.sweep:
                _remove_stale_temp_files(parent)
            self.known.add(parent)
        self.dirty.add(parent)

    def prepare(self, relatives: Iterator[str]) -> None:
        """Create the directories up front: a mkdir beside writer threads renaming into the
        same directory waits for them (4 ms each, 2,000 partial-tile directories at 10^6)."""
        for parent in sorted({(self.root / r).parent for r in relatives}):
            self._directory(parent / "_")

    def put(self, relative: str, data: bytes) -> None:
        path = self.root / relative
        self._directory(path)
        if len(self.pending) >= _IN_FLIGHT:
            self._collect(wait(self.pending, return_when=FIRST_COMPLETED).done)
        self.pending.add(self.pool.submit(_replace, path, data))

    def stage(self, relative: str, data: bytes) -> None:
        """Write `relative`'s temp file now; `publish` renames it in, last."""
        path = self.root / relative
        if self.sweep:
            _remove_stale_temp_files(path.parent)
        self.staged = self.pool.submit(_stage, path, data)
        self.staged_path = path
        self.staged_bytes = len(data)

    def _collect(self, done: set[Future[int]]) -> None:
        self.pending -= done
        for f in done:
            self.bytes += f.result()
            self.files += 1
            if self.progress is not None:
                self.progress(self.files)

    def publish(self) -> None:
        """Every tile renamed in and its directory fsynced, then the staged checkpoint."""
        self._collect(wait(self.pending).done)
        list(self.pool.map(_fsync_dir, self.dirty))
        self.dirty.clear()
        if self.staged is not None:
            os.replace(self.staged.result(), self.staged_path)
            self.files += 1
            self.bytes += self.staged_bytes
            self.staged = None


WRITE_THREADS = 8
_IN_FLIGHT = 4 * WRITE_THREADS
_TEMP = ".tmp"


def _stage(path: Path, data: bytes, durable: bool = True) -> str:
    """A temp file beside `path` holding `data` (fsynced when `durable`): a random name,
    created exclusively, readable by the web server (mode 0644 less the umask)."""
    tmp = str(path.parent / f".{path.name}.{os.urandom(6).hex()}{_TEMP}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def _replace(path: Path, data: bytes, durable: bool = True) -> int:
    tmp = _stage(path, data, durable)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return len(data)


def _mkdir(directory: Path) -> bool:
    """Create `directory` (and its parents); whether it was new. One call when it exists."""
    try:
        os.mkdir(directory)
    except FileExistsError:
        return False
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temp_files(directory: Path) -> None:
    """Temp files a killed export left (the directory lock excludes a live one)."""
    if not directory.is_dir():
        return
    with os.scandir(directory) as it:
        for e in it:
            if e.name.startswith(".") and e.name.endswith(_TEMP):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)

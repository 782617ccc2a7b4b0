"""A verified mirror of a tlog-tiles log: a full local copy that trusts only the log's key.

Each run reads the source's checkpoint and accepts it only when (1) the pinned log key
signed it, (2) a consistency proof computed from the tiles shows it extends the checkpoint
mirrored last, (3) every new entry, re-hashed, equals its level-0 tile hash, and (4) the new
entries on top of the mirrored tree give the signed root. Then the entries are appended as
one batch (so the mirror's tree heads are the source's checkpointed sizes) and the
source's note is stored: the mirror is a normal ledger that `flchain verify` checks with
the source's key. A killed run leaves the last committed batch; the next one continues.

A source that signs two trees, one the mirror holds and one that does not extend it (a
fork at one size, or a rewritten history), is the misbehaviour a mirror exists to catch:
nothing is appended and both signed notes are kept as evidence beside the ledger
(`<ledger>.evidence.jsonl`), where anyone holding the log key can check them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from . import merkle
from .canonical import parse_json
from .checkpoint import Checkpoint, CheckpointError, open_checkpoint
from .ledger import BatchEntryError, Ledger, SizeConflict
from .notes import NoteError, Verifier
from .pinning import PinError, parse_verifier
from .store import StoreError
from .tile_source import TileReader, TileSource, open_source, read_tile
from .tiles import (
    ENTRIES,
    HASH_SIZE,
    TILE_WIDTH,
    TileDataError,
    levels,
    new_tiles,
    tile_at,
    tiles_for,
)

ProgressFn = Callable[[str, int, int], None]
"""Called with ("verify" or "append", entries done, entries to do) as a run goes."""

MAX_BATCH = 65_536
"""Entries per appended batch (rounded up to whole bundles). A run that catches up further
than this (a new mirror of a big log) appends several batches, so its memory stays
bounded; otherwise each batch is one checkpoint's growth."""


class MirrorError(ValueError):
    """The source cannot be mirrored; nothing was appended. The message names the file,
    entry or check that failed."""


@dataclass(frozen=True)
class Evidence:
    """Two checkpoints the same log key signed that cannot both be true.

    `kind` is "fork" (one size, two roots) or "rewrite" (the newer tree does not extend the
    mirrored one); `mirrored` is the note the mirror holds, `offered` the source's.
    """

    kind: str
    source: str
    mirrored: str
    offered: str
    detail: str
    detected: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class MirrorConflict(MirrorError):
    """The source signed a tree that conflicts with the mirrored one; the evidence is kept."""

    def __init__(self, evidence: Evidence, path: Path):
        super().__init__(f"{evidence.kind}: {evidence.detail}; both signed checkpoints are "
                         f"kept in {path}")
        self.evidence = evidence
        self.path = path


@dataclass(frozen=True)
class MirrorReport:
    """What one mirror run did: `status` is "mirrored" (entries appended), "up to date" or
    "source behind" (it offers an older checkpoint of the same tree, e.g. a stale cache)."""

    source: str
    ledger: str
    origin: str
    status: str
    old_size: int
    size: int
    root: bytes
    appended: int
    checkpoint: str


def evidence_path(ledger_file: str | os.PathLike[str]) -> Path:
    """Where a mirror keeps conflicting checkpoint pairs: `<ledger file>.evidence.jsonl`."""
    return Path(os.fspath(ledger_file) + ".evidence.jsonl")


def read_evidence(ledger_file: str | os.PathLike[str]) -> list[Evidence]:
    """Every conflict recorded beside `ledger_file`, oldest first (none: an empty list)."""
    path = evidence_path(ledger_file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for n, line in enumerate(lines, 1):
        try:
            out.append(Evidence(**parse_json(line)))
        except (ValueError, TypeError) as e:
            raise MirrorError(f"{path} line {n} is not an evidence record ({e})") from None
    return out


def _keep(ledger_file: Path, evidence: Evidence) -> Path:
    """Append `evidence` durably, once per pair of notes."""
    path = evidence_path(ledger_file)
    pair = (evidence.mirrored, evidence.offered)
    if any((e.mirrored, e.offered) == pair for e in read_evidence(ledger_file)):
        return path
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(evidence.to_json(), ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def _pinned_key(ledger_file: Path, given: Verifier | str | None) -> Verifier | None:
    """The key the mirror trusts: `given`, which must equal the key pinned at the first
    run, or the pinned one. None for a new mirror given no key."""
    key = None
    if given is not None:
        try:
            key = parse_verifier(given, "verifier")
        except PinError as e:
            raise MirrorError(str(e)) from None
    if not ledger_file.exists():
        return key
    with Ledger(ledger_file, create=False, read_only=True) as led:
        pinned = led.pinned_verifier
    if key is not None and pinned is not None and pinned.vkey != key.vkey:
        raise MirrorError(f"{ledger_file} mirrors the log of key {pinned.vkey}, not "
                          f"{key.vkey}: a mirror follows one log key (use another mirror file)")
    return key or pinned


def _open_checkpoint(source: TileSource, key: Verifier) -> tuple[str, Checkpoint]:
    note = source.checkpoint()
    try:
        cp, _ = open_checkpoint(note, key)
    except (CheckpointError, NoteError) as e:
        raise MirrorError(f"{source.location}/checkpoint: {e}; nothing was mirrored") from None
    return note, cp


def _open_mirror(ledger_file: Path, key: Verifier, origin: str) -> Ledger:
    try:
        led = Ledger(ledger_file, create=True, origin=origin)
    except StoreError as e:
        raise MirrorError(f"{ledger_file}: {e}: it mirrors another log") from None
    try:
        led.pin_verifier(key)
    except ValueError as e:
        led.close()
        raise MirrorError(f"{ledger_file}: {e}") from None
    return led


def mirror(
    source: TileSource | str | os.PathLike[str],
    ledger_file: str | os.PathLike[str],
    verifier: Verifier | str | None = None,
    *,
    progress: ProgressFn | None = None,
    batch: int = MAX_BATCH,
) -> MirrorReport:
    """Bring the mirror ledger `ledger_file` up to the source's checkpoint, verified.

    `verifier`: the log's key (a Verifier, vkey or file holding one); pinned in the mirror
    at its first run, and later refused if it differs. MirrorConflict (evidence kept) for a
    fork or a rewrite; MirrorError for anything else that does not verify, with nothing
    appended; TileSourceError when the source cannot be read. `batch`: see MAX_BATCH.
    """
    if batch < 1:
        raise ValueError(f"batch: got {batch}, want >= 1")
    path = Path(os.fspath(ledger_file))
    key = _pinned_key(path, verifier)
    if key is None:
        raise MirrorError(f"{path} pins no log key and none was given: give the log's "
                          "verifier key (the vkey `flchain keygen` printed for it)")
    if isinstance(source, TileSource):
        return _mirror(source, path, key, progress, batch)
    opened = open_source(source)
    try:
        return _mirror(opened, path, key, progress, batch)
    finally:
        opened.close()


def _mirror(src: TileSource, path: Path, key: Verifier, progress: ProgressFn | None,
            batch: int) -> MirrorReport:
    note, cp = _open_checkpoint(src, key)
    with _open_mirror(path, key, cp.origin) as led:
        old = led.head()
        if cp.size <= old.size:
            status = _settled(led, path, src, note, cp, key)
            return MirrorReport(src.location, str(path), led.origin, status, old.size,
                                old.size, old.root, 0, note)
        reader = TileReader(src, cp.size)
        leaves, entries = _new_leaves(reader, old.size, cp, progress, batch)
        _check_extends(led, path, reader, note, cp)
        _check_root(reader, old.size, leaves, cp)
        if entries is not None:  # one batch, read and checked above: no second read
            _append(led, path, src, entries, cp.size)
            if progress is not None:
                progress("append", len(entries), len(entries))
        else:
            _copy(led, path, reader, cp, leaves, progress, batch)
        if led.head().root != cp.root_hash:  # the checks above make this unreachable
            raise MirrorError(f"{path}: the mirrored root {led.head().root.hex()} is not "
                              f"the signed {cp.root_hash.hex()}; run `flchain verify`")
        led.add_checkpoint_note(note, key)
    return MirrorReport(src.location, str(path), cp.origin, "mirrored", old.size, cp.size,
                        cp.root_hash, cp.size - old.size, note)


def _conflict(path: Path, kind: str, src: TileSource, mirrored: str | None, offered: str,
              detail: str) -> MirrorConflict:
    evidence = Evidence(kind, src.location, mirrored or "", offered, detail, time.time())
    return MirrorConflict(evidence, _keep(path, evidence))


def _settled(led: Ledger, path: Path, src: TileSource, note: str, cp: Checkpoint,
             key: Verifier) -> str:
    """A checkpoint no larger than the mirror: the same tree (nothing to do; store its note
    if a killed run missed it) or a fork."""
    ours = led.root_at(cp.size)
    if ours != cp.root_hash:
        kind = "fork" if cp.size == led.size else "rewrite"
        raise _conflict(path, kind, src, led.latest_checkpoint(), note,
                        f"{src.location} signs size {cp.size} with root "
                        f"{cp.root_hash.hex()}, the mirror holds root {ours.hex()} there")
    if cp.size < led.size:
        return "source behind"
    if cp.size and cp.size not in led.checkpoint_sizes(1):
        led.add_checkpoint_note(note, key)
    return "up to date"


def _check_extends(led: Ledger, path: Path, reader: TileReader, note: str,
                   cp: Checkpoint) -> None:
    """The hash tiles must give the signed root (else the source is damaged: refused), and
    the consistency proof computed from them must show that the signed tree extends the
    mirrored one (else the log rewrote its history: evidence)."""
    old = led.head()
    src = reader.source
    try:
        if reader.root() != cp.root_hash:
            raise MirrorError(f"{src.location}: the hash tiles of size {cp.size} do not give "
                              f"the signed root {cp.root_hash.hex()}: {_bad_tile(reader)}; the "
                              "source's tiles are damaged or tampered; nothing was mirrored")
        proof = reader.consistency_proof(old.size)
    except TileDataError as e:
        raise MirrorError(f"{src.location}: {e}; nothing was mirrored") from None
    try:
        merkle.verify_consistency(old.size, cp.size, proof, old.root, cp.root_hash)
    except merkle.ProofError as e:
        raise _conflict(path, "rewrite", src, led.latest_checkpoint(), note,
                        f"{src.location} signs size {cp.size}, which does not extend the "
                        f"mirrored size {old.size} ({e})") from None


def _bad_tile(reader: TileReader) -> str:
    """The first hash of a tile at level >= 1 that is not the MTH of the 256 hashes below
    it (only called once the tiles are known not to give the signed root)."""
    for level in levels(reader.size)[1:]:
        for tile in tiles_for(reader.size, level):
            got = reader.hashes(tile)
            for j in range(tile.width):
                i = tile.first_hash + j
                below = [reader.hash_at(level - 1, k)
                         for k in range(i * TILE_WIDTH, (i + 1) * TILE_WIDTH)]
                if merkle.root(below) != got[j]:
                    return (f"hash {j} of {tile.path} is not the tree hash of the "
                            f"{TILE_WIDTH} level-{level - 1} hashes below it")
    return "the tiles agree with each other, so the checkpoint signs another tree"


def _new_leaves(reader: TileReader, old_size: int, cp: Checkpoint,
                progress: ProgressFn | None, batch: int) -> tuple[bytes, list[bytes] | None]:
    """The leaf hashes of entries [old_size, cp.size), re-hashed from the bundles, each
    equal to its level-0 tile hash; 32 bytes each, concatenated (compact: a new mirror of
    a big log holds them all). And the entries themselves when they fit one batch (a
    mirror following its log), so they are appended without being read again."""
    src = reader.source
    leaves = bytearray()
    total = cp.size - old_size
    entries: list[bytes] | None = [] if total <= batch else None
    for bundle, tile in zip(new_tiles(old_size, cp.size, ENTRIES),
                            new_tiles(old_size, cp.size, 0), strict=True):
        try:
            got, want = read_tile(src, bundle), read_tile(src, tile)
        except TileDataError as e:
            raise MirrorError(f"{src.location}: {e}; nothing was mirrored") from None
        first = bundle.first_hash
        for i in range(max(old_size, first), first + bundle.width):
            leaf = merkle.leaf_hash(got[i - first])
            if leaf != want[i - first]:
                raise MirrorError(
                    f"{src.location}: entry {i} in {bundle.path} hashes to {leaf.hex()}, "
                    f"{tile.path} holds {want[i - first].hex()}: the source's tiles are "
                    "damaged or tampered; nothing was mirrored")
            leaves += leaf
            if entries is not None:
                entries.append(got[i - first])
        if progress is not None:
            progress("verify", len(leaves) // HASH_SIZE, total)
    return bytes(leaves), entries


def _check_root(reader: TileReader, old_size: int, leaves: bytes, cp: Checkpoint) -> None:
    """The mirrored tree's edge, extended with the new leaves re-hashed from their entries,
    must give the signed root: this ties every new entry to the signature."""
    src = reader.source
    frontier = reader.frontier(old_size)
    if frontier.root() != reader.root(old_size):
        raise MirrorError(f"{src.location}: the hash tiles below size {old_size} disagree "
                          "with each other: damaged or tampered; nothing was mirrored")
    frontier.extend([leaves[i:i + HASH_SIZE] for i in range(0, len(leaves), HASH_SIZE)])
    if frontier.root() != cp.root_hash:
        raise MirrorError(f"{src.location}: entries {old_size}..{cp.size - 1} give root "
                          f"{frontier.root().hex()}, the checkpoint signs "
                          f"{cp.root_hash.hex()}; nothing was mirrored")


def _copy(led: Ledger, path: Path, reader: TileReader, cp: Checkpoint, leaves: bytes,
          progress: ProgressFn | None, batch: int) -> None:
    """Read the verified entries again, bundle by bundle (each must still hash to its
    verified leaf), and append them in batches of whole bundles, a new batch once one
    holds `batch` entries: a catch-up too long to hold in memory. An entry that is not a
    canonical flchain entry stops the copy after the batches before it."""
    src = reader.source
    start = led.size
    pending: list[bytes] = []
    for bundle in new_tiles(start, cp.size, ENTRIES):
        try:
            data = read_tile(src, bundle)
        except TileDataError as e:
            raise MirrorError(f"{src.location}: {e}; the mirror holds {led.size}") from None
        first = bundle.first_hash
        for i in range(max(start, first), first + bundle.width):
            j = (i - start) * HASH_SIZE
            if merkle.leaf_hash(data[i - first]) != leaves[j:j + HASH_SIZE]:
                raise MirrorError(f"{src.location}: entry {i} in {bundle.path} changed while "
                                  f"it was mirrored; the mirror holds {led.size}: rerun")
            pending.append(data[i - first])
        if len(pending) >= batch or bundle.first_hash + bundle.width == cp.size:
            _append(led, path, src, pending, cp.size)
            pending = []
            if progress is not None:
                progress("append", led.size - start, cp.size - start)


def _append(led: Ledger, path: Path, src: TileSource, entries: list[bytes],
            size: int) -> None:
    """Append the bundles' bytes as they are (`Ledger.append_stored`): an entry that is not
    a canonical flchain entry stops the copy after the batches before it."""
    held = led.size
    try:
        led.append_stored(entries, expect_size=held)
    except SizeConflict as e:
        raise MirrorError(f"{path}: {e}: another process writes this mirror; run one "
                          "mirror per file") from None
    except BatchEntryError as e:
        index = held + e.position
        bundle = tile_at(size, ENTRIES, index // TILE_WIDTH).path
        raise MirrorError(f"{src.location}: entry {index} in {bundle} "
                          f"is not a canonical flchain entry ({e.error}); the mirror holds "
                          f"{held} entries") from None


__all__ = [
    "Evidence",
    "MirrorConflict",
    "MirrorError",
    "MirrorReport",
    "evidence_path",
    "mirror",
    "read_evidence",
]

"""The append-only ledger: batches of entries in an RFC 9162 Merkle log.

`append` validates and hashes outside the lock, then in one write transaction reads the
tree's right edge (O(log n) nodes), stores the entries with their leaf hashes, the newly
completed subtrees from level MIN_NODE_LEVEL up, and one tree head. Proofs read O(log n)
stored hashes; `verify` recomputes all of it and names the first stored thing that
disagrees.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import merkle
from .checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from .digest import format_digest, parse_digest
from .entries import ENTRY_TYPES, Entry, EntryError, decode
from .leafscan import REFS_MOD, LeafScan, Problem, ref_hash, scan, scan_in_workers
from .notes import Signer, Verifier
from .store import HeadRow, Store, StoreError, node_key, ref_key


@dataclass(frozen=True)
class TreeHead:
    """The tree after a batch: its size and root hash."""

    size: int
    root: bytes
    timestamp: float

    @property
    def root_digest(self) -> str:
        return format_digest(self.root)


@dataclass(frozen=True)
class LoggedEntry:
    """An entry as the log holds it: index, canonical bytes, leaf hash, typed value."""

    index: int
    data: bytes
    entry: Entry

    @property
    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.data)


@dataclass(frozen=True)
class InclusionProof:
    index: int
    size: int
    leaf_hash: bytes
    hashes: tuple[bytes, ...]
    root: bytes

    def verify(self) -> None:
        """Raise merkle.ProofError unless the proof holds."""
        merkle.verify_inclusion(self.index, self.size, self.leaf_hash, self.hashes, self.root)


@dataclass(frozen=True)
class ConsistencyProof:
    size1: int
    size2: int
    hashes: tuple[bytes, ...]
    root1: bytes
    root2: bytes

    def verify(self) -> None:
        merkle.verify_consistency(self.size1, self.size2, self.hashes, self.root1, self.root2)


@dataclass(frozen=True)
class VerifyReport:
    size: int
    root: bytes
    heads: int
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


ProgressFn = Callable[[int, int], None]


class SizeConflict(StoreError):
    """The log grew between reading its size and appending a batch that depends on it."""

    def __init__(self, size: int, expected: int):
        super().__init__(f"ledger has {size} entries, batch was built for {expected}")
        self.size = size
        self.expected = expected


MIN_NODE_LEVEL = 4
"""Subtrees below this level (up to 8 leaves) are not stored but recomputed from the leaf
hashes beside the entries when a proof or an append needs them: a node row per 16 entries
instead of one per entry, for at most 15 extra leaf reads per proof."""

PARALLEL_VERIFY_MIN = 200_000
"""Below this many entries `verify` hashes in-process; above, entries are decoded and
hashed by one worker process per core (decoding dominates and holds the GIL)."""

__all__ = [
    "ConsistencyProof",
    "InclusionProof",
    "Ledger",
    "LoggedEntry",
    "Problem",
    "SizeConflict",
    "TreeHead",
    "VerifyReport",
]


class _NodeReader(Protocol):
    def nodes(self, keys: Sequence[int]) -> dict[int, bytes]: ...


def _subtrees(reader: _NodeReader, keys: Sequence[int]) -> dict[int, bytes]:
    """Perfect subtree hashes by node key: leaves and stored levels are read, the levels in
    between recomputed from the leaf hashes they cover. Missing keys are left out."""
    low = [k for k in keys if 0 < k >> 40 < MIN_NODE_LEVEL]
    if not low:
        return reader.nodes(keys)
    mask = (1 << 40) - 1
    spans = {k: range((k & mask) << (k >> 40), ((k & mask) + 1) << (k >> 40)) for k in low}
    want = [k for k in keys if not 0 < k >> 40 < MIN_NODE_LEVEL]
    want += [node_key(0, i) for span in spans.values() for i in span]
    got = reader.nodes(want)
    for k, span in spans.items():
        leaves = [got.get(node_key(0, i)) for i in span]
        if all(leaf is not None for leaf in leaves):
            got[k] = merkle.root(leaves)  # type: ignore[arg-type]
    return got


def _open_store(target: str | os.PathLike[str] | Store, create: bool) -> Store:
    if not isinstance(target, (str, os.PathLike)):
        return target
    text = os.fspath(target)
    if text.startswith(("postgresql://", "postgres://")):
        raise StoreError("PostgreSQL ledgers are not available in this version; use a file path")
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///") :]
    from .store.sqlite import SqliteStore

    return SqliteStore(Path(text), create=create)


class Ledger:
    """An append-only, verifiable log of training events.

    Safe for several threads and processes on one file: appends are serialized by the
    store's write lock, and the tree state is re-read inside every write transaction.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | Store,
        *,
        create: bool = True,
        origin: str | None = None,
    ):
        self.store: Store = _open_store(target, create)
        stored = self.store.meta("origin")
        if stored is None:
            if not create:
                raise StoreError("ledger has no origin; it was not created by `flchain init`")
            # First writer wins, so processes creating one ledger at once agree on it.
            self.store.set_meta(
                "origin", origin or f"flchain.local/{uuid.uuid4().hex[:16]}", replace=False
            )
            stored = self.store.meta("origin")
        elif origin is not None and origin != stored:
            raise StoreError(f"ledger origin is {stored!r}, not {origin!r}")
        assert stored is not None
        self.origin: str = stored

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    # -- writing -----------------------------------------------------------------------

    def append(self, entries: Iterable[Entry], *, expect_size: int | None = None) -> TreeHead:
        """Append one batch atomically and durably; returns the new tree head.

        Every entry is encoded and checked before anything is written: a bad entry raises
        EntryError and the ledger is unchanged. `expect_size`: refuse with SizeConflict if
        another writer grew the log since the caller computed leaf indices for this batch
        (e.g. a `model` entry's `inputs`).
        """
        items = list(entries)
        if not items:
            raise EntryError("empty batch: append at least one entry")
        encoded: list[tuple[str, bytes]] = []
        subjects: list[tuple[bytes, ...]] = []
        for i, e in enumerate(items):
            if not isinstance(e, Entry) or ENTRY_TYPES.get(e.TYPE) is not type(e):
                raise EntryError(
                    f"batch[{i}]: {type(e).__name__} is not a registered entry type "
                    f"(one of {sorted(ENTRY_TYPES)})"
                )
            try:
                encoded.append((e.TYPE, e.encode()))
            except EntryError as err:
                raise EntryError(f"batch[{i}]: {err}") from err
            subjects.append(tuple(bytes.fromhex(s[7:]) for s in e.subjects))
        leaf = merkle.leaf_hash
        leaves = [leaf(d) for _, d in encoded]

        with self.store.writer() as w:
            head = w.head()
            size = head.size if head else 0
            if expect_size is not None and size != expect_size:
                raise SizeConflict(size, expect_size)
            if w.entry_count() != size:
                raise StoreError(
                    f"ledger is damaged: it stores {w.entry_count()} entries but its latest "
                    f"tree head has {size}; run `flchain verify`"
                )
            keys = [node_key(lv, ix) for lv, ix in merkle.Frontier.nodes_for(size)]
            stored = _subtrees(w, keys)
            try:
                frontier = merkle.Frontier(size, [stored[k] for k in keys])
            except KeyError as e:
                raise StoreError(
                    f"ledger is damaged: node {e} of the tree edge is missing; run `flchain verify`"
                ) from None
            nodes = [
                ((lv << 40) | ix, h)
                for lv, ix, h in frontier.extend(leaves)
                if lv >= MIN_NODE_LEVEL
            ]
            rows = [(size + i, t, leaves[i], d) for i, (t, d) in enumerate(encoded)]
            refs = [(s, size + i) for i, subs in enumerate(subjects) for s in subs]
            new = HeadRow(frontier.size, frontier.root(), time.time())
            w.put(rows, refs, nodes, new)
        return TreeHead(new.size, new.root, new.timestamp)

    # -- reading -----------------------------------------------------------------------

    def head(self) -> TreeHead:
        """The latest tree head (size 0 and the empty root for a new ledger)."""
        h = self.store.head()
        if h is None:
            return TreeHead(0, merkle.SHA256.empty_root(), 0.0)
        return TreeHead(h.size, h.root, h.timestamp)

    @property
    def size(self) -> int:
        return self.head().size

    def heads(self) -> list[TreeHead]:
        return [TreeHead(h.size, h.root, h.timestamp) for h in self.store.heads()]

    def _logged(self, index: int, data: bytes) -> LoggedEntry:
        try:
            return LoggedEntry(index, data, decode(data))
        except EntryError as e:
            raise StoreError(f"entry {index} does not decode: {e}; run `flchain verify`") from e

    def get(self, index: int) -> LoggedEntry:
        """The entry at `index`. Requires 0 <= index < size."""
        row = self.store.entry(index)
        if row is None:
            raise IndexError(f"no entry {index}: the ledger has {self.size} entries")
        return self._logged(index, row.data)

    def __getitem__(self, index: int) -> LoggedEntry:
        return self.get(index)

    def __len__(self) -> int:
        return self.size

    def iter_entries(
        self,
        start: int = 0,
        end: int | None = None,
        type: str | None = None,
        reverse: bool = False,
    ) -> Iterator[LoggedEntry]:
        """Entries in [start, end), oldest first, or newest first with `reverse`."""
        stop = self.size if end is None else end
        for row in self.store.entries(start, stop, type, reverse):
            yield self._logged(row.index, row.data)

    def find(self, digest: str, type: str | None = None) -> list[LoggedEntry]:
        """Entries about `digest` (a model, update, dataset, file...), oldest first."""
        out = [self.get(i) for i in self.store.find(parse_digest(digest))]
        return [
            e for e in out if digest in e.entry.subjects and (type is None or type == e.entry.TYPE)
        ]

    # -- proofs ------------------------------------------------------------------------

    def _range_hashes(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        plans = [merkle.perfect_subtrees(a, b) for a, b in ranges]
        keys = [node_key(lv, ix) for plan in plans for lv, ix in plan]
        got = _subtrees(self.store, keys)
        try:
            return [merkle.fold_range([got[node_key(lv, ix)] for lv, ix in p]) for p in plans]
        except KeyError as e:
            raise StoreError(
                f"ledger is damaged: node {e} is missing; run `flchain verify`"
            ) from None

    def _size_and_root(self, size: int | None) -> tuple[int, bytes]:
        head = self.head()
        if size is None or size == head.size:
            return head.size, head.root
        if not 0 <= size <= head.size:
            raise ValueError(f"tree size {size} is beyond the ledger's {head.size} entries")
        if size == 0:
            return 0, merkle.SHA256.empty_root()
        return size, self._range_hashes([(0, size)])[0]

    def root_at(self, size: int) -> bytes:
        """The root hash of the tree's first `size` entries."""
        return self._size_and_root(size)[1]

    def inclusion_proof(self, index: int, size: int | None = None) -> InclusionProof:
        """Proof that entry `index` is in the tree of `size` (default: the latest)."""
        n, root = self._size_and_root(size)
        if not 0 <= index < n:
            raise IndexError(f"entry {index} is not in a tree of size {n}")
        ranges = merkle.inclusion_ranges(index, n)
        leaf = self.store.nodes([node_key(0, index)])
        if not leaf:
            raise StoreError(f"ledger is damaged: leaf {index} is missing; run `flchain verify`")
        return InclusionProof(
            index, n, leaf[node_key(0, index)], tuple(self._range_hashes(ranges)), root
        )

    def consistency_proof(self, size1: int, size2: int | None = None) -> ConsistencyProof:
        """Proof that the tree of `size2` (default: latest) extends the tree of `size1`."""
        n2, root2 = self._size_and_root(size2)
        if not 0 <= size1 <= n2:
            raise ValueError(f"size1 {size1} must be between 0 and {n2}")
        _, root1 = self._size_and_root(size1)
        hashes = self._range_hashes(merkle.consistency_ranges(size1, n2))
        return ConsistencyProof(size1, n2, tuple(hashes), root1, root2)

    # -- verification ------------------------------------------------------------------

    def verify(
        self, progress: ProgressFn | None = None, decode_entries: bool = True
    ) -> VerifyReport:
        """Recompute every leaf, node and tree head from the stored entry bytes.

        Returns a report naming the first disagreement: an entry whose bytes do not decode
        or do not match its leaf hash, a stored node or tree head that differs from the
        recomputed one, or a missing row. `progress(done, total)` is called as entries pass.
        """
        heads = list(self.store.heads())
        size = heads[-1].size if heads else 0
        total = size
        problem = self._verify_levels(size, heads, progress, decode_entries, total)
        root = heads[-1].root if heads else merkle.SHA256.empty_root()
        return VerifyReport(size, root, len(heads), problem)

    def _scan_all_leaves(
        self, size: int, decode_entries: bool, progress: ProgressFn | None, total: int
    ) -> LeafScan:
        from .store.sqlite import SqliteStore

        workers = min(os.cpu_count() or 1, 8)
        if size < PARALLEL_VERIFY_MIN or workers < 2 or not isinstance(self.store, SqliteStore):
            return scan(self.store, 0, size, decode_entries, progress, total)
        return scan_in_workers(str(self.store.path), size, workers, decode_entries, progress)

    def _verify_levels(
        self,
        size: int,
        heads: list[HeadRow],
        progress: ProgressFn | None,
        decode_entries: bool,
        total: int,
    ) -> Problem | None:
        scan = self._scan_all_leaves(size, decode_entries, progress, total)
        if scan.problem is not None:
            if scan.suspect is not None and scan.suspect < scan.problem.index:
                i = scan.suspect
                return Problem("entry", i, f"entry {i}: stored bytes do not match its leaf hash")
            return scan.problem
        if progress:
            progress(size, total)
        computed = scan.hashes
        suspect = scan.suspect
        stored_count = self.store.entry_count()
        if stored_count != size:
            return Problem(
                "head",
                size,
                f"the store holds {stored_count} entries but the latest tree head has {size}: "
                f"a tree head was removed or entries were added outside a batch",
            )

        levels: list[bytes] = [bytes(computed)]
        if suspect is not None:
            # Bytes and stored leaf hash disagree. Rebuild the latest root from the stored
            # tree, except the subtree holding this entry, which is rebuilt from the bytes:
            # if that gives the signed-off root, the bytes are intact and the leaf row changed.
            i = suspect
            plan = merkle.perfect_subtrees(0, size)
            mine = next(p for p in plan if p[1] == i >> p[0])
            others = _subtrees(
                self.store, [node_key(lv, ix) for lv, ix in plan if (lv, ix) != mine]
            )
            lo, hi = mine[1] << mine[0], (mine[1] + 1) << mine[0]
            rebuilt = merkle.root([levels[0][j * 32 : j * 32 + 32] for j in range(lo, hi)])
            parts = [
                others.get(node_key(lv, ix)) if (lv, ix) != mine else rebuilt for lv, ix in plan
            ]
            if heads and None not in parts and merkle.fold_range(parts) == heads[-1].root:  # type: ignore[arg-type]
                return Problem("leaf", i, f"entry {i}: stored leaf hash was changed", 0)
            return Problem("entry", i, f"entry {i}: stored bytes do not match its leaf hash")

        # Higher levels: pair the level below, compare with stored rows in order.
        level, width = 0, size
        while width > 1:
            below = levels[level]
            level += 1
            width //= 2
            cur = bytearray()
            node = merkle.node_hash
            if level < MIN_NODE_LEVEL:  # not stored: recomputed only
                for ix in range(width):
                    cur += node(below[ix * 64 : ix * 64 + 32], below[ix * 64 + 32 : ix * 64 + 64])
                if any(True for _ in self.store.level(level)):
                    return Problem("node", 0, f"unexpected node rows at level {level}", level)
                levels.append(bytes(cur))
                continue
            stored = self.store.level(level)
            for ix in range(width):
                h = node(below[ix * 64 : ix * 64 + 32], below[ix * 64 + 32 : ix * 64 + 64])
                cur += h
                sidx, sh = next(stored, (None, b""))
                if sidx != ix:
                    return Problem("missing", ix, f"node level {level} index {ix}: missing", level)
                if sh != h:
                    first, last = ix << level, ((ix + 1) << level) - 1
                    return Problem(
                        "node",
                        ix,
                        f"node level {level} index {ix} (entries {first}..{last}): "
                        f"stored hash differs from recomputed",
                        level,
                    )
            if next(stored, None) is not None:
                return Problem("node", width, f"node row beyond the tree at level {level}", level)
            levels.append(bytes(cur))

        def sub(lv: int, ix: int) -> bytes:
            return levels[lv][ix * 32 : ix * 32 + 32]

        for h in heads:
            if h.size > size:  # pragma: no cover - heads are read in order
                break
            want = (
                merkle.fold_range([sub(lv, ix) for lv, ix in merkle.perfect_subtrees(0, h.size)])
                if h.size
                else merkle.SHA256.empty_root()
            )
            if want != h.root:
                return Problem(
                    "head",
                    h.size,
                    f"tree head at size {h.size}: stored root {h.root.hex()}, "
                    f"recomputed {want.hex()}",
                )
        # Last: the digest index is derived data, checked once the tree itself holds.
        return self._verify_refs(size, scan.refs) if decode_entries else None

    def _verify_refs(self, size: int, expected: int) -> Problem | None:
        """Compare the digest index (used by `find`) with the digests the entries name."""
        got = 0
        for key, index in self.store.ref_rows():
            if index >= size:
                return Problem("index", index, f"digest index names entry {index}, beyond {size}")
            got += ref_hash(key, index)
        if got % REFS_MOD == expected:
            return None
        # Slow path, only on failure: find the first entry whose index rows differ.
        rows: dict[int, set[int]] = {}
        for key, index in self.store.ref_rows():
            rows.setdefault(index, set()).add(key)
        for logged in self.iter_entries(0, size):
            want = {ref_key(bytes.fromhex(d[7:])) for d in logged.entry.subjects}
            if rows.get(logged.index, set()) != want:
                return Problem(
                    "index",
                    logged.index,
                    f"entry {logged.index}: digest index rows differ from the digests it names",
                )
        return Problem("index", size, "digest index differs from the entries")  # pragma: no cover

    # -- checkpoints ---------------------------------------------------------------------

    def checkpoint(self, size: int | None = None) -> Checkpoint:
        """The unsigned C2SP checkpoint of the tree at `size` (default: latest)."""
        n, root = self._size_and_root(size)
        return Checkpoint(self.origin, n, root)

    def sign_checkpoint(self, signer: Signer, size: int | None = None) -> str:
        """Sign the tree of `size` entries (default: the latest head) as a C2SP checkpoint,
        store the note, and return it.

        The key's name must be the log's origin, as C2SP verifiers expect.
        """
        if signer.name != self.origin:
            raise ValueError(
                f"signer name {signer.name!r} is not the ledger origin {self.origin!r}: "
                f"make the key with `flchain keygen {self.origin}`"
            )
        cp = self.checkpoint(size)
        note = sign_checkpoint(cp, signer)
        self.store.add_checkpoint(cp.size, note)
        return note

    def add_checkpoint_note(self, note: str, verifier: Verifier) -> Checkpoint:
        """Store a note (e.g. cosigned by witnesses) after checking it against this log."""
        cp, _ = open_checkpoint(note, verifier, origin=self.origin)
        if cp.size > self.size or self.root_at(cp.size) != cp.root_hash:
            raise ValueError(f"checkpoint at size {cp.size} does not match this ledger's tree")
        self.store.add_checkpoint(cp.size, note)
        return cp

    def checkpoint_sizes(self, last: int) -> list[int]:
        """Tree sizes of the `last` most recent signed checkpoints, oldest first."""
        return self.store.checkpoint_sizes(last)

    def latest_checkpoint(self) -> str | None:
        """The most recently stored signed checkpoint note, if any."""
        notes = self.store.checkpoints(last=1)
        return notes[-1][1] if notes else None

    # -- metadata ----------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        head = self.head()
        return {
            "origin": self.origin,
            "size": head.size,
            "root": format_digest(head.root),
            "timestamp": head.timestamp,
        }

"""The append-only ledger: batches of entries in an RFC 9162 Merkle log.

`append` validates and hashes outside the lock, then in one write transaction reads the
tree's right edge (O(log n) nodes), stores the entries with their leaf hashes, the newly
completed subtrees from level MIN_NODE_LEVEL up, and one tree head. Proofs read O(log n)
stored hashes. Auditing (recomputing all of it) lives apart, in `ledger_audit`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import merkle
from .checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from .digest import format_digest, parse_digest
from .entries import ENTRY_TYPES, Entry, EntryError, check_stored, decode
from .ledger_audit import Problem, VerifyReport, verify_ledger
from .notes import ED25519, NoteError, Signer, Verifier
from .store import HeadRow, Store, StoreError, node_key
from .store.url import is_postgres_url
from .subtrees import MIN_NODE_LEVEL, subtree_hashes


@dataclass(frozen=True)
class TreeHead:
    """The tree after a batch: its size and root hash."""

    size: int
    root: bytes
    timestamp: float
    checkpoint: str | None = field(default=None, compare=False)
    """The signed checkpoint stored with this head when `append` was given a signer."""

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


ProgressFn = Callable[[int, int], None]


class SizeConflict(StoreError):
    """The log grew between reading its size and appending a batch that depends on it."""

    def __init__(self, size: int, expected: int):
        super().__init__(f"ledger has {size} entries, batch was built for {expected}")
        self.size = size
        self.expected = expected


PINNED_VERIFIER_META = "verifier"
"""Meta key of the log's verifier key pinned at creation (`Ledger.pin_verifier`)."""

__all__ = [
    "MIN_NODE_LEVEL",
    "ConsistencyProof",
    "InclusionProof",
    "Ledger",
    "LoggedEntry",
    "Problem",
    "SizeConflict",
    "TreeHead",
    "VerifyReport",
]


def _open_store(target: str | os.PathLike[str] | Store, create: bool, read_only: bool) -> Store:
    if not isinstance(target, (str, os.PathLike)):
        return target
    text = os.fspath(target)
    if is_postgres_url(text):
        try:
            from .store.postgres import PostgresStore  # psycopg only for server ledgers
        except ImportError as e:
            raise StoreError(f"a PostgreSQL ledger needs psycopg ({e}): pip install "
                             "'flchain-plugin[postgres]'") from e
        return PostgresStore(text, create=create, read_only=read_only)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///") :]
    from .store.sqlite import SqliteStore

    return SqliteStore(Path(text), create=create, read_only=read_only)


def _encode_batch(
    entries: Iterable[Entry],
) -> tuple[list[tuple[str, bytes]], list[tuple[bytes, ...]]]:
    """Each entry's type and canonical bytes, and the digests it is indexed under: all
    checked before the write lock is taken, so a bad entry changes nothing."""
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
            raise BatchEntryError(i, err) from err
        subjects.append(tuple(bytes.fromhex(s[7:]) for s in e.subjects))
    return encoded, subjects


class BatchEntryError(EntryError):
    """Entry `position` of a batch is not a valid entry (nothing was appended)."""

    def __init__(self, position: int, error: EntryError):
        self.position = position
        self.error = error
        super().__init__(f"batch[{position}]: {error}")


def _check_stored_batch(
    datas: Iterable[bytes],
) -> tuple[list[tuple[str, bytes]], list[tuple[bytes, ...]]]:
    """`_encode_batch` for entries that arrive as canonical bytes (a mirror copying another
    log): each is checked as `verify` checks a stored entry, without building it."""
    encoded: list[tuple[str, bytes]] = []
    subjects: list[tuple[bytes, ...]] = []
    for i, data in enumerate(datas):
        data = bytes(data)
        try:
            type_, subs = check_stored(data)
        except EntryError as err:
            raise BatchEntryError(i, err) from err
        encoded.append((type_, data))
        subjects.append(tuple(bytes.fromhex(s[7:]) for s in subs))
    if not encoded:
        raise EntryError("empty batch: append at least one entry")
    return encoded, subjects


class Ledger:
    """An append-only, verifiable log of training events.

    Safe for several threads and processes on one file: appends are serialized by the
    store's write lock, and the tree state is re-read inside every write transaction.
    `read_only=True` opens an existing file for reading only (an archive, an auditor's
    read-only mount): reads, proofs and `verify` work, writes raise StoreError.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | Store,
        *,
        create: bool = True,
        origin: str | None = None,
        read_only: bool = False,
    ):
        self.store: Store = _open_store(target, create and not read_only, read_only)
        stored = self.store.meta("origin")
        if stored is None:
            if not create or read_only:
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

    def append(
        self,
        entries: Iterable[Entry],
        *,
        expect_size: int | None = None,
        signer: Signer | None = None,
        pq_signer: Signer | None = None,
    ) -> TreeHead:
        """Append one batch atomically and durably; returns the new tree head.

        Every entry is encoded and checked before anything is written: a bad entry raises
        EntryError and the ledger is unchanged. `expect_size`: refuse with SizeConflict if
        another writer grew the log since the caller computed leaf indices for this batch
        (e.g. a `model` entry's `inputs`). `signer`: also sign the new head as a C2SP
        checkpoint and store it in the same transaction (one fsync for batch and
        signature; the note is the returned head's `checkpoint`). `pq_signer`: an ML-DSA-44
        key adding a second signature to that checkpoint (see `sign_checkpoint`).
        """
        if signer is not None:
            self._check_signer(signer, pq_signer)
        encoded, subjects = _encode_batch(entries)
        return self._write(encoded, subjects, expect_size, signer, pq_signer)

    def append_stored(self, datas: Iterable[bytes], *, expect_size: int | None = None
                      ) -> TreeHead:
        """`append` for entries given as their canonical bytes, as another log stores them:
        each is checked as `verify` checks a stored entry (BatchEntryError names the first
        that is not one), nothing is re-encoded, and the leaf hashes are of these bytes."""
        encoded, subjects = _check_stored_batch(datas)
        return self._write(encoded, subjects, expect_size, None, None)

    def _write(self, encoded: list[tuple[str, bytes]], subjects: list[tuple[bytes, ...]],
               expect_size: int | None, signer: Signer | None, pq_signer: Signer | None
               ) -> TreeHead:
        """One batch of checked entries, with its nodes, index rows, head and checkpoint,
        in one transaction."""
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
            stored = subtree_hashes(w, keys)
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
            note = (sign_checkpoint(Checkpoint(self.origin, new.size, new.root), signer,
                                    pq_signer) if signer is not None else None)
            w.put(rows, refs, nodes, new, note)
        return TreeHead(new.size, new.root, new.timestamp, note)

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
        """The entry at `index`. Requires 0 <= index < size: a negative index is refused,
        not counted from the end, so no stored row outside the tree is ever returned."""
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"entry index must be an int, got {type(index).__name__}")
        if index < 0:
            raise IndexError(f"no entry {index}: indices run from 0 to size - 1 "
                             f"({self.size} entries)")
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
        got = subtree_hashes(self.store, keys)
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
        # The leaf is the range [index, index + 1): read with the path, in one query (one
        # round trip on a server store).
        leaf, *hashes = self._range_hashes([(index, index + 1),
                                            *merkle.inclusion_ranges(index, n)])
        return InclusionProof(index, n, leaf, tuple(hashes), root)

    def consistency_proof(self, size1: int, size2: int | None = None) -> ConsistencyProof:
        """Proof that the tree of `size2` (default: latest) extends the tree of `size1`."""
        n2, root2 = self._size_and_root(size2)
        if not 0 <= size1 <= n2:
            raise ValueError(f"size1 {size1} must be between 0 and {n2}")
        ranges = merkle.consistency_ranges(size1, n2)
        if size1 in (0, n2):  # the old root is known without a read
            root1 = merkle.SHA256.empty_root() if size1 == 0 else root2
            hashes = self._range_hashes(ranges)
        else:  # the old root and the proof in one read (one round trip on a server store)
            root1, *hashes = self._range_hashes([(0, size1), *ranges])
        return ConsistencyProof(size1, n2, tuple(hashes), root1, root2)

    # -- verification ------------------------------------------------------------------

    def verify(
        self,
        progress: ProgressFn | None = None,
        decode_entries: bool = True,
        *,
        verifier: Verifier | None = None,
    ) -> VerifyReport:
        """`ledger_audit.verify_ledger(self, ...)`, kept here so callers need not know
        where the audit lives: the audit trusts nothing this class stores."""
        return verify_ledger(self, verifier=verifier, progress=progress,
                             decode_entries=decode_entries)

    # -- checkpoints ---------------------------------------------------------------------

    def checkpoint(self, size: int | None = None) -> Checkpoint:
        """The unsigned C2SP checkpoint of the tree at `size` (default: latest)."""
        n, root = self._size_and_root(size)
        return Checkpoint(self.origin, n, root)

    def sign_checkpoint(self, signer: Signer, size: int | None = None,
                        pq_signer: Signer | None = None) -> str:
        """Sign the tree of `size` entries (default: the latest head) as a C2SP checkpoint,
        store the note, and return it.

        The key's name must be the log's origin, as C2SP verifiers expect; so must that of
        `pq_signer`, an ML-DSA-44 key adding a second signature after the Ed25519 one.
        """
        self._check_signer(signer, pq_signer)
        cp = self.checkpoint(size)
        self._require_head(cp.size)
        note = sign_checkpoint(cp, signer, pq_signer)
        self.store.add_checkpoint(cp.size, note)
        return note

    def _check_signer(self, signer: Signer, pq_signer: Signer | None = None) -> None:
        """C2SP verifiers look a checkpoint's signature up by the log's origin; tlog-tiles
        wants the first one Ed25519, and the second one is there to be post-quantum."""
        if signer.name != self.origin:
            raise ValueError(
                f"signer name {signer.name!r} is not the ledger origin {self.origin!r}: "
                f"make the key with `flchain keygen {self.origin}`"
            )
        if signer.SIG_TYPE != ED25519:
            raise ValueError(f"signer: the log's first checkpoint signature must be Ed25519 "
                             f"(tlog-tiles), got {signer.ALGORITHM}: pass it as pq_signer")
        if pq_signer is not None:
            self.check_pq_signer(pq_signer)

    def check_pq_signer(self, pq_signer: Signer) -> None:
        """A second checkpoint signature is ML-DSA-44 (its reason to exist) and, like the
        first, named after the origin."""
        if pq_signer.ALGORITHM != "ML-DSA-44" or pq_signer.name != self.origin:
            raise ValueError(
                f"pq_signer: want an ML-DSA-44 key named {self.origin!r}, got "
                f"{pq_signer.ALGORITHM} {pq_signer.name!r}: make it with `flchain keygen "
                f"{self.origin} --alg ml-dsa-44`"
            )

    def _require_head(self, size: int) -> None:
        """A checkpoint signs a batch's tree head, never a size between two batches: so a
        deleted tree head shows as a checkpoint without its head (see ledger_audit)."""
        if size and size not in {h.size for h in self.store.heads()}:
            raise ValueError(f"tree size {size} is not the size after a batch: sign the "
                             "tree head of a batch (`Ledger.heads()`)")

    def add_checkpoint_note(self, note: str, verifier: Verifier) -> Checkpoint:
        """Store a note (e.g. cosigned by witnesses) after checking it against this log."""
        cp, _ = open_checkpoint(note, verifier, origin=self.origin)
        if cp.size > self.size or self.root_at(cp.size) != cp.root_hash:
            raise ValueError(f"checkpoint at size {cp.size} does not match this ledger's tree")
        self._require_head(cp.size)
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

    @property
    def pinned_verifier(self) -> Verifier | None:
        """The log's verifier key pinned in the file at creation, if any.

        Worth nothing against whoever can write the file (they rewrite the pin with the
        history); it saves an honest auditor from looking the key up, and a pin held by
        another party (`--key-verifier`, a client's configuration) is the one that counts.
        """
        text = self.store.meta(PINNED_VERIFIER_META)
        if text is None:
            return None
        try:
            return Verifier.parse(text)
        except NoteError as e:
            raise StoreError(f"the pinned verifier key does not parse: {e}; "
                             "run `flchain verify --key-verifier VKEY`") from e

    def pin_verifier(self, verifier: Verifier) -> None:
        """Pin the log's checkpoint key in the file (once: a different key is refused)."""
        if verifier.name != self.origin:
            raise ValueError(f"verifier key is named {verifier.name!r}, not the ledger origin "
                             f"{self.origin!r}")
        self.store.set_meta(PINNED_VERIFIER_META, verifier.vkey, replace=False)
        pinned = self.store.meta(PINNED_VERIFIER_META)
        if pinned != verifier.vkey:
            raise ValueError(f"the ledger already pins another verifier key: {pinned}")

    def info(self) -> dict[str, Any]:
        head = self.head()
        return {
            "origin": self.origin,
            "size": head.size,
            "root": format_digest(head.root),
            "timestamp": head.timestamp,
        }

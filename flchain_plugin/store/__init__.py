"""The storage interface the ledger is written against.

A store persists entry bytes with their leaf hashes, the hash of every completed perfect
subtree above the leaves (keyed by `node_key`; level-0 keys address leaf hashes), one
tree head per batch, signed checkpoints and a little metadata. It knows nothing of
Merkle trees: the ledger computes, the store keeps. SQLite is the embedded
default; PostgreSQL implements the same protocol for shared deployments.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

NODE_LEVEL_SHIFT = 40
"""Node key = level << 40 | index: one integer key per node, 2^40 leaves at most."""


def node_key(level: int, index: int) -> int:
    return (level << NODE_LEVEL_SHIFT) | index


def ref_key(digest: bytes) -> int:
    """The digest index keys on a digest's first 8 bytes: a quarter of the index size and
    twice the append rate of whole digests. Readers filter rare prefix collisions."""
    return int.from_bytes(digest[:8], "big", signed=True)


KEY_COLUMNS = {"entries": "idx", "nodes": "id", "heads": "size", "checkpoints": "id"}
"""Each table's integer key, for `first_key_outside`."""


def key_gaps(allowed: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The int64 key ranges [first, end) outside every `allowed` range, in order: where a
    store's `first_key_outside` looks, one indexed query per gap (the last gap's end is
    past every int64 key)."""
    gaps, lo = [], -(2**63)
    for a, b in sorted(allowed):
        if a > lo:
            gaps.append((lo, a))
        lo = max(lo, b)
    gaps.append((lo, 2**63))
    return gaps


@dataclass(frozen=True)
class HeadRow:
    """A stored tree head: the tree after one batch."""

    size: int
    root: bytes
    timestamp: float


@dataclass(frozen=True)
class EntryRow:
    """A stored entry: canonical bytes and the leaf hash stored beside them."""

    index: int
    type: str
    data: bytes
    leaf: bytes


class StoreError(RuntimeError):
    """The store cannot be opened or read; the message says what to do."""


class Writer(Protocol):
    """A write transaction holding the store's single-writer lock."""

    def head(self) -> HeadRow | None: ...

    def entry_count(self) -> int: ...

    def nodes(self, keys: Sequence[int]) -> dict[int, bytes]: ...

    def put(
        self,
        entries: Sequence[tuple[int, str, bytes, bytes]],
        refs: Sequence[tuple[bytes, int]],
        nodes: Sequence[tuple[int, bytes]],
        head: HeadRow,
        checkpoint: str | None = None,
    ) -> None:
        """Store entries (index, type, leaf hash, bytes), digest refs, nodes above level 0,
        the new tree head and, if given, the signed checkpoint of that head, all in this
        transaction (one durable commit for a batch and its signature)."""
        ...


class Store(Protocol):
    """Persistence for a ledger; every method is safe to call from several processes."""

    def writer(self) -> AbstractContextManager[Writer]:
        """Begin the one write transaction; commit on normal exit, roll back on error."""
        ...

    def head(self) -> HeadRow | None: ...

    def heads(self) -> Iterator[HeadRow]: ...

    def entry(self, index: int) -> EntryRow | None: ...

    def entries(
        self, start: int, end: int, type: str | None = None, reverse: bool = False
    ) -> Iterator[EntryRow]: ...

    def entry_count(self) -> int:
        """Stored entry rows; equals the latest tree size in an undamaged store."""
        ...

    def ref_rows(self) -> Iterator[tuple[int, int]]:
        """Every (ref_key, entry index) row of the digest index, in no particular order."""
        ...

    def find(self, digest: bytes) -> list[int]:
        """Indices of entries indexed under `digest`; may include rare false positives."""
        ...

    def nodes(self, keys: Sequence[int]) -> dict[int, bytes]:
        """Stored hashes by `node_key`; level 0 returns leaf hashes."""
        ...

    def level(self, level: int, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """(index, hash) of stored nodes at one level, in index order."""
        ...

    def first_key_outside(self, table: str, allowed: Sequence[tuple[int, int]]) -> int | None:
        """The smallest key of `table` ("entries", "nodes", "heads" or "checkpoints") that
        lies in none of the `allowed` [first, end) ranges, or None. The audit's question
        "is every stored row part of the tree?" in O(log n) per gap between the ranges."""
        ...

    def meta(self, key: str) -> str | None: ...

    def meta_items(self) -> list[tuple[str, str]]:
        """Every (key, value) of the metadata, by key: what a copy of the ledger carries."""
        ...

    def set_meta(self, key: str, value: str, *, replace: bool = True) -> None:
        """Store `key`; with replace=False an existing value is kept (first writer wins)."""
        ...

    def add_checkpoint(self, size: int, note: str) -> None: ...

    def checkpoints(self, last: int | None = None) -> list[tuple[int, str]]:
        """(size, note) of stored signed checkpoints, oldest first: all, or the `last`."""
        ...

    def checkpoint_sizes(self, last: int) -> list[int]:
        """The `last` distinct tree sizes most recently signed, oldest first."""
        ...

    def close(self) -> None: ...

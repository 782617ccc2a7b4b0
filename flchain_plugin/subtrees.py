"""Which subtree hashes a ledger stores, and how any perfect subtree hash is read from them.

The shape of the stored tree is one rule shared by the writer (`Ledger.append` stores
exactly these nodes), the readers (proofs) and the audit (`verify_ledger` refuses any
node row outside this shape): level 0 is the leaf hash beside each entry, levels 1 to
MIN_NODE_LEVEL - 1 are never stored, and every completed perfect subtree from
MIN_NODE_LEVEL up has one row keyed by `node_key(level, index)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from . import merkle
from .store import NODE_LEVEL_SHIFT, node_key

MIN_NODE_LEVEL = 4
"""Subtrees below this level (up to 8 leaves) are not stored but recomputed from the leaf
hashes beside the entries when a proof or an append needs them: a node row per 16 entries
instead of one per entry, for at most 15 extra leaf reads per proof."""

_INDEX_MASK = (1 << NODE_LEVEL_SHIFT) - 1


class NodeReader(Protocol):
    def nodes(self, keys: Sequence[int]) -> dict[int, bytes]: ...


def subtree_hashes(reader: NodeReader, keys: Sequence[int]) -> dict[int, bytes]:
    """Perfect subtree hashes by node key: leaves and stored levels are read, the levels in
    between recomputed from the leaf hashes they cover. Missing keys are left out."""
    low = [k for k in keys if 0 < k >> NODE_LEVEL_SHIFT < MIN_NODE_LEVEL]
    if not low:
        return reader.nodes(keys)
    spans = {
        k: range((k & _INDEX_MASK) << (k >> NODE_LEVEL_SHIFT),
                 ((k & _INDEX_MASK) + 1) << (k >> NODE_LEVEL_SHIFT))
        for k in low
    }
    want = [k for k in keys if not 0 < k >> NODE_LEVEL_SHIFT < MIN_NODE_LEVEL]
    want += [node_key(0, i) for span in spans.values() for i in span]
    got = reader.nodes(want)
    for k, span in spans.items():
        leaves = [got.get(node_key(0, i)) for i in span]
        if all(leaf is not None for leaf in leaves):
            got[k] = merkle.root(leaves)  # type: ignore[arg-type]
    return got


def stored_node_ranges(size: int) -> list[tuple[int, int]]:
    """The node keys a tree of `size` leaves stores, as [first, end) key ranges, one per
    level from MIN_NODE_LEVEL to the top: any other node row is not part of this tree."""
    out = []
    level = MIN_NODE_LEVEL
    while size >> level:
        out.append((node_key(level, 0), node_key(level, size >> level)))
        level += 1
    return out

"""RFC 9162 Merkle trees: hashing, proofs and their verification.

Pure functions over hashes. Proof *generation* is expressed as ranges of leaves whose
tree hashes a proof needs (`inclusion_ranges`, `consistency_ranges`) and as the perfect
subtrees that make up a range (`perfect_subtrees`), so a store can fetch exactly the
O(log n) stored nodes a proof needs and fold them with `fold_range`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_SIZE = 32


class ProofError(ValueError):
    """A proof does not verify; the message names the failing check."""


@dataclass(frozen=True)
class Hasher:
    """RFC 9162 §2.1.1 hashing with leaf/node domain separation."""

    name: str = "sha256"

    def __post_init__(self) -> None:
        # hashlib.sha256 itself: hashlib.new(name) costs a third more per node hash.
        new = getattr(hashlib, self.name, None) or functools.partial(hashlib.new, self.name)
        object.__setattr__(self, "_new", new)

    def leaf(self, data: bytes | memoryview) -> bytes:
        h = self._new(LEAF_PREFIX)  # type: ignore[attr-defined]
        h.update(data)
        return h.digest()  # type: ignore[no-any-return]

    def node(self, left: bytes, right: bytes) -> bytes:
        return self._new(NODE_PREFIX + left + right).digest()  # type: ignore[attr-defined,no-any-return]

    def empty_root(self) -> bytes:
        return self._new().digest()  # type: ignore[attr-defined,no-any-return]


SHA256 = Hasher()


def leaf_hash(data: bytes | memoryview) -> bytes:
    """SHA-256(0x00 || data)."""
    return SHA256.leaf(data)


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return SHA256.node(left, right)


def _split(n: int) -> int:
    """Largest power of two strictly less than n. Requires n >= 2."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes], hasher: Hasher = SHA256) -> bytes:
    """The tree hash MTH over already hashed leaves.

    Pairs level by level and carries an odd last node up unchanged, which yields the same
    tree as RFC 9162's recursive split at the largest power of two below n.
    """
    if not leaf_hashes:
        return hasher.empty_root()
    level = list(leaf_hashes)
    node = hasher.node
    while len(level) > 1:
        nxt = [node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def perfect_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """Decompose leaves [start, end) into maximal aligned perfect subtrees, left to right.

    Each subtree is (level, index): it covers leaves [index << level, (index + 1) << level).
    Requires 0 <= start <= end and that [start, end) is a subtree range of some RFC 9162
    tree whose leaves end at `end` (true for every range a proof asks for).
    """
    out: list[tuple[int, int]] = []
    while start < end:
        # Largest aligned power of two starting at `start` that fits in the range.
        level = (start & -start).bit_length() - 1 if start else 63
        while (1 << level) > end - start:
            level -= 1
        out.append((level, start >> level))
        start += 1 << level
    return out


def fold_range(hashes: Sequence[bytes], hasher: Hasher = SHA256) -> bytes:
    """Combine the hashes of `perfect_subtrees(start, end)` into MTH(D[start:end]).

    Requires the subtrees to shrink left to right, which holds for ranges ending at a tree
    edge: the RFC 9162 split puts the largest perfect tree on the left.
    """
    if not hashes:
        raise ValueError("empty range has no subtree hash")
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = hasher.node(h, acc)
    return acc


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose tree hashes form the RFC 9162 §2.1.3.1 inclusion proof, in order.

    Requires 0 <= index < size.
    """
    if not 0 <= index < size:
        raise ValueError(f"index {index} out of range for tree size {size}")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo = lo + k
    ranges.reverse()
    return ranges


def consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Leaf ranges whose tree hashes form the RFC 9162 §2.1.4.1 consistency proof, in order.

    Requires 0 <= size1 <= size2. Empty when size1 is 0 or equals size2.
    """
    if not 0 <= size1 <= size2:
        raise ValueError(f"bad consistency sizes {size1} -> {size2}")
    if size1 == 0 or size1 == size2:
        return []
    out: list[tuple[int, int]] = []
    # SUBPROOF(m, D[lo:hi], b), unrolled; ranges are collected top-down and reversed.
    m, lo, hi, complete = size1, 0, size2, True
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                out.append((lo, hi))
            break
        k = _split(n)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    out.reverse()
    return out


def _range_hash(leaf_hashes: Sequence[bytes], start: int, end: int, hasher: Hasher) -> bytes:
    return root(leaf_hashes[start:end], hasher)


def inclusion_proof(
    leaf_hashes: Sequence[bytes], index: int, hasher: Hasher = SHA256
) -> list[bytes]:
    """In-memory inclusion proof. Requires 0 <= index < len(leaf_hashes)."""
    return [
        _range_hash(leaf_hashes, a, b, hasher) for a, b in inclusion_ranges(index, len(leaf_hashes))
    ]


def consistency_proof(
    leaf_hashes: Sequence[bytes], size1: int, hasher: Hasher = SHA256
) -> list[bytes]:
    """In-memory consistency proof from size1 to len(leaf_hashes)."""
    return [
        _range_hash(leaf_hashes, a, b, hasher)
        for a, b in consistency_ranges(size1, len(leaf_hashes))
    ]


def _check_hash(name: str, value: bytes, hasher: Hasher) -> None:
    want = hashlib.new(hasher.name).digest_size
    if len(value) != want:
        raise ProofError(f"{name} has {len(value)} bytes, want {want}")


def root_from_inclusion_proof(
    index: int,
    size: int,
    leaf: bytes,
    proof: Sequence[bytes],
    hasher: Hasher = SHA256,
) -> bytes:
    """The root that `proof` implies for `leaf` at `index` (RFC 9162 §2.1.3.2).

    Requires 0 <= index < size.
    """
    if index < 0 or index >= size:
        raise ProofError(f"index {index} is beyond size {size}")
    _check_hash("leaf hash", leaf, hasher)
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    if len(proof) != inner + border:
        raise ProofError(f"wrong proof size {len(proof)}, want {inner + border}")
    acc = leaf
    for i, h in enumerate(proof):
        _check_hash(f"proof[{i}]", h, hasher)
        if i < inner and not (index >> i) & 1:
            acc = hasher.node(acc, h)
        else:
            acc = hasher.node(h, acc)
    return acc


def verify_inclusion(
    index: int,
    size: int,
    leaf: bytes,
    proof: Sequence[bytes],
    root_hash: bytes,
    hasher: Hasher = SHA256,
) -> None:
    """Raise ProofError unless `proof` shows `leaf` at `index` in the tree `root_hash`."""
    _check_hash("root", root_hash, hasher)
    got = root_from_inclusion_proof(index, size, leaf, proof, hasher)
    if got != root_hash:
        raise ProofError(f"calculated root {got.hex()}, want {root_hash.hex()}")


def verify_consistency(
    size1: int,
    size2: int,
    proof: Sequence[bytes],
    root1: bytes,
    root2: bytes,
    hasher: Hasher = SHA256,
) -> None:
    """Raise ProofError unless `proof` shows tree (size2, root2) extends (size1, root1).

    Requires 0 <= size1 <= size2 (RFC 9162 §2.1.4.2).
    """
    if _trivial_consistency(size1, size2, proof, root1, root2, hasher):
        return
    h1, h2 = _consistency_roots(size1, size2, proof, root1, hasher)
    if h1 != root1:
        raise ProofError(f"calculated root1 {h1.hex()}, want {root1.hex()}")
    if h2 != root2:
        raise ProofError(f"calculated root2 {h2.hex()}, want {root2.hex()}")


def _trivial_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes, hasher: Hasher
) -> bool:
    """Check the arguments; True when they settle the proof without hashing (equal sizes, or
    an empty first tree), which then must be empty. ProofError otherwise."""
    if size1 < 0:
        raise ProofError(f"size1 ({size1}) < 0")
    if size2 < size1:
        raise ProofError(f"size2 ({size2}) < size1 ({size1})")
    _check_hash("root1", root1, hasher)
    _check_hash("root2", root2, hasher)
    if size1 == 0 and root1 != hasher.empty_root():
        raise ProofError(f"root1 {root1.hex()} is not the empty tree root for size1 0")
    if size1 == size2 or size1 == 0:
        if proof:
            raise ProofError(f"wrong proof size {len(proof)}, want 0")
        if size1 == size2 and root1 != root2:
            raise ProofError(f"roots differ for equal sizes: {root1.hex()} != {root2.hex()}")
        return True
    if not proof:
        raise ProofError("empty consistency proof for non-trivial sizes")
    for i, h in enumerate(proof):
        _check_hash(f"proof[{i}]", h, hasher)
    return False


def _consistency_roots(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, hasher: Hasher
) -> tuple[bytes, bytes]:
    """The two roots `proof` rebuilds (RFC 9162 §2.1.4.2) for 0 < size1 < size2: the inner
    part of the path is shared below the split, the border part climbs both trees."""
    inner = ((size1 - 1) ^ (size2 - 1)).bit_length()
    shift = (size1 & -size1).bit_length() - 1  # trailing zeros of size1
    inner -= shift
    # If size1 is a power of two covering a complete left subtree, the seed is root1.
    if size1 == 1 << shift:
        seed, start = root1, 0
    else:
        seed, start = proof[0], 1
    mask = (size1 - 1) >> shift
    border = bin((size1 - 1) >> (shift + inner)).count("1") if inner >= 0 else 0
    want = start + inner + border
    if len(proof) != want:
        raise ProofError(f"wrong proof size {len(proof)}, want {want}")
    rest = proof[start:]
    h1 = h2 = seed
    for i in range(inner):
        p = rest[i]
        if (mask >> i) & 1:
            h1 = hasher.node(p, h1)
            h2 = hasher.node(p, h2)
        else:
            h2 = hasher.node(h2, p)
    for p in rest[inner:]:
        h1 = hasher.node(p, h1)
        h2 = hasher.node(p, h2)
    return h1, h2


class Frontier:
    """The right edge of a growing tree: one perfect subtree hash per set bit of its size.

    Appending leaves yields every perfect subtree completed on the way, as
    (level, index, hash), so a store can persist all nodes proofs will need.
    """

    __slots__ = ("_hasher", "hashes", "size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = (), hasher: Hasher = SHA256):
        self.size = size
        self.hashes = list(hashes)  # left to right, largest subtree first
        self._hasher = hasher
        if len(self.hashes) != bin(size).count("1"):
            raise ValueError(
                f"frontier of size {size} needs {bin(size).count('1')} hashes, "
                f"got {len(self.hashes)}"
            )

    @staticmethod
    def nodes_for(size: int) -> list[tuple[int, int]]:
        """(level, index) of the frontier subtrees of a tree of `size` leaves."""
        return perfect_subtrees(0, size)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return the completed nodes, leaf (level 0) first."""
        return [(0, self.size, leaf), *self.extend([leaf])]

    def extend(self, leaves: Sequence[bytes]) -> list[tuple[int, int, bytes]]:
        """Add leaf hashes; return the completed nodes above the leaves (level >= 1)."""
        out: list[tuple[int, int, bytes]] = []
        hashes = self.hashes
        node = self._hasher.node
        i = self.size
        for acc in leaves:
            level = 0
            while (i >> level) & 1:
                acc = node(hashes.pop(), acc)
                level += 1
                out.append((level, i >> level, acc))
            hashes.append(acc)
            i += 1
        self.size = i
        return out

    def root(self) -> bytes:
        if not self.hashes:
            return self._hasher.empty_root()
        return fold_range(self.hashes, self._hasher)

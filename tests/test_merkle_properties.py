"""Property tests for flchain_plugin.merkle (RFC 9162 Merkle trees).

Two tree models serve as references:

* dense trees over up to MAX_DENSE distinct leaves, where proofs come from merkle's own
  generators (inclusion_proof / consistency_proof);
* `SparseTree`: trees of any size up to 2**64 - 1 whose leaves all equal one background
  hash except a few marked ones. Its `hash(a, b)` is RFC 9162 §2.1.1's recursive MTH
  definition, memoised for unmarked ranges, so it is also an independent reference for
  merkle.root's level-by-level pairing.

Also checks that pymerkle 7 (whose defaults are RFC 9162 hashing) computes the same roots.
"""

from __future__ import annotations

import bisect
import functools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flchain_plugin.merkle import (
    SHA256,
    Frontier,
    ProofError,
    consistency_proof,
    consistency_ranges,
    fold_range,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    perfect_subtrees,
    root,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

MAX_DENSE = 300
LEAVES = [leaf_hash(b"leaf-%d" % i) for i in range(2 * MAX_DENSE + 2)]
EMPTY = SHA256.empty_root()
BACKGROUND = leaf_hash(b"background")
MAX_SIZE = (1 << 64) - 1

SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def flip(h: bytes, bit: int) -> bytes:
    """`h` with bit `bit` (mod its length in bits) inverted."""
    bit %= 8 * len(h)
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


@functools.cache
def dense_hash(a: int, b: int) -> bytes:
    return root(LEAVES[a:b])


@functools.cache
def _uniform(n: int) -> bytes:
    """MTH of n background leaves (n >= 1), by the recursive definition."""
    if n == 1:
        return BACKGROUND
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(_uniform(k), _uniform(n - k))


class SparseTree:
    """Leaves D[i] = marks.get(i, BACKGROUND) for i in [0, size)."""

    def __init__(self, size: int, marks: dict[int, bytes]):
        self.size = size
        self.marks = marks
        self.keys = sorted(marks)

    def leaf(self, i: int) -> bytes:
        return self.marks.get(i, BACKGROUND)

    def hash(self, a: int, b: int) -> bytes:
        """MTH(D[a:b]) exactly as RFC 9162 §2.1.1 defines it (split at largest 2^k < n)."""
        n = b - a
        if n == 0:
            return EMPTY
        if n == 1:
            return self.leaf(a)
        j = bisect.bisect_left(self.keys, a)
        if j == len(self.keys) or self.keys[j] >= b:
            return _uniform(n)
        k = 1 << ((n - 1).bit_length() - 1)
        return node_hash(self.hash(a, a + k), self.hash(a + k, b))

    def node(self, level: int, index: int) -> bytes:
        return self.hash(index << level, (index + 1) << level)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return [self.hash(a, b) for a, b in inclusion_ranges(index, size)]

    def consistency(self, size1: int, size2: int) -> list[bytes]:
        return [self.hash(a, b) for a, b in consistency_ranges(size1, size2)]


DENSE = SparseTree(len(LEAVES), dict(enumerate(LEAVES)))


def dense_node(level: int, index: int) -> bytes:
    return dense_hash(index << level, (index + 1) << level)


def raises(pattern: str):
    return pytest.raises(ProofError, match=pattern)


def check_ranges_fold(ranges, node, range_hash):
    """perfect_subtrees + fold_range of every range reproduce the range's tree hash."""
    for a, b in ranges:
        assert 0 <= a < b
        subs = perfect_subtrees(a, b)
        pos = a
        sizes = []
        for level, index in subs:
            assert index << level == pos  # contiguous and aligned
            pos += 1 << level
            sizes.append(1 << level)
        assert pos == b
        assert sizes == sorted(set(sizes), reverse=True)  # strictly shrinking
        assert fold_range([node(lv, i) for lv, i in subs]) == range_hash(a, b)


# --- reference and structure -------------------------------------------------------------


def test_root_matches_recursive_definition():
    for n in range(MAX_DENSE + 1):
        assert root(LEAVES[:n]) == DENSE.hash(0, n)


def test_empty_tree():
    assert root([]) == EMPTY == Frontier().root()
    with pytest.raises(ValueError):
        fold_range([])
    assert perfect_subtrees(0, 0) == [] and perfect_subtrees(5, 5) == []


def test_frontier_every_prefix_and_every_emitted_node():
    fr = Frontier()
    emitted: dict[tuple[int, int], bytes] = {}
    for n in range(1, MAX_DENSE + 1):
        out = fr.append(LEAVES[n - 1])
        assert out[0] == (0, n - 1, LEAVES[n - 1])
        assert [lv for lv, _, _ in out] == list(range(len(out)))  # leaf first, then up
        for level, index, h in out:
            assert (level, index) not in emitted
            assert h == dense_node(level, index)
            emitted[level, index] = h
        assert fr.size == n and fr.root() == root(LEAVES[:n])
        assert fr.hashes == [dense_node(lv, i) for lv, i in Frontier.nodes_for(n)]
        # Exactly the complete perfect subtrees of the first n leaves have been emitted.
        assert len(emitted) == sum(n >> lv for lv in range(n.bit_length()))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.binary(max_size=8), min_size=1, max_size=80),
    st.integers(min_value=0, max_value=80),
)
def test_frontier_restored_mid_way(data, cut):
    cut = min(cut, len(data))
    hashes = [leaf_hash(d) for d in data]
    fr = Frontier()
    for h in hashes[:cut]:
        fr.append(h)
    restored = Frontier(cut, list(fr.hashes))
    for i, h in enumerate(hashes[cut:], start=cut):
        assert restored.append(h) == fr.append(h)
        assert restored.root() == fr.root() == root(hashes[: i + 1])
    assert restored.root() == root(hashes)


def test_frontier_rejects_wrong_hash_count():
    with pytest.raises(ValueError, match="needs 2 hashes"):
        Frontier(3, [EMPTY])


def test_ranges_fold_dense_exhaustive():
    for n in range(1, 97):
        for i in range(n):
            check_ranges_fold(inclusion_ranges(i, n), dense_node, dense_hash)
        for m in range(n + 1):
            check_ranges_fold(consistency_ranges(m, n), dense_node, dense_hash)


# --- every proof verifies ---------------------------------------------------------------


def test_every_inclusion_proof_verifies_small():
    for n in range(1, 65):
        leaves = LEAVES[:n]
        r = root(leaves)
        for i in range(n):
            proof = inclusion_proof(leaves, i)
            assert proof == DENSE.inclusion(i, n)
            verify_inclusion(i, n, leaves[i], proof, r)


def test_every_consistency_proof_verifies_small():
    for n in range(0, 49):
        leaves = LEAVES[:n]
        r2 = root(leaves)
        for m in range(n + 1):
            proof = consistency_proof(leaves, m)
            assert proof == DENSE.consistency(m, n)
            verify_consistency(m, n, proof, root(LEAVES[:m]), r2)


# --- mutations -------------------------------------------------------------------------


def decomposition(index: int, size: int) -> tuple[int, int]:
    """(inner, border) of RFC 9162 §2.1.3.2: all the verifier reads from `size`."""
    inner = (index ^ (size - 1)).bit_length()
    return inner, bin(index >> inner).count("1")


def check_inclusion_mutations(data, tree: SparseTree, i: int, n: int) -> None:
    leaf, proof, r = tree.leaf(i), tree.inclusion(i, n), tree.hash(0, n)
    verify_inclusion(i, n, leaf, proof, r)
    assert root_from_inclusion_proof(i, n, leaf, proof) == r
    draw = data.draw
    bit = draw(st.integers(0, 255), label="bit")

    for k in range(len(proof)):
        bad = [*proof[:k], flip(proof[k], bit), *proof[k + 1:]]
        with raises("calculated root"):
            verify_inclusion(i, n, leaf, bad, r)
        with raises("wrong proof size"):
            verify_inclusion(i, n, leaf, proof[:k] + proof[k + 1 :], r)
        with raises(rf"proof\[{k}\] has 31 bytes, want 32"):
            verify_inclusion(i, n, leaf, [*proof[:k], proof[k][:31], *proof[k + 1:]], r)
    extra = draw(st.sampled_from([*proof, leaf, r, EMPTY, flip(r, bit)]), label="extra")
    at = draw(st.integers(0, len(proof)), label="at")
    with raises("wrong proof size"):
        verify_inclusion(i, n, leaf, [*proof[:at], extra, *proof[at:]], r)
    if len(proof) >= 2:
        j, k = sorted(draw(st.lists(st.integers(0, len(proof) - 1), min_size=2, max_size=2,
                                    unique=True), label="swap"))
        bad = list(proof)
        bad[j], bad[k] = bad[k], bad[j]
        if bad != proof:
            with raises("calculated root"):
                verify_inclusion(i, n, leaf, bad, r)

    # Wrong index: another leaf position, or one outside the tree.
    if n > 1:
        j = draw(st.integers(0, n - 1).filter(lambda j: j != i), label="index")
        with raises("calculated root|wrong proof size"):
            verify_inclusion(j, n, leaf, proof, r)
    for j in (n, n + 1, -1):
        with raises("beyond size"):
            verify_inclusion(j, n, leaf, proof, r)

    # Wrong size, checked against that size's true root. It can only pass if the proof
    # were also that size's proof, which distinct RFC 9162 proofs never are.
    s = draw(st.sampled_from([i + 1, n - 1, n + 1, 2 * n, n // 2 + 1, MAX_SIZE]), label="size")
    s = min(max(s, i + 1), MAX_SIZE)
    if s != n:
        assert tree.inclusion(i, s) != proof or tree.hash(0, s) == r
        with raises("calculated root|wrong proof size"):
            verify_inclusion(i, s, leaf, proof, tree.hash(0, s))
        # Against the *claimed* root the verifier reads `size` only through the proof
        # shape (as RFC 9162 §2.1.3.2 and the Go verifier do): it passes iff the shape
        # is the same. Signed tree heads bind size and root together.
        same_shape = decomposition(i, s) == decomposition(i, n)
        try:
            verify_inclusion(i, s, leaf, proof, r)
            assert same_shape
        except ProofError:
            assert not same_shape
    with raises("beyond size"):
        verify_inclusion(i, i, leaf, proof, r)

    # Wrong root, wrong leaf.
    with raises("calculated root"):
        verify_inclusion(i, n, leaf, proof, flip(r, bit))
    with raises("calculated root"):
        verify_inclusion(i, n, flip(leaf, bit), proof, r)
    with raises("calculated root"):
        verify_inclusion(i, n, leaf_hash(b"not a leaf"), proof, r)
    with raises("leaf hash has 33 bytes, want 32"):
        verify_inclusion(i, n, leaf + b"\0", proof, r)
    with raises("root has 31 bytes, want 32"):
        verify_inclusion(i, n, leaf, proof, r[:31])


def check_consistency_mutations(data, tree: SparseTree, m: int, n: int) -> None:
    proof, r1, r2 = tree.consistency(m, n), tree.hash(0, m), tree.hash(0, n)
    verify_consistency(m, n, proof, r1, r2)
    draw = data.draw
    bit = draw(st.integers(0, 255), label="bit")

    for k in range(len(proof)):
        bad = [*proof[:k], flip(proof[k], bit), *proof[k + 1:]]
        with raises("calculated root[12]"):
            verify_consistency(m, n, bad, r1, r2)
        with raises("wrong proof size|empty consistency proof"):
            verify_consistency(m, n, proof[:k] + proof[k + 1 :], r1, r2)
        with raises(rf"proof\[{k}\] has 31 bytes, want 32"):
            verify_consistency(m, n, [*proof[:k], proof[k][:31], *proof[k + 1:]], r1, r2)
    extra = draw(st.sampled_from([*proof, r1, r2, EMPTY, flip(r2, bit)]), label="extra")
    at = draw(st.integers(0, len(proof)), label="at")
    with raises("wrong proof size"):
        verify_consistency(m, n, [*proof[:at], extra, *proof[at:]], r1, r2)
    if len(proof) >= 2:
        j, k = sorted(draw(st.lists(st.integers(0, len(proof) - 1), min_size=2, max_size=2,
                                    unique=True), label="swap"))
        bad = list(proof)
        bad[j], bad[k] = bad[k], bad[j]
        if bad != proof:
            with raises("calculated root[12]"):
                verify_consistency(m, n, bad, r1, r2)

    # Wrong sizes, checked against the true roots of those sizes.
    m2 = draw(st.sampled_from([m - 1, m + 1, m // 2, 2 * m, 0, n]), label="size1")
    n2 = draw(st.sampled_from([n, n - 1, n + 1, 2 * n, m2, MAX_SIZE]), label="size2")
    m2, n2 = max(m2, 0), min(max(n2, 0), MAX_SIZE)
    if m2 <= n2 and (m2, n2) != (m, n) and tree.consistency(m2, n2) != proof:
        with raises("calculated root[12]|wrong proof size|empty consistency|roots differ"):
            verify_consistency(m2, n2, proof, tree.hash(0, m2), tree.hash(0, n2))
    if m > 0:
        with raises(r"size2 \(\d+\) < size1"):
            verify_consistency(m, m - 1, proof, r1, r2)
    with raises(r"size1 \(-\d+\) < 0"):
        verify_consistency(-draw(st.integers(1, 1 << 70), label="neg"), n, proof, r1, r2)

    # Wrong roots.
    with raises("calculated root[12]|roots differ|not the empty tree root"):
        verify_consistency(m, n, proof, flip(r1, bit), r2)
    if m > 0 or n == 0:
        with raises("calculated root[12]|roots differ"):
            verify_consistency(m, n, proof, r1, flip(r2, bit))
    else:
        # Every tree extends the empty tree: there is nothing to check about root2.
        verify_consistency(0, n, proof, r1, flip(r2, bit))
    if r1 != r2:
        with raises("calculated root[12]|roots differ|not the empty tree root"):
            verify_consistency(m, n, proof, r2, r1)
    with raises("root1 has 33 bytes, want 32"):
        verify_consistency(m, n, proof, r1 + b"\0", r2)
    with raises("root2 has 0 bytes, want 32"):
        verify_consistency(m, n, proof, r1, b"")


dense_size = st.integers(min_value=1, max_value=MAX_DENSE)


@SETTINGS
@given(dense_size, st.data())
def test_inclusion_dense(n, data):
    i = data.draw(st.integers(0, n - 1), label="index")
    leaves = LEAVES[:n]
    proof = inclusion_proof(leaves, i)
    assert proof == DENSE.inclusion(i, n)
    verify_inclusion(i, n, leaves[i], proof, root(leaves))
    check_ranges_fold(inclusion_ranges(i, n), dense_node, dense_hash)
    check_inclusion_mutations(data, DENSE, i, n)


@SETTINGS
@given(st.integers(min_value=0, max_value=MAX_DENSE), st.data())
def test_consistency_dense(n, data):
    m = data.draw(st.integers(0, n), label="size1")
    proof = consistency_proof(LEAVES[:n], m)
    assert proof == DENSE.consistency(m, n)
    verify_consistency(m, n, proof, root(LEAVES[:m]), root(LEAVES[:n]))
    check_ranges_fold(consistency_ranges(m, n), dense_node, dense_hash)
    check_consistency_mutations(data, DENSE, m, n)


def _near_powers_of_two():
    return st.integers(1, 64).flatmap(
        lambda k: st.integers(-3, 3).map(lambda d: min(max((1 << k) + d, 1), MAX_SIZE))
    )


large_size = st.one_of(st.integers(MAX_DENSE, MAX_SIZE), _near_powers_of_two())


def _sparse_tree(data, n: int, *points: int) -> SparseTree:
    """A tree of size n with the given points (and a few random ones) marked."""
    extra = data.draw(st.lists(st.integers(0, n - 1), max_size=4), label="marks")
    return SparseTree(n, {p: leaf_hash(b"mark-%d" % p) for p in (*points, *extra)})


def _frontier_root(tree: SparseTree, size: int) -> bytes:
    nodes = Frontier.nodes_for(size)
    return Frontier(size, [tree.node(lv, i) for lv, i in nodes]).root()


@SETTINGS
@given(large_size, st.data())
def test_inclusion_large_sparse(n, data):
    i = data.draw(st.one_of(st.integers(0, n - 1), st.sampled_from([0, n - 1])), label="index")
    tree = _sparse_tree(data, n, i)
    assert _frontier_root(tree, n) == tree.hash(0, n)
    check_ranges_fold(inclusion_ranges(i, n), tree.node, tree.hash)
    check_inclusion_mutations(data, tree, i, n)


@SETTINGS
@given(large_size, st.data())
def test_consistency_large_sparse(n, data):
    m = data.draw(
        st.one_of(st.integers(0, n), st.sampled_from([0, 1, n - 1, n, n // 2])), label="size1"
    )
    m = min(max(m, 0), n)
    tree = _sparse_tree(data, n, max(m - 1, 0), n - 1)
    assert _frontier_root(tree, m) == tree.hash(0, m)
    assert _frontier_root(tree, n) == tree.hash(0, n)
    check_ranges_fold(consistency_ranges(m, n), tree.node, tree.hash)
    check_consistency_mutations(data, tree, m, n)


# --- named error checks and regressions ---------------------------------------------------


def test_error_messages_name_the_check():
    leaves = LEAVES[:7]
    r = root(leaves)
    proof = inclusion_proof(leaves, 3)
    cases = [
        (lambda: verify_inclusion(3, 7, leaves[3], proof[:-1], r), "wrong proof size 2, want 3"),
        (lambda: verify_inclusion(7, 7, leaves[3], proof, r), "index 7 is beyond size 7"),
        (lambda: verify_inclusion(3, 7, leaves[3][:5], proof, r), "leaf hash has 5 bytes"),
        (lambda: verify_inclusion(3, 7, leaves[2], proof, r), "calculated root [0-9a-f]{64}, want"),
        (lambda: verify_consistency(3, 2, [], r, r), r"size2 \(2\) < size1 \(3\)"),
        (lambda: verify_consistency(3, 7, [], r, r), "empty consistency proof"),
        (lambda: verify_consistency(3, 3, [r], r, r), "wrong proof size 1, want 0"),
        (lambda: verify_consistency(3, 3, [], r, EMPTY), "roots differ for equal sizes"),
        (lambda: verify_consistency(0, 3, [r], EMPTY, r), "wrong proof size 1, want 0"),
        (lambda: verify_consistency(3, 7, [r], root(leaves[:3]), r), "wrong proof size 1, want"),
    ]
    for call, pattern in cases:
        with pytest.raises(ProofError) as info:
            call()
        assert re.search(pattern, str(info.value)), (pattern, str(info.value))


def test_regression_negative_size1_is_rejected():
    # Before the fix, verify_consistency accepted e.g. size1=-2 with the 3 -> 4 proof: a
    # negative size1 parsed as a proof shape of some real size pair.
    leaves = LEAVES[:4]
    proof = consistency_proof(leaves, 3)
    for bogus in (-2, -3, -8, -256):
        with raises(rf"size1 \({bogus}\) < 0"):
            verify_consistency(bogus, 4, proof, root(leaves[:3]), root(leaves))


def test_regression_size1_zero_needs_the_empty_root():
    # Before the fix any 32-byte root1 passed for size1 == 0 (and size1 == size2 == 0).
    r = root(LEAVES[:5])
    verify_consistency(0, 5, [], EMPTY, r)
    verify_consistency(0, 0, [], EMPTY, EMPTY)
    with raises("not the empty tree root"):
        verify_consistency(0, 5, [], r, r)
    with raises("not the empty tree root"):
        verify_consistency(0, 0, [], r, r)


def test_size_is_bound_only_through_the_proof_shape():
    # Documented RFC 9162 behaviour, not a bug: index 0 has the same proof shape in trees
    # of 5..8 leaves, so the size-8 proof also "verifies" for size 5 against the size-8
    # root. Verifiers must take size and root from the same signed tree head.
    leaves = LEAVES[:8]
    verify_inclusion(0, 5, leaves[0], inclusion_proof(leaves, 0), root(leaves))
    verify_consistency(1, 5, consistency_proof(leaves, 1), leaves[0], root(leaves))
    with raises("calculated root"):
        verify_inclusion(0, 5, leaves[0], inclusion_proof(leaves, 0), root(leaves[:5]))


# --- pymerkle 7 cross-check -------------------------------------------------------------

SIZES = [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 100, 255, 256, 257, 300]


def _pymerkle_tree():
    pymerkle = pytest.importorskip("pymerkle")
    # pymerkle 7 defaults: algorithm "sha256" with security on, i.e. RFC 9162 leaf and
    # node prefixes 0x00 / 0x01 and SHA-256("") for the empty tree. Spell them out anyway.
    tree = pymerkle.InmemoryTree(algorithm="sha256", disable_security=False)
    if (tree.leaf_prefix, tree.node_prefix, tree.hash_empty()) != (b"\0", b"\1", EMPTY):
        pytest.skip("this pymerkle does not hash as RFC 9162")
    return pymerkle, tree


def test_pymerkle_roots_and_inclusion_paths():
    _, tree = _pymerkle_tree()
    data = [b"entry-%d" % i for i in range(max(SIZES))]
    for d in data:
        tree.append_entry(d)
    leaves = [leaf_hash(d) for d in data]
    for n in SIZES:
        assert tree.get_root(n) == root(leaves[:n]), n
        for i in {0, n // 3, n - 1} if n else ():
            path = tree.prove_inclusion(i + 1, n).path  # pymerkle counts from 1
            assert path == [leaves[i], *inclusion_proof(leaves[:n], i)]


def test_pymerkle_consistency_proofs_agree_on_our_roots():
    pymerkle, tree = _pymerkle_tree()
    data = [b"entry-%d" % i for i in range(max(SIZES))]
    for d in data:
        tree.append_entry(d)
    leaves = [leaf_hash(d) for d in data]
    for n in SIZES:
        for m in {1, n // 2, n - 1, n} if n else ():
            if m < 1:
                continue
            proof = tree.prove_consistency(m, n)
            pymerkle.verify_consistency(root(leaves[:m]), root(leaves[:n]), proof)
            verify_consistency(m, n, consistency_proof(leaves[:n], m), root(leaves[:m]),
                               tree.get_root(n))

"""Auditing a ledger: recompute everything from the stored entry bytes and account for
every stored row.

Apart from `Ledger` (which appends, reads, proves and signs) because an audit trusts
nothing the ledger stored: it rebuilds the tree from the entry bytes, compares every
stored leaf hash, node and tree head with it, refuses any row outside the tree's current
shape, checks the digest index, and checks every stored signed checkpoint against the
log's verifier key whenever one is known. The report names the first stored thing that
disagrees, in the order the checks run:

1. entry rows: present and dense from 0, each decoding strictly, its leaf hash matching;
2. no row outside the tree: no entry beyond the size, no negative key in any table, no
   node row below MIN_NODE_LEVEL, above the top level or beyond the frontier;
3. every stored node and every tree head equal to the recomputed ones;
4. the digest index equal to the digests the entries name;
5. every stored checkpoint: signed by the log key (when one is known) with the log's
   origin, its size a stored tree head and its root that head's root.

What the file alone cannot tell, and is therefore not claimed: a tree head's timestamp is
not covered by any hash or signature (a C2SP checkpoint carries none), so it is reported
as stored; a deleted intermediate tree head is visible only where a stored checkpoint
names its size (every committed batch's checkpoint does), since the heads are an index
of batch boundaries that the tree itself does not record.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import merkle
from .checkpoint import Checkpoint, CheckpointError, open_checkpoint
from .leafscan import REFS_MOD, LeafScan, Problem, ref_hash, scan, scan_in_workers
from .notes import KeyFileError, NoteError, UnverifiedNoteError, Verifier, load_private_key
from .notes import open_note as _open_note
from .store import HeadRow, Store, node_key, ref_key
from .subtrees import MIN_NODE_LEVEL, stored_node_ranges, subtree_hashes

if TYPE_CHECKING:
    from .ledger import Ledger

ProgressFn = Callable[[int, int], None]

PARALLEL_VERIFY_MIN = 200_000
"""Below this many entries `verify_ledger` hashes in-process; above, entries are decoded
and hashed by one worker process per core (decoding dominates and holds the GIL)."""

__all__ = [
    "PARALLEL_VERIFY_MIN",
    "Problem",
    "VerifyReport",
    "known_verifier",
    "verify_ledger",
]


@dataclass(frozen=True)
class VerifyReport:
    """What `verify_ledger` found.

    `signed_size` is the largest tree size a stored checkpoint covers: one whose signature
    `verifier` checked, or, when no verifier key was known (`verifier` is None), whose
    root matched without its signature being checked. `verifier_source` says where the key
    came from: "given", "pinned" (in the ledger) or "key file" (`<ledger>.key`).
    """

    size: int
    root: bytes
    heads: int
    problem: Problem | None
    checkpoints: int = 0
    signed_size: int | None = None
    verifier: str | None = None
    verifier_source: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def head_signed(self) -> bool:
        """Whether the newest tree head is covered by a stored signed checkpoint."""
        return self.size == 0 or self.signed_size == self.size

    @property
    def warnings(self) -> list[str]:
        """What holds but is weaker than a user may assume; one line each."""
        out = []
        if self.problem is None and not self.head_signed:
            covered = "none" if self.signed_size is None else f"size {self.signed_size}"
            out.append(f"the newest tree head (size {self.size}) is covered by no signed "
                       f"checkpoint (latest signed: {covered}); sign one with "
                       "`flchain checkpoint sign`")
        if self.problem is None and self.checkpoints and self.verifier is None:
            out.append("checkpoint signatures were not checked: no verifier key is pinned, "
                       "given (--key-verifier) or in the ledger's key file")
        return out


def known_verifier(
    ledger: Ledger, given: Verifier | None = None
) -> tuple[Verifier | None, str | None]:
    """The log's verifier key and where it came from: `given` (the auditor's own pin, the
    one that counts against the file's writer), else the key pinned in the ledger at
    creation, else the public half of `<ledger file>.key`. (None, None) if none is known
    or the key file cannot be read without a passphrase."""
    if given is not None:
        return given, "given"
    pinned = ledger.pinned_verifier
    if pinned is not None:
        return pinned, "pinned"
    from .commit import key_path, ledger_path  # commit builds on Ledger: imported late

    path = ledger_path(ledger)
    if path is None or not key_path(path).exists():
        return None, None
    try:
        return load_private_key(key_path(path)).verifier, "key file"
    except (KeyFileError, OSError, ValueError):
        return None, None


def verify_ledger(
    ledger: Ledger,
    *,
    verifier: Verifier | None = None,
    progress: ProgressFn | None = None,
    decode_entries: bool = True,
    parallel_min: int = PARALLEL_VERIFY_MIN,
) -> VerifyReport:
    """Recompute and check the whole ledger (see the module docstring for the order).

    `verifier`: the log key to check checkpoint signatures with; by default the pinned
    key or the key file's (`known_verifier`). `progress(done, total)` is called as entries
    pass. `parallel_min`: the size from which entries are hashed in worker processes.
    Raises StoreError if the file cannot be read (a damaged page).
    """
    store = ledger.store
    heads = list(store.heads())
    size = heads[-1].size if heads else 0
    root = heads[-1].root if heads else merkle.SHA256.empty_root()
    key, source = known_verifier(ledger, verifier)
    problem = _verify_tree(store, size, heads, progress, decode_entries, parallel_min)
    stored = store.checkpoints()
    signed: int | None = None
    if problem is None:
        problem, signed = _verify_checkpoints(stored, heads, ledger.origin, key)
    return VerifyReport(size, root, len(heads), problem, len(stored), signed,
                        key.vkey if key else None, source)


def _verify_tree(
    store: Store,
    size: int,
    heads: list[HeadRow],
    progress: ProgressFn | None,
    decode_entries: bool,
    parallel_min: int,
) -> Problem | None:
    leaves = _scan_all_leaves(store, size, decode_entries, progress, parallel_min)
    if leaves.problem is not None:
        if leaves.suspect is not None and leaves.suspect < leaves.problem.index:
            i = leaves.suspect
            return Problem("entry", i, f"entry {i}: stored bytes do not match its leaf hash")
        return leaves.problem
    if progress:
        progress(size, size)
    stored_count = store.entry_count()
    if stored_count != size:
        return Problem(
            "head",
            size,
            f"the store holds {stored_count} entries but the latest tree head has {size}: "
            f"a tree head was removed or entries were added outside a batch",
        )
    if (problem := _stray_rows(store, size)) is not None:
        return problem
    if leaves.suspect is not None:
        return _changed_leaf_or_entry(store, size, heads, leaves.hashes, leaves.suspect)
    levels, problem = _verify_nodes(store, size, leaves.hashes)
    if problem is not None:
        return problem
    if (problem := _verify_heads(heads, size, levels)) is not None:
        return problem
    # Last: the digest index is derived data, checked once the tree itself holds.
    return _verify_refs(store, size, leaves.refs) if decode_entries else None


def _scan_all_leaves(
    store: Store,
    size: int,
    decode_entries: bool,
    progress: ProgressFn | None,
    parallel_min: int,
) -> LeafScan:
    from .store.sqlite import SqliteStore

    workers = min(os.cpu_count() or 1, 8)
    if size < parallel_min or workers < 2 or not isinstance(store, SqliteStore):
        return scan(store, 0, size, decode_entries, progress, size)
    return scan_in_workers(str(store.path), size, workers, decode_entries, progress,
                           read_only=store.read_only)


def _stray_rows(store: Store, size: int) -> Problem | None:
    """Any row whose key is outside the tree of `size`: a planted row that verify would
    otherwise pass over and that a later append or read would trip on (a node row beyond
    the frontier collides with the node that append stores; a negative index is what a
    naive `ledger[-1]` would read)."""
    entry = store.first_key_outside("entries", [(0, size)])
    if entry is not None:
        return Problem("entry", entry, f"entry row {entry} is outside the tree of size {size}")
    node = store.first_key_outside("nodes", stored_node_ranges(size))
    if node is not None:
        level, index = node >> 40, node & ((1 << 40) - 1)
        if node < 0:
            detail = f"node row with negative key {node} is outside the tree"
            return Problem("node", node, detail, 0)
        why = (f"level {level} is not stored (levels from {MIN_NODE_LEVEL} are)"
               if level < MIN_NODE_LEVEL else f"a tree of size {size} has {size >> level} "
               f"node(s) at level {level}")
        return Problem("node", index, f"node level {level} index {index}: row outside the "
                                      f"tree ({why})", level)
    head = store.first_key_outside("heads", [(1, size + 1)])
    if head is not None:
        return Problem("head", head, f"tree head row of size {head} is outside 1..{size}")
    cp = store.first_key_outside("checkpoints", [(0, 2**63 - 1)])
    if cp is not None:
        return Problem("checkpoint", cp, f"checkpoint row with negative id {cp}")
    return None


def _changed_leaf_or_entry(
    store: Store, size: int, heads: list[HeadRow], computed: bytes, i: int
) -> Problem:
    """Entry `i`'s bytes and stored leaf hash disagree. Rebuild the latest root from the
    stored tree, except the subtree holding this entry, which is rebuilt from the bytes:
    if that gives the latest head's root, the bytes are intact and the leaf row changed."""
    plan = merkle.perfect_subtrees(0, size)
    mine = next(p for p in plan if p[1] == i >> p[0])
    others = subtree_hashes(store, [node_key(lv, ix) for lv, ix in plan if (lv, ix) != mine])
    lo, hi = mine[1] << mine[0], (mine[1] + 1) << mine[0]
    rebuilt = merkle.root([computed[j * 32 : j * 32 + 32] for j in range(lo, hi)])
    parts = [others.get(node_key(lv, ix)) if (lv, ix) != mine else rebuilt for lv, ix in plan]
    if heads and None not in parts and merkle.fold_range(parts) == heads[-1].root:  # type: ignore[arg-type]
        return Problem("leaf", i, f"entry {i}: stored leaf hash was changed", 0)
    return Problem("entry", i, f"entry {i}: stored bytes do not match its leaf hash")


def _verify_nodes(store: Store, size: int, leaves: bytes) -> tuple[list[bytes], Problem | None]:
    """Every level above the leaves recomputed by pairing the level below; stored levels
    compared row by row in index order. Returns the levels (32-byte hashes, concatenated)."""
    levels: list[bytes] = [leaves]
    level, width = 0, size
    node = merkle.node_hash
    while width > 1:
        below = levels[level]
        level += 1
        width //= 2
        cur = bytearray()
        stored = store.level(level) if level >= MIN_NODE_LEVEL else None
        for ix in range(width):
            h = node(below[ix * 64 : ix * 64 + 32], below[ix * 64 + 32 : ix * 64 + 64])
            cur += h
            if stored is None:
                continue
            sidx, sh = next(stored, (None, b""))
            if sidx != ix:
                return levels, Problem("missing", ix, f"node level {level} index {ix}: missing",
                                       level)
            if sh != h:
                first, last = ix << level, ((ix + 1) << level) - 1
                return levels, Problem(
                    "node", ix, f"node level {level} index {ix} (entries {first}..{last}): "
                    f"stored hash differs from recomputed", level)
        levels.append(bytes(cur))
    return levels, None


def _verify_heads(heads: list[HeadRow], size: int, levels: list[bytes]) -> Problem | None:
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
    return None


def _verify_refs(store: Store, size: int, expected: int) -> Problem | None:
    """Compare the digest index (used by `find`) with the digests the entries name."""
    got = 0
    for key, index in store.ref_rows():
        if type(key) is not int or type(index) is not int:  # SQLite columns take any type
            return Problem("index", size, f"digest index row ({key!r}, {index!r}) is not two "
                                          "integers: it was written outside the ledger")
        if not 0 <= index < size:
            detail = f"digest index names entry {index}, outside 0..{size - 1}"
            return Problem("index", index, detail)
        got += ref_hash(key, index)
    if got % REFS_MOD == expected:
        return None
    # Slow path, only on failure: find the first entry whose index rows differ.
    from .entries import decode

    rows: dict[int, set[int]] = {}
    for key, index in store.ref_rows():
        rows.setdefault(index, set()).add(key)
    for row in store.entries(0, size):
        want = {ref_key(bytes.fromhex(d[7:])) for d in decode(row.data).subjects}
        if rows.get(row.index, set()) != want:
            return Problem(
                "index",
                row.index,
                f"entry {row.index}: digest index rows differ from the digests it names",
            )
    return Problem("index", size, "digest index differs from the entries")  # pragma: no cover


def _verify_checkpoints(
    stored: list[tuple[int, str]],
    heads: list[HeadRow],
    origin: str,
    verifier: Verifier | None,
) -> tuple[Problem | None, int | None]:
    """Every stored checkpoint: signed by `verifier` if known, for this origin, at the size
    of a stored tree head and with that head's root (the heads are already checked against
    the tree). Returns the first problem and the largest size covered."""
    roots = {h.size: h.root for h in heads}
    signed: int | None = None
    for size, note in stored:
        try:
            cp = _open_stored(note, origin, verifier)
        except (CheckpointError, NoteError) as e:
            return Problem("checkpoint", size, f"stored checkpoint at size {size}: {e}"), signed
        if cp.size != size:
            return Problem("checkpoint", size, f"stored checkpoint at size {size}: its note "
                                               f"says size {cp.size}"), signed
        if cp.size not in roots and cp.size != 0:
            return Problem("checkpoint", size, f"stored checkpoint at size {size}: no tree head "
                                               "of that size is stored (a tree head was "
                                               "deleted, or the checkpoint planted)"), signed
        want = roots.get(cp.size, merkle.SHA256.empty_root())
        if cp.root_hash != want:
            return Problem("checkpoint", size, f"stored checkpoint at size {size}: its root "
                                               "does not match the tree of that size"), signed
        signed = size if signed is None else max(signed, size)
    return None, signed


def _open_stored(note: str, origin: str, verifier: Verifier | None) -> Checkpoint:
    """The checkpoint in a stored note: signature and origin checked when `verifier` is
    known, else only its syntax and origin."""
    if verifier is not None:
        return open_checkpoint(note, verifier, origin=origin)[0]
    try:
        _open_note(note, [])
    except UnverifiedNoteError as e:
        cp = Checkpoint.parse(e.note.text)
    else:  # pragma: no cover - a note opened with no keys is never verified
        raise CheckpointError("a note opened with no keys was verified")
    if cp.origin != origin:
        raise CheckpointError(f"checkpoint origin {cp.origin!r}, want {origin!r}")
    return cp


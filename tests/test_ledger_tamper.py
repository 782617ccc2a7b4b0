"""Tampering with the SQLite file directly: one changed byte or one deleted row anywhere
(entry bytes, leaf hash, internal node, tree head) makes `verify` fail and name it.

The ledger is built once through the public API; each case edits a copy with the sqlite3
module, as an attacker with write access to the file would, and reopens it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flchain_plugin import entries as E
from flchain_plugin import merkle
from flchain_plugin.checkpoint import verify_checkpoint
from flchain_plugin.ledger import MIN_NODE_LEVEL, Ledger, Problem
from flchain_plugin.ledger_audit import verify_ledger
from flchain_plugin.notes import generate_key
from flchain_plugin.store import NODE_LEVEL_SHIFT, StoreError

BATCHES = [1, 2, 5, 8, 13, 21, 34, 55, 89, 73]  # 301 entries: the last leaf is unpaired
SIZE = sum(BATCHES)
HEAD_SIZES = list(itertools.accumulate(BATCHES))
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def dg(i: int, salt: str = "") -> str:
    return "sha256:" + merkle.leaf_hash(f"{salt}{i}".encode()).hex()


def make_entry(i: int) -> E.Entry:
    if i % 3 == 0:
        return E.Model(run="run-t", round=i, model=dg(i), parent=dg(i - 1), inputs=[i],
                       aggregator="FedAvg", metrics={"acc": i / 1000})
    if i % 3 == 1:
        return E.Update(run="run-t", round=i, node=str(i), update=dg(i, "u"), parent=dg(i - 1),
                        num_examples=i, metrics={"loss": 1.0 / (i + 1)}, dataset=None,
                        nonce=f"n{i}", key=None, signature=None)
    return E.Credit(run="run-t", round=i, node=str(i), rule="equal", amount=i * 7)


@dataclass(frozen=True)
class Base:
    path: Path
    workdir: Path
    leaves: list[bytes]
    nodes: list[tuple[int, int]]  # (level, index) of every stored node above the leaves
    counter: itertools.count  # type: ignore[type-arg]

    def copy(self) -> Path:
        p = self.workdir / f"case{next(self.counter)}.db"
        shutil.copyfile(self.path, p)
        return p


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    d = tmp_path_factory.mktemp("tamper")
    path = d / "base.db"
    led = Ledger(path)
    es = [make_entry(i) for i in range(SIZE)]
    start = 0
    for n in BATCHES:
        led.append(es[start : start + n])
        start += n
    assert led.verify().ok
    led.close()
    assert not Path(f"{path}-wal").exists()  # closed cleanly: one self-contained file
    with sqlite3.connect(path) as c:
        ids = [r[0] for r in c.execute("SELECT id FROM nodes ORDER BY id")]
    mask = (1 << NODE_LEVEL_SHIFT) - 1
    nodes = [(k >> NODE_LEVEL_SHIFT, k & mask) for k in ids]
    leaves = [merkle.leaf_hash(e.encode()) for e in es]
    return Base(path, d, leaves, [n for n in nodes if n[0] > 0], itertools.count())


def leaf_column(c: sqlite3.Connection) -> tuple[str, str, str]:
    """(table, hash column, key column) holding leaf hashes: a column of the entry row, or
    level-0 rows of `nodes` (whose key, level << 40 | index, is the index)."""
    cols = [r[1] for r in c.execute("PRAGMA table_info(entries)")]
    return ("entries", "leaf", "idx") if "leaf" in cols else ("nodes", "hash", "id")


def flip_byte(c: sqlite3.Connection, table: str, col: str, key_col: str, key: int,
              offset: int, xor: int) -> None:
    (value,) = c.execute(f"SELECT {col} FROM {table} WHERE {key_col} = ?", (key,)).fetchone()
    b = bytearray(value)
    b[offset % len(b)] ^= xor
    n = c.execute(f"UPDATE {table} SET {col} = ? WHERE {key_col} = ?", (bytes(b), key)).rowcount
    assert n == 1


def tampered(base: Base, edit: Callable[[sqlite3.Connection], None], **verify_kw: bool) -> Problem:
    path = base.copy()
    with sqlite3.connect(path) as c:
        edit(c)
    c.close()
    with Ledger(path, create=False) as led:
        report = led.verify(**verify_kw)
    assert not report.ok, "tampering went unnoticed"
    path.unlink()
    assert report.problem is not None
    return report.problem


indices = st.one_of(st.integers(0, SIZE - 1), st.sampled_from([0, 1, 2, 63, 64, 127, 128,
                                                                 255, 256, 299, SIZE - 1]))
xors = st.integers(1, 255)


@SETTINGS
@given(index=indices, offset=st.integers(0, 10_000), xor=xors, decode=st.booleans())
def test_entry_byte_changed(base: Base, index: int, offset: int, xor: int, decode: bool) -> None:
    problem = tampered(
        base, lambda c: flip_byte(c, "entries", "data", "idx", index, offset, xor),
        decode_entries=decode,
    )
    assert (problem.kind, problem.index) == ("entry", index), problem.detail
    assert problem.detail.startswith(f"entry {index}:")


@pytest.mark.parametrize("decode", [True, False])
def test_entry_digit_changed_keeps_valid_json(base: Base, decode: bool) -> None:
    """A change that still decodes to a valid entry is caught by the leaf hash."""
    index = 150

    def edit(c: sqlite3.Connection) -> None:
        (data,) = c.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
        changed = bytes(data).replace(b'"round":150', b'"round":151')
        assert changed != bytes(data)
        E.decode(changed)  # still a valid canonical entry
        c.execute("UPDATE entries SET data = ? WHERE idx = ?", (changed, index))

    problem = tampered(base, edit, decode_entries=decode)
    assert (problem.kind, problem.index) == ("entry", index)
    assert "leaf hash" in problem.detail


paired_leaves = st.integers(0, SIZE - 2)  # the last leaf has no sibling: see below


@SETTINGS
@given(index=st.one_of(paired_leaves, st.sampled_from([0, 1, 128, 255, 256, SIZE - 2])),
       offset=st.integers(0, 31), xor=xors)
def test_leaf_hash_changed(base: Base, index: int, offset: int, xor: int) -> None:
    def edit(c: sqlite3.Connection) -> None:
        flip_byte(c, *leaf_column(c), index, offset, xor)

    problem = tampered(base, edit)
    assert (problem.kind, problem.index) == ("leaf", index), problem.detail
    assert f"entry {index}" in problem.detail and "leaf hash" in problem.detail


def test_last_unpaired_leaf_hash_changed(base: Base) -> None:
    """No stored node sits above the last leaf of an odd-sized tree; the tree head tells
    whether the bytes or the leaf hash were changed."""
    def edit(c: sqlite3.Connection) -> None:
        flip_byte(c, *leaf_column(c), SIZE - 1, 0, 1)

    problem = tampered(base, edit)
    assert (problem.kind, problem.index) == ("leaf", SIZE - 1), problem.detail


@SETTINGS
@given(data=st.data(), offset=st.integers(0, 31), xor=xors)
def test_internal_node_changed(base: Base, data: st.DataObject, offset: int, xor: int) -> None:
    level, index = data.draw(st.sampled_from(base.nodes))
    key = (level << NODE_LEVEL_SHIFT) | index
    problem = tampered(base, lambda c: flip_byte(c, "nodes", "hash", "id", key, offset, xor))
    assert (problem.kind, problem.level, problem.index) == ("node", level, index), problem.detail
    assert problem.detail.startswith(f"node level {level} index {index} ")


def test_first_and_last_node_of_every_level(base: Base) -> None:
    levels = {lv for lv, _ in base.nodes}
    # 4..8 for 301 leaves: subtrees below MIN_NODE_LEVEL are recomputed, not stored
    assert levels == set(range(MIN_NODE_LEVEL, SIZE.bit_length()))
    ends = {(lv, ix) for lv in levels for ix in (0, (SIZE >> lv) - 1)}
    assert ends <= set(base.nodes)
    for level, index in sorted(ends):
        key = (level << NODE_LEVEL_SHIFT) | index
        problem = tampered(base, lambda c, key=key: flip_byte(c, "nodes", "hash", "id", key, 7, 1))
        assert (problem.kind, problem.level, problem.index) == ("node", level, index)


@pytest.mark.parametrize("size", HEAD_SIZES)
@pytest.mark.parametrize("offset", [0, 31])
def test_tree_head_changed(base: Base, size: int, offset: int) -> None:
    problem = tampered(base, lambda c: flip_byte(c, "heads", "root", "size", size, offset, 0x80))
    assert (problem.kind, problem.index) == ("head", size), problem.detail
    assert problem.detail.startswith(f"tree head at size {size}:")


@pytest.mark.parametrize("index", [0, 1, 2, 100, 127, 128, 255, 256, 299, SIZE - 1])
def test_entry_row_deleted(base: Base, index: int) -> None:
    problem = tampered(base, lambda c: c.execute("DELETE FROM entries WHERE idx = ?", (index,)))
    assert (problem.kind, problem.index) == ("missing", index), problem.detail
    assert problem.detail.startswith(f"entry {index}")


@SETTINGS
@given(data=st.data())
def test_node_row_deleted(base: Base, data: st.DataObject) -> None:
    level, index = data.draw(st.sampled_from(base.nodes))
    key = (level << NODE_LEVEL_SHIFT) | index
    problem = tampered(base, lambda c: c.execute("DELETE FROM nodes WHERE id = ?", (key,)))
    assert (problem.kind, problem.level, problem.index) == ("missing", level, index)
    assert problem.detail.startswith(f"node level {level} index {index}")


def test_latest_batch_hidden_by_deleting_its_head(base: Base) -> None:
    """Rolling the head back leaves rows beyond it, which verify reports."""
    problem = tampered(base, lambda c: c.execute("DELETE FROM heads WHERE size = ?", (SIZE,)))
    previous = HEAD_SIZES[-2]
    assert (problem.kind, problem.index) == ("head", previous), problem.detail
    assert f"{SIZE} entries" in problem.detail


def test_hidden_single_entry_batch(tmp_path: Path) -> None:
    """The hidden batch completed no stored node (one entry at an even index): only the
    entry row beyond the head is left to notice, by verify and by the next append."""
    path = tmp_path / "l.db"
    with Ledger(path) as led:
        for i in range(5):
            led.append([make_entry(i)])
    with sqlite3.connect(path) as c:
        c.execute("DELETE FROM heads WHERE size = 5")
    c.close()
    with Ledger(path, create=False) as led:
        problem = led.verify().problem
        assert problem is not None and (problem.kind, problem.index) == ("head", 4)
        with pytest.raises(StoreError, match="run `flchain verify`"):
            led.append([make_entry(5)])


# -- rewriting history consistently ------------------------------------------------------------

def rehash(c: sqlite3.Connection, rewrite_heads: bool) -> None:
    """Recompute every leaf hash and stored node from the entry bytes, as an attacker who
    rewrote an entry would, optionally the tree heads too."""
    rows = c.execute("SELECT idx, data FROM entries ORDER BY idx").fetchall()
    leaves = [merkle.leaf_hash(bytes(d)) for _, d in rows]
    table, col, key_col = leaf_column(c)
    c.executemany(f"UPDATE {table} SET {col} = ? WHERE {key_col} = ?",
                  [(h, i) for i, h in enumerate(leaves)])
    ids = [r[0] for r in c.execute("SELECT id FROM nodes")]
    mask = (1 << NODE_LEVEL_SHIFT) - 1
    for k in ids:
        level, index = k >> NODE_LEVEL_SHIFT, k & mask
        h = merkle.root(leaves[index << level : (index + 1) << level])
        c.execute("UPDATE nodes SET hash = ? WHERE id = ?", (h, k))
    if rewrite_heads:
        for (size,) in c.execute("SELECT size FROM heads").fetchall():
            root = merkle.root(leaves[:size])
            c.execute("UPDATE heads SET root = ? WHERE size = ?", (root, size))


FORGED_BLOB = dg(10**6, "forged")


def rewrite_entry(c: sqlite3.Connection, index: int) -> None:
    """Replace an entry with a valid one of another type, and its digest-index rows too."""
    forged = E.Erasure(blob=FORGED_BLOB, reason="attacker")
    c.execute("UPDATE entries SET data = ?, type = ? WHERE idx = ?",
              (forged.encode(), forged.TYPE, index))
    tables = [r[0] for r in c.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'refs%'")]
    for t in tables:
        c.execute(f"DELETE FROM {t} WHERE idx = ?", (index,))
    key = int.from_bytes(bytes.fromhex(FORGED_BLOB[7:])[:8], "big", signed=True)
    c.execute(f"INSERT INTO {tables[-1]} (digest, idx) VALUES (?, ?)", (key, index))


@pytest.mark.parametrize("index", [0, 150, 228, SIZE - 1])
def test_full_rehash_is_caught_by_stored_heads(base: Base, index: int) -> None:
    def attack(c: sqlite3.Connection) -> None:
        rewrite_entry(c, index)
        rehash(c, rewrite_heads=False)

    problem = tampered(base, attack)
    first_head_after = min(s for s in HEAD_SIZES if s > index)
    assert (problem.kind, problem.index) == ("head", first_head_after), problem.detail


@pytest.mark.parametrize("index", [0, 150, SIZE - 1])
def test_full_rehash_with_heads_is_caught_by_a_signed_checkpoint(base: Base, index: int) -> None:
    path = base.copy()
    with Ledger(path, create=False) as led:
        signer = generate_key(led.origin)
        note = led.sign_checkpoint(signer)  # held by clients and witnesses, not only the file
    with sqlite3.connect(path) as c:
        rewrite_entry(c, index)
        rehash(c, rewrite_heads=True)
    c.close()
    with Ledger(path, create=False) as led:
        # the stored checkpoint no longer matches the rewritten tree
        problem = led.verify().problem
        assert problem is not None and (problem.kind, problem.index) == ("checkpoint", SIZE)
    # so the writer re-signs it with a key of its own, as one who holds the file can
    attacker = generate_key(led.origin)
    with sqlite3.connect(path) as c:
        c.execute("DELETE FROM checkpoints")
    c.close()
    with Ledger(path, create=False) as led:
        led.sign_checkpoint(attacker)
        assert led.verify().ok  # self-consistent: the file alone cannot tell
        pinned = led.verify(verifier=signer.verifier).problem  # a pin held by another party
        assert pinned is not None and pinned.kind == "checkpoint", pinned
        assert "no signature by log key" in pinned.detail
        assert [x.index for x in led.find(FORGED_BLOB)] == [index]
        cp = verify_checkpoint(note, signer.verifier)
        assert cp.size == SIZE and cp.root_hash == base_root(base)
        assert led.root_at(cp.size) != cp.root_hash
        with pytest.raises(ValueError, match="does not match"):
            led.add_checkpoint_note(note, signer.verifier)
        # the forged ledger's own inclusion proofs do not lead to the signed root
        p = led.inclusion_proof(index, cp.size)
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(index, cp.size, p.leaf_hash, p.hashes, cp.root_hash)
        # and a genuine old checkpoint followed by more appends cannot be bridged
        led.append([make_entry(SIZE)])
        c2 = led.consistency_proof(cp.size)
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(cp.size, c2.size2, c2.hashes, cp.root_hash, c2.root2)


def base_root(base: Base) -> bytes:
    return merkle.root(base.leaves)


# -- derived columns: the type column and the digest index ---------------------------------

def refs_tables(c: sqlite3.Connection) -> list[str]:
    return [r[0] for r in c.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'refs%'")]


@pytest.mark.parametrize("index", [1, 150, SIZE - 2])
def test_type_column_changed(base: Base, index: int) -> None:
    """iter_entries(type=...) filters on this column: editing it would hide an entry."""
    def edit(c: sqlite3.Connection) -> None:
        n = c.execute("UPDATE entries SET type = 'dataset' WHERE idx = ?", (index,)).rowcount
        assert n == 1

    problem = tampered(base, edit)
    assert (problem.kind, problem.index) == ("entry", index), problem.detail
    assert "type column" in problem.detail


@pytest.mark.parametrize("change", ["deleted", "moved", "added"])
@pytest.mark.parametrize("index", [1, 151, SIZE - 1])  # update / model entries have subjects
def test_digest_index_changed(base: Base, index: int, change: str) -> None:
    """find() reads the digest index: a deleted, moved or added row is named by entry."""
    def edit(c: sqlite3.Connection) -> None:
        tables = refs_tables(c)
        if change == "added":
            key = int.from_bytes(bytes.fromhex(FORGED_BLOB[7:])[:8], "big", signed=True)
            c.execute(f"INSERT INTO {tables[0]} (digest, idx) VALUES (?, ?)", (key, index))
            return
        for t in tables:
            if change == "deleted":
                c.execute(f"DELETE FROM {t} WHERE idx = ?", (index,))
            else:
                c.execute(f"UPDATE {t} SET idx = idx + 1 WHERE idx = ?", (index,))
        assert c.execute("SELECT total_changes()").fetchone()[0] == 1

    problem = tampered(base, edit)
    moved_to = index + 1 if change == "moved" else index
    assert problem.kind == "index", problem.detail
    assert problem.index in (index, moved_to) or "beyond" in problem.detail, problem.detail


# -- large ledgers: verify in worker processes -------------------------------------------------

BIG_BATCH, BIG_BATCHES = 1000, 70  # two chunks (65,536 entries each) for the verify workers


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.db"
    with Ledger(path) as led:
        for b in range(BIG_BATCHES):
            led.append([E.Credit(run="big", round=b, node=str(j), rule="r", amount=j)
                        for j in range(BIG_BATCH)])
    return path


def big_problem(big: Path, tmp_path: Path, edit: Callable[[sqlite3.Connection], None],
                monkeypatch: pytest.MonkeyPatch) -> Problem | None:
    if (os.cpu_count() or 1) < 2:
        pytest.skip("verify uses worker processes only with two or more cores")
    path = tmp_path / "copy.db"
    shutil.copyfile(big, path)
    with sqlite3.connect(path) as c:
        edit(c)
    c.close()
    with Ledger(path, create=False) as led:
        report = verify_ledger(led, parallel_min=1000)
        assert report.size == BIG_BATCH * BIG_BATCHES and report.heads == BIG_BATCHES
        return report.problem


@pytest.mark.slow
@pytest.mark.parametrize("case", ["clean", "entry 66000", "leaf 69001", "deleted 65536"])
def test_large_ledger_parallel_verify(big: Path, tmp_path: Path, case: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def edit(c: sqlite3.Connection) -> None:
        if case == "entry 66000":
            flip_byte(c, "entries", "data", "idx", 66_000, 5, 0x20)
        elif case == "leaf 69001":
            flip_byte(c, *leaf_column(c), 69_001, 3, 0x01)
        elif case == "deleted 65536":
            c.execute("DELETE FROM entries WHERE idx = 65536")

    problem = big_problem(big, tmp_path, edit, monkeypatch)
    if case == "clean":
        assert problem is None
        return
    assert problem is not None
    kind = {"entry": "entry", "leaf": "leaf", "deleted": "missing"}[case.split()[0]]
    assert (problem.kind, problem.index) == (kind, int(case.split()[1])), problem.detail


# -- columns of another SQL type: hand edits with SQL functions ------------------------------

@pytest.mark.parametrize(("table", "col", "key_col", "key", "kind"), [
    ("entries", "data", "idx", 25, "entry"),
    ("entries", "leaf", "idx", 26, "leaf"),
    ("heads", "root", "size", HEAD_SIZES[0], "head"),
])
def test_a_column_turned_into_text_or_a_number_is_named(base: Base, table: str, col: str,
                                                        key_col: str, key: int,
                                                        kind: str) -> None:
    """SQL's replace() or a careless UPDATE leaves TEXT (even invalid UTF-8) or a number
    where a BLOB was: verify names the row instead of crashing on it."""
    for value in ("'x'", "42", "CAST(x'ff00fe' AS TEXT)"):
        def edit(c: sqlite3.Connection, value: str = value) -> None:
            n = c.execute(f"UPDATE {table} SET {col} = {value} WHERE {key_col} = ?",
                          (key,)).rowcount
            assert n == 1

        problem = tampered(base, edit)
        assert (problem.kind, problem.index) == (kind, key), problem.detail

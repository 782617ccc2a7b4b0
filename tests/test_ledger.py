"""The ledger on a real SQLite file: batches, lookups, proofs checked against the in-memory
RFC 9162 reference in `merkle`, reopening, and the errors a user meets first."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from flchain_plugin import entries as E
from flchain_plugin import merkle
from flchain_plugin.checkpoint import verify_checkpoint
from flchain_plugin.digest import DigestError
from flchain_plugin.ledger import BatchEntryError, Ledger, SizeConflict
from flchain_plugin.notes import generate_key
from flchain_plugin.store import StoreError


def dg(label: object) -> str:
    return "sha256:" + hashlib.sha256(str(label).encode()).hexdigest()


def make_entry(i: int) -> E.Entry:
    """A mix of entry types whose subjects repeat, so lookups have several hits."""
    run = "run-1"
    k = i % 5
    if k == 0:
        return E.Update(run=run, round=i // 5, node=f"node-{i}", update=dg(("u", i)),
                        parent=dg(("m", i // 10)), num_examples=10 + i,
                        metrics={"loss": 1 / (i + 1)}, dataset=None, nonce=f"nonce-{i}",
                        key=None, signature=None)
    if k == 1:
        return E.Model(run=run, round=i // 5, model=dg(("m", i // 10)), parent=None,
                       inputs=[i - 1], aggregator="FedAvg")
    if k == 2:
        return E.Evaluation(run=run, round=i // 5, model=dg(("m", i // 10)), metrics={"acc": 0.5})
    if k == 3:
        return E.Rejected(run=run, round=i // 5, node=f"node-{i}", reason="replay", detail="seen")
    return E.Credit(run=run, round=i // 5, node=f"node-{i}", rule="equal", amount=i)


def entries(n: int, start: int = 0) -> list[E.Entry]:
    return [make_entry(i) for i in range(start, start + n)]


def leaves_of(es: list[E.Entry]) -> list[bytes]:
    return [merkle.leaf_hash(e.encode()) for e in es]


def build(path: Path, batches: list[int]) -> tuple[Ledger, list[E.Entry]]:
    led = Ledger(path)
    all_entries: list[E.Entry] = []
    for n in batches:
        batch = entries(n, len(all_entries))
        head = led.append(batch)
        all_entries += batch
        assert head.size == len(all_entries)
        assert head == led.head()
    return led, all_entries


def test_append_get_iter(tmp_path: Path) -> None:
    led, es = build(tmp_path / "l.db", [3, 1, 5])
    assert [h.size for h in led.heads()] == [3, 4, 9]
    assert led.size == len(led) == 9
    assert led.head().root == merkle.root(leaves_of(es))
    assert led.head().root_digest == "sha256:" + merkle.root(leaves_of(es)).hex()
    for i, e in enumerate(es):
        got = led.get(i)
        assert got.index == i and got.entry == e and got.data == e.encode()
        assert got.leaf_hash == merkle.leaf_hash(e.encode())
        assert led[i] == got
    assert [x.entry for x in led.iter_entries()] == es
    assert [x.index for x in led.iter_entries(2, 5)] == [2, 3, 4]
    assert [x.index for x in led.iter_entries(type="model")] == [1, 6]
    assert all(x.entry.TYPE == "model" for x in led.iter_entries(type="model"))
    for bad in (9, 100, -1):
        with pytest.raises(IndexError):
            led.get(bad)
    info = led.info()
    assert info["size"] == 9 and info["origin"] == led.origin
    led.close()


def test_find_by_digest(tmp_path: Path) -> None:
    led, es = build(tmp_path / "l.db", [10, 7, 13])
    m0 = dg(("m", 0))
    want = [i for i, e in enumerate(es) if m0 in e.subjects]
    assert want == [1, 2, 6, 7]
    assert [x.index for x in led.find(m0)] == want
    assert [x.index for x in led.find(m0, type="evaluation")] == [2, 7]
    assert [x.entry for x in led.find(m0)] == [es[i] for i in want]
    u = dg(("u", 15))
    assert [x.index for x in led.find(u)] == [15]
    # `parent` of an update is not a subject: the model is found by its own entries only
    assert all(x.entry.TYPE != "update" for x in led.find(m0))
    assert led.find(dg("never logged")) == []
    with pytest.raises(DigestError):
        led.find("sha256:XYZ")
    led.close()


def test_find_filters_prefix_collisions(tmp_path: Path) -> None:
    """The digest index may key on a prefix; find must still return exact matches only."""
    a = "sha256:" + "ab" * 8 + "00" * 24
    b = "sha256:" + "ab" * 8 + "11" * 24
    led = Ledger(tmp_path / "l.db")
    led.append([E.Erasure(blob=a, reason="x"), E.Erasure(blob=b, reason="y"),
                E.Erasure(blob=a, reason="z")])
    assert [x.index for x in led.find(a)] == [0, 2]
    assert [x.index for x in led.find(b)] == [1]
    led.close()


def test_find_across_many_batches(tmp_path: Path) -> None:
    """Lookups keep working however the digest index is organised internally (the SQLite
    store merges a recent-keys table into the main index every REFS_MERGE_ROWS rows)."""
    from flchain_plugin.store import sqlite as store_sqlite

    merge_every = getattr(store_sqlite, "REFS_MERGE_ROWS", 65_536)
    led = Ledger(tmp_path / "l.db")
    target = dg("target")
    want = []
    per_batch = 997  # not a divisor: a batch straddles the merge point
    b = 0
    while led.size < merge_every + 3 * per_batch:
        batch: list[E.Entry] = [E.Erasure(blob=dg((b, j)), reason="r") for j in range(per_batch)]
        if b % 9 == 0 or led.size + per_batch > merge_every:
            batch.insert(b % per_batch, E.Erasure(blob=target, reason=str(b)))
            want.append(led.size + b % per_batch)
        led.append(batch)
        b += 1
    assert [x.index for x in led.find(target)] == want
    assert any(i < merge_every for i in want) and any(i >= merge_every for i in want)
    assert [x.index for x in led.find(dg((b - 1, per_batch - 1)))] == [led.size - 1]
    assert [x.index for x in led.find(dg((0, 0)))] == [1]  # the target went in first
    led.close()


def test_proofs_for_every_index_and_size(tmp_path: Path) -> None:
    n_max = 40
    led = Ledger(tmp_path / "l.db")
    es = entries(n_max)
    for e in es:  # one entry per batch: a tree head at every size
        led.append([e])
    leaves = leaves_of(es)
    heads = led.heads()
    assert [h.size for h in heads] == list(range(1, n_max + 1))
    for n in range(1, n_max + 1):
        root = merkle.root(leaves[:n])
        assert heads[n - 1].root == root == led.root_at(n)
        for i in range(n):
            p = led.inclusion_proof(i, n)
            assert (p.index, p.size, p.leaf_hash, p.root) == (i, n, leaves[i], root)
            assert list(p.hashes) == merkle.inclusion_proof(leaves[:n], i)
            p.verify()
    latest = led.inclusion_proof(17)
    assert latest.size == n_max and latest.root == led.head().root
    latest.verify()
    led.close()


def test_mutated_proofs_fail(tmp_path: Path) -> None:
    led, _ = build(tmp_path / "l.db", [21])
    p = led.inclusion_proof(5)
    for j in range(len(p.hashes)):
        hashes = list(p.hashes)
        hashes[j] = bytes([hashes[j][0] ^ 1]) + hashes[j][1:]
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(p.index, p.size, p.leaf_hash, hashes, p.root)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(6, p.size, p.leaf_hash, p.hashes, p.root)
    c = led.consistency_proof(8)
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(8, c.size2, c.hashes, led.root_at(9), c.root2)
    led.close()


BATCHES = [7, 13, 1, 20, 6, 1, 16]


def test_proofs_at_historical_sizes(tmp_path: Path) -> None:
    """Any past size works, whether or not a batch ended there."""
    led, es = build(tmp_path / "l.db", BATCHES)
    leaves = leaves_of(es)
    total = len(es)
    for n in range(1, total + 1):
        assert led.root_at(n) == merkle.root(leaves[:n])
        for i in {0, n // 2, n - 1}:
            p = led.inclusion_proof(i, n)
            assert list(p.hashes) == merkle.inclusion_proof(leaves[:n], i)
            p.verify()
    assert led.root_at(0) == merkle.SHA256.empty_root()
    with pytest.raises(ValueError):
        led.root_at(total + 1)
    with pytest.raises(IndexError):
        led.inclusion_proof(5, 5)
    with pytest.raises(IndexError):
        led.inclusion_proof(total)
    with pytest.raises(ValueError):
        led.inclusion_proof(0, total + 1)
    led.close()


def test_consistency_between_every_pair_of_heads(tmp_path: Path) -> None:
    led, es = build(tmp_path / "l.db", BATCHES)
    leaves = leaves_of(es)
    sizes = [0] + [h.size for h in led.heads()]
    for a in sizes:
        for b in sizes:
            if a > b:
                with pytest.raises(ValueError):
                    led.consistency_proof(a, b)
                continue
            c = led.consistency_proof(a, b)
            assert (c.size1, c.size2) == (a, b)
            assert c.root1 == merkle.root(leaves[:a]) and c.root2 == merkle.root(leaves[:b])
            assert list(c.hashes) == (merkle.consistency_proof(leaves[:b], a) if a else [])
            c.verify()
    # sizes between heads too
    for a in range(0, len(es) + 1, 5):
        led.consistency_proof(a).verify()
    led.close()


def test_reopen(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    led, es = build(path, BATCHES[:4])
    origin, head, heads = led.origin, led.head(), led.heads()
    led.close()
    again = Ledger(path, create=False)
    assert (again.origin, again.head(), again.heads()) == (origin, head, heads)
    assert [x.entry for x in again.iter_entries()] == es
    again.inclusion_proof(3).verify()
    more = entries(9, len(es))
    again.append(more)
    assert again.head().root == merkle.root(leaves_of(es + more))
    again.consistency_proof(head.size).verify()
    assert again.verify().ok
    again.close()
    with Ledger(f"sqlite:///{path}", create=False, origin=origin) as third:
        assert third.size == len(es) + 9
        assert third.verify().ok


def test_empty_batch_refused(tmp_path: Path) -> None:
    led, _ = build(tmp_path / "l.db", [2])
    head = led.head()
    with pytest.raises(E.EntryError, match="empty batch"):
        led.append([])
    assert led.head() == head and len(led.heads()) == 1
    led.close()


def test_missing_ledger_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "l.db"
    with pytest.raises(StoreError, match=r"no ledger here; create one with `flchain init`"):
        Ledger(path, create=False)
    assert not path.exists() and not path.parent.exists()


def test_files_that_are_not_ledgers(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a flchain ledger"):
        Ledger(junk)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError):
        Ledger(other, create=False)
    with pytest.raises(StoreError, match="PostgreSQL"):
        Ledger("postgresql://localhost/ledger")


def test_origin(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger(path, origin="example.org/log") as led:
        assert led.origin == "example.org/log"
    with Ledger(path) as led:
        assert led.origin == "example.org/log"
    with pytest.raises(StoreError, match="origin"):
        Ledger(path, origin="example.org/other")
    with Ledger(tmp_path / "m.db") as led:
        assert led.origin.startswith("flchain.local/")


def test_verify_empty_and_progress(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.db")
    report = led.verify()
    assert report.ok and report.size == 0 and report.heads == 0
    assert report.root == merkle.SHA256.empty_root()
    for b in range(3):
        led.append(entries(3000, 3000 * b))
    calls: list[tuple[int, int]] = []
    report = led.verify(progress=lambda done, total: calls.append((done, total)))
    assert report.ok and report.size == 9000 and report.heads == 3
    assert report.root == led.head().root
    assert calls and calls[-1] == (9000, 9000)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    led.close()


def test_signed_checkpoint_of_the_head(tmp_path: Path) -> None:
    led, _ = build(tmp_path / "l.db", [5, 6])
    signer = generate_key(led.origin)
    note = led.sign_checkpoint(signer)
    cp = verify_checkpoint(note, signer.verifier)
    assert (cp.origin, cp.size, cp.root_hash) == (led.origin, 11, led.head().root)
    assert led.latest_checkpoint() == note
    led.append(entries(4, 11))
    c = led.consistency_proof(cp.size)
    merkle.verify_consistency(cp.size, c.size2, c.hashes, cp.root_hash, led.head().root)
    led.close()


def test_append_with_a_signer_stores_the_checkpoint_with_the_batch(tmp_path: Path) -> None:
    led, _ = build(tmp_path / "l.db", [3])
    signer = generate_key(led.origin)
    head = led.append(entries(4, 3), signer=signer)
    cp = verify_checkpoint(head.checkpoint, signer.verifier)
    assert (cp.size, cp.root_hash) == (7, led.head().root) == (head.size, head.root)
    assert led.latest_checkpoint() == head.checkpoint and led.checkpoint_sizes(5) == [7]
    assert head == led.head()  # the note rides along; heads still compare by the tree
    # A key not named after the log is refused before anything is written.
    with pytest.raises(ValueError, match="not the ledger origin"):
        led.append(entries(1, 7), signer=generate_key("example.com/other"))
    # A batch that conflicts stores neither its entries nor a checkpoint.
    with pytest.raises(SizeConflict):
        led.append(entries(1, 7), expect_size=3, signer=signer)
    assert led.size == 7 and led.store.checkpoints() == [(7, head.checkpoint)]
    assert led.verify(verifier=signer.verifier).ok
    led.close()


def test_latest_checkpoints_come_newest_last_and_sizes_once(tmp_path: Path) -> None:
    led, _ = build(tmp_path / "l.db", [2, 3, 4])
    signer = generate_key(led.origin)
    notes = [led.sign_checkpoint(signer, size=n) for n in (2, 5, 5, 9)]
    assert led.latest_checkpoint() == notes[-1]
    assert led.store.checkpoints(last=2) == [(5, notes[2]), (9, notes[3])]
    assert led.checkpoint_sizes(2) == [5, 9] and led.checkpoint_sizes(8) == [2, 5, 9]
    led.close()


def test_expect_size_refuses_a_batch_built_for_another_size(tmp_path: Path) -> None:
    led, _ = build(tmp_path / "l.db", [3])
    with Ledger(tmp_path / "l.db", create=False) as other:
        other.append(entries(2, 3))  # another writer grows the log
    root = led.head().root
    with pytest.raises(SizeConflict, match="has 5 entries, batch was built for 3") as info:
        led.append(entries(1, 5), expect_size=3)
    assert (info.value.size, info.value.expected) == (5, 3)
    assert led.size == 5 and led.head().root == root  # nothing written
    assert led.append(entries(1, 5), expect_size=5).size == 6
    led.close()


def test_iter_entries_newest_first(tmp_path: Path) -> None:
    led, es = build(tmp_path / "l.db", [7, 30_000 - 7])  # spans several read pages
    forward = [le.index for le in led.iter_entries(type="credit")]
    assert [le.index for le in led.iter_entries(type="credit", reverse=True)] == forward[::-1]
    assert [le.index for le in led.iter_entries(5, 12_345, reverse=True)] == list(
        range(12_344, 4, -1))
    newest = next(led.iter_entries(type="model", reverse=True))
    assert newest.entry == [e for e in es if e.TYPE == "model"][-1]
    led.close()


def test_append_stored_takes_canonical_bytes_as_verify_checks_them(tmp_path: Path) -> None:
    """A mirror appends another log's entry bytes as they are: the same leaves, the same
    index rows, and a non-canonical or invalid entry refused by position, nothing written."""
    entries = [E.Dataset(dataset=f"sha256:{i:064x}", owner="o", scheme="s", examples=i + 1,
                         name="n") for i in range(5)]
    with Ledger(tmp_path / "a.db") as a, Ledger(tmp_path / "b.db", origin=a.origin) as b:
        a.append(entries)
        head = b.append_stored([e.data for e in a.iter_entries()], expect_size=0)
        assert head.root == a.head().root and b.verify().ok
        assert [e.index for e in b.find(f"sha256:{3:064x}")] == [3]
        good = entries[0].encode()
        for bad, why in ((good.replace(b'"examples":1', b'"examples": 1'), "canonical"),
                         (good.replace(b'"owner":"o"', b'"owner":1'), "owner"),
                         (b"[]", "")):
            with pytest.raises(BatchEntryError, match=why) as e:
                b.append_stored([good, bad])
            assert e.value.position == 1 and b.size == 5
        with pytest.raises(SizeConflict):
            b.append_stored([good], expect_size=0)

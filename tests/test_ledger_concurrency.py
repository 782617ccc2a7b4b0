"""Several writers on one ledger, on SQLite and on PostgreSQL (`ledger_at`): appends are
serialized into one tree (never a fork), and readers get only valid proofs while writes
are under way."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from ledger_writer import batch, logged_batches

from flchain_plugin import merkle
from flchain_plugin.ledger import Ledger
from flchain_plugin.store.sqlite import SqliteStore

At = Callable[[str], "Path | str"]
WRITER = str(Path(__file__).with_name("ledger_writer.py"))
WRITERS = ("w1", "w2", "w3", "w4")
PER_WRITER = 100
PAUSE = "0.003"  # seconds between a writer's batches; back to back, SQLite's busy handler
# lets the writer that holds the lock keep it for all its batches (still one tree, but
# the test would not exercise interleaved appends)


def check_one_tree(led: Ledger, want: Counter[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """verify() passes, every batch is there once and whole, and each head extends the last."""
    report = led.verify()
    assert report.ok, report.problem
    batches = logged_batches(led)
    assert Counter((label, b) for label, b, _ in batches) == want
    heads = led.heads()
    sizes = [h.size for h in heads]
    assert sizes == sorted(set(sizes)) and sizes[0] > 0  # strictly increasing
    assert sizes == [end for _, _, end in batches]  # one head per batch, at its end
    for a, b in itertools.pairwise(heads):
        c = led.consistency_proof(a.size, b.size)
        assert c.root1 == a.root and c.root2 == b.root
        c.verify()
    return batches


@pytest.mark.slow
def test_four_processes_append_while_one_reads(ledger_at: At, tmp_path: Path) -> None:
    path = ledger_at("shared.db")
    Ledger(path).close()
    go, stop = tmp_path / "go", tmp_path / "stop"
    procs = {
        name: subprocess.Popen([sys.executable, WRITER, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        for name, args in {
            **{w: ["write", str(path), w, "0", str(PER_WRITER), str(go), PAUSE] for w in WRITERS},
            "reader": ["read", str(path), str(stop), "7"],
        }.items()
    }
    try:
        for p in procs.values():
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        go.touch()
        out = {}
        for name in WRITERS:
            procs[name].wait(timeout=300)
            out[name] = procs[name].stdout.read()  # type: ignore[union-attr]
            assert procs[name].returncode == 0, procs[name].stderr.read()  # type: ignore[union-attr]
        stop.touch()
        procs["reader"].wait(timeout=120)
        reader_out = procs["reader"].stdout.read()  # type: ignore[union-attr]
        assert procs["reader"].returncode == 0, procs["reader"].stderr.read()  # type: ignore[union-attr]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()

    for name in WRITERS:
        assert [int(x) for x in out[name].split()] == list(range(PER_WRITER))
    with Ledger(path, create=False) as led:
        want = Counter((w, b) for w in WRITERS for b in range(PER_WRITER))
        batches = check_one_tree(led, want)
        assert led.size == sum(len(batch("w", b)) for b in range(PER_WRITER)) * len(WRITERS)
        # each writer's batches are in its own order
        for w in WRITERS:
            assert [b for label, b, _ in batches if label == w] == list(range(PER_WRITER))
        # the writers really overlapped: the log alternates between them
        switches = sum(1 for x, y in itertools.pairwise(batches) if x[0] != y[0])
        assert switches >= 3, f"writers did not interleave ({switches} switches)"

    summary = json.loads(reader_out)
    assert summary["errors"] == []
    assert summary["inclusion"] >= 10 and summary["consistency"] >= 5, summary
    assert summary["sizes"] >= 3, summary  # it read while the tree grew


def test_threads_share_one_ledger_and_a_second_connection(ledger_at: At) -> None:
    path = ledger_at("threads.db")
    shared = Ledger(path)
    other = Ledger(path)  # its own SQLite connection in the same process
    errors: list[BaseException] = []

    def work(led: Ledger, label: str) -> None:
        try:
            for b in range(40):
                head = led.append(batch(label, b))
                p = led.inclusion_proof(head.size - 1, head.size)
                p.verify()
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(led, label))
               for led, label in ((shared, "t1"), (shared, "t2"), (other, "t3"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    want = Counter((label, b) for label in ("t1", "t2", "t3") for b in range(40))
    check_one_tree(shared, want)
    assert other.head() == shared.head()
    shared.close()
    other.close()


def test_readers_see_only_committed_batches(ledger_at: At) -> None:
    """A reader on its own connection never sees a batch half-written."""
    path = ledger_at("r.db")
    writer = Ledger(path)
    reader = Ledger(path)
    stop = threading.Event()
    seen: list[int] = []
    errors: list[str] = []

    def read() -> None:
        while not stop.is_set():
            head = reader.head()
            seen.append(head.size)
            if head.size and len(list(reader.iter_entries(0, head.size))) != head.size:
                errors.append(f"head {head.size} but entries missing")
            if head.size:
                root = merkle.root([merkle.leaf_hash(x.data)
                                    for x in reader.iter_entries(0, head.size)])
                if root != head.root:
                    errors.append(f"head {head.size} root differs from its entries")

    t = threading.Thread(target=read)
    t.start()
    for b in range(60):
        writer.append(batch("w", b))
    stop.set()
    t.join(timeout=60)
    assert not errors, errors[:3]
    assert len(set(seen)) >= 2
    ends = {end for _, _, end in logged_batches(writer)} | {0}
    assert set(seen) <= ends  # only batch boundaries were ever visible
    writer.close()
    reader.close()


def test_open_waits_for_a_concurrent_creator(tmp_path: Path) -> None:
    """PRAGMA journal_mode=WAL on a new file does not honour busy_timeout; two processes
    creating one ledger at once used to fail with 'database is locked'."""
    path = tmp_path / "new.db"
    locked = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:  # like a second creator between its first write and commit
        c = sqlite3.connect(path, isolation_level=None)
        c.execute("BEGIN IMMEDIATE")
        c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        locked.set()
        release.wait(10)
        c.execute("COMMIT")
        c.close()

    t = threading.Thread(target=hold_lock)
    t.start()
    try:
        assert locked.wait(10)
        threading.Timer(0.3, release.set).start()
        started = time.perf_counter()
        store = SqliteStore(path, timeout=10)
        assert time.perf_counter() - started >= 0.2  # it waited for the lock
        store.close()
    finally:
        release.set()
        t.join()


@pytest.mark.slow
def test_processes_creating_one_ledger_at_once(ledger_at: At) -> None:
    """Two processes open the same new path at the same instant: both succeed, and both
    see the one origin the file keeps."""
    for rep in range(6 if isinstance(ledger_at("new0.db"), Path) else 3):
        path = ledger_at(f"new{rep}.db")
        t0 = time.time() + 0.6  # past interpreter start-up
        procs = [subprocess.Popen([sys.executable, WRITER, "open", str(path), str(t0)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        results = [p.communicate(timeout=120) for p in procs]
        for p, (_, err) in zip(procs, results, strict=True):
            assert p.returncode == 0, f"rep {rep}: {err.strip().splitlines()[-1:]}"
        with Ledger(path, create=False) as led:
            assert [out.strip() for out, _ in results] == [led.origin, led.origin], rep


def test_create_twice_in_one_process_agrees_on_origin(ledger_at: At) -> None:
    path = ledger_at("o.db")
    a = Ledger(path)
    b = Ledger(path)
    assert a.origin == b.origin
    a.close()
    b.close()
    with Ledger(path, create=False) as c:
        assert c.origin == a.origin

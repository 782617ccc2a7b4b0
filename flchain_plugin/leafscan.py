"""Recomputing leaf hashes from stored entry bytes: the first half of `Ledger.verify`.

Decoding every entry is most of verify's work and holds the GIL, so on large SQLite logs
the ranges are scanned by worker processes. They are started as `python -m
flchain_plugin.leafscan`, never through multiprocessing's spawn, which would re-run the
caller's script in each worker when it has no `__main__` guard.

Worker protocol on stdout, per chunk: one JSON line (`end`, `count`, `refs` as hex,
`suspect`, `problem`) followed by `count` raw 32-byte leaf hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import IO

from . import merkle
from .entries import EntryError, check_stored
from .store import Store, StoreError, ref_key

STORE_ERROR_EXIT = 3
"""A worker's exit status when the file cannot be read (a damaged page): its last stderr
line is the StoreError's message, re-raised in the parent as a StoreError."""

CHUNK = 65_536
REFS_MOD = 1 << 128

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Problem:
    """The first stored thing that disagrees with the recomputed log."""

    kind: str  # "entry", "leaf", "node", "head", "index", "missing"
    index: int  # entry index, node index within its level, or tree size for heads
    detail: str
    level: int = 0

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class LeafScan:
    hashes: bytes  # recomputed leaf hashes of the range, 32 bytes each
    problem: Problem | None
    suspect: int | None  # first entry whose bytes and stored leaf hash disagree
    refs: int = 0  # multiset hash of the digest-index rows the entries imply


def ref_hash(key: int, index: int) -> int:
    """One digest-index row's term in a multiset hash (sum mod 2^128), so the index can be
    compared with the entries without sorting or holding either in memory."""
    data = key.to_bytes(8, "big", signed=True) + index.to_bytes(8, "big")
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big")


def scan(
    store: Store,
    start: int,
    end: int,
    decode_entries: bool,
    progress: ProgressFn | None = None,
    total: int = 0,
) -> LeafScan:
    """Recompute the leaf hashes of entries [start, end) and compare with the stored ones.

    With `decode_entries`, each entry must also decode strictly, its type column must
    match, and the digest-index rows it implies are summed into `refs`.
    """
    leaf = merkle.leaf_hash
    computed = bytearray()
    expect = start
    suspect: int | None = None
    refs = 0
    for row in store.entries(start, end):
        if row.index != expect:
            return LeafScan(b"", Problem("missing", expect, f"entry {expect}: missing"), suspect)
        if decode_entries:
            try:
                etype, subjects = check_stored(row.data)
            except EntryError as e:
                msg = f"entry {expect}: stored bytes invalid: {e}"
                return LeafScan(b"", Problem("entry", expect, msg), suspect)
            if row.type != etype:
                msg = f"entry {expect}: type column says {row.type!r}, entry is {etype!r}"
                return LeafScan(b"", Problem("entry", expect, msg), suspect)
            for key in {ref_key(bytes.fromhex(d[7:])) for d in subjects}:
                refs += ref_hash(key, expect)
        h = leaf(row.data)
        computed += h
        if row.leaf != h and suspect is None:
            suspect = expect
        expect += 1
        if progress and expect % 4096 == 0:
            progress(expect, total)
    if expect != end:
        msg = f"entry {expect}: missing; tree head says {end}"
        return LeafScan(b"", Problem("missing", expect, msg), suspect)
    return LeafScan(bytes(computed), None, suspect, refs % REFS_MOD)


def scan_in_workers(
    path: str,
    size: int,
    workers: int,
    decode_entries: bool,
    progress: ProgressFn | None = None,
    read_only: bool = False,
) -> LeafScan:
    """`scan` of [0, size) split over `workers` processes reading the SQLite file `path`
    (opened read-only by them too with `read_only`)."""
    step = -(-size // workers)
    ranges = [(a, min(size, a + step)) for a in range(0, size, step)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", __name__, path, str(a), str(b), str(int(decode_entries)),
             str(int(read_only))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        for a, b in ranges
    ]
    results: list[list[LeafScan]] = [[] for _ in procs]
    done = [0] * len(procs)
    lock = threading.Lock()

    def read(i: int) -> None:
        out = procs[i].stdout
        assert out is not None
        while part := _read_part(out):
            results[i].append(part[1])
            with lock:
                done[i] = part[0] - ranges[i][0]
                if progress:
                    progress(sum(done), size)

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(len(procs))]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    for (a, b), p in zip(ranges, procs, strict=True):
        err = p.stderr.read().decode(errors="replace").strip() if p.stderr else ""
        status = p.wait()
        if status == STORE_ERROR_EXIT:
            raise StoreError(err.splitlines()[-1] if err else f"verify worker for entries "
                             f"{a}..{b - 1} could not read the ledger")
        if status != 0:  # a bug, not the file: keep everything for the report
            raise RuntimeError(f"verify worker for entries {a}..{b - 1} failed: {err}")
    parts = [s for per in results for s in per]
    suspect = next((s.suspect for s in parts if s.suspect is not None), None)
    refs = sum(s.refs for s in parts) % REFS_MOD
    for s in parts:
        if s.problem is not None:
            return LeafScan(b"", s.problem, suspect, refs)
    return LeafScan(b"".join(s.hashes for s in parts), None, suspect, refs)


def _read_part(out: IO[bytes]) -> tuple[int, LeafScan] | None:
    line = out.readline()
    if not line:
        return None
    head = json.loads(line)
    hashes = out.read(32 * head["count"])
    problem = Problem(**head["problem"]) if head["problem"] else None
    return head["end"], LeafScan(hashes, problem, head["suspect"], int(head["refs"], 16))


def _worker(path: str, start: int, end: int, decode_entries: bool, read_only: bool) -> None:
    from .store.sqlite import SqliteStore

    store = SqliteStore(path, create=False, read_only=read_only)
    out = sys.stdout.buffer
    try:
        for a in range(start, end, CHUNK):
            b = min(end, a + CHUNK)
            part = scan(store, a, b, decode_entries)
            head = {
                "end": b,
                "count": len(part.hashes) // 32,
                "refs": format(part.refs, "x"),
                "suspect": part.suspect,
                "problem": asdict(part.problem) if part.problem else None,
            }
            out.write(json.dumps(head).encode() + b"\n" + part.hashes)
            out.flush()
            if part.problem is not None:
                break
    finally:
        store.close()


if __name__ == "__main__":
    _path, _start, _end, _decode, _read_only = sys.argv[1:6]
    try:
        _worker(_path, int(_start), int(_end), _decode == "1", _read_only == "1")
    except StoreError as _e:
        sys.stdout.flush()
        _line = f"verify worker for entries {_start}..{int(_end) - 1}: {_e}"
        print(_line.replace("\n", " "), file=sys.stderr, flush=True)
        os._exit(STORE_ERROR_EXIT)
    os._exit(0)

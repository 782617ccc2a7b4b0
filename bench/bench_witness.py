"""Witness add-checkpoint latency and throughput through the real server on loopback.

A `flchain witness serve` subprocess (uvicorn, SQLite state with synchronous=FULL, so every
answer waits for its fsync) is driven with httpx over keep-alive connections:

- latency: per log origin, a first checkpoint (`old 0`, no proof), then a second with a
  63-hash consistency proof (the most tlog-witness allows) from size 2^61-1 to 2^62-1. The
  proof is built backwards (random hashes and the two roots they imply, exactly what
  verification recomputes), since no log of 2^62 leaves fits here; the witness does the same
  work as for a real one. p50 and p99, beside one Ed25519 cosignature/v1 sign + verify
  measured in the same run (the signature work inside every answer).
- throughput: 4 logs submitting at once, each a chain of honest one-leaf growths (real
  leaves and proofs, precomputed): cosignatures per second over all four.

    python bench/bench_witness.py            # 400 latency samples, 4 x 200 cosignatures
    python bench/bench_witness.py --quick    # 20 and 4 x 10: proves the script works
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import httpx
from run_all import Result, report

from flchain_plugin import merkle, notes
from flchain_plugin.checkpoint import Checkpoint, sign_checkpoint
from flchain_plugin.merkle import _consistency_roots  # the verifier's own arithmetic
from flchain_plugin.witness import MAX_PROOF_LINES, AddCheckpoint, WitnessService, WitnessState

SIZE1, SIZE2 = 2**61 - 1, 2**62 - 1  # their consistency proof has 63 hashes
LOG = "bench.example/log"


def long_proof() -> tuple[tuple[bytes, ...], bytes, bytes]:
    """A valid 63-hash proof from SIZE1 to SIZE2 and the two roots it proves."""
    n = len(merkle.consistency_ranges(SIZE1, SIZE2))
    assert n == MAX_PROOF_LINES, n
    proof = tuple(secrets.token_bytes(32) for _ in range(n))
    root1, root2 = _consistency_roots(SIZE1, SIZE2, proof, b"", merkle.SHA256)
    merkle.verify_consistency(SIZE1, SIZE2, proof, root1, root2)
    return proof, root1, root2


def start_server(tmp: Path, logs: list[str], key: notes.Signer) -> tuple[subprocess.Popen[str], str]:
    (tmp / "logs.txt").write_text("".join(f"{line}\n" for line in logs))
    notes.save_private_key(notes.generate_cosignature_key("bench.example/witness"),
                           tmp / "w.pem", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flchain_plugin.cli", "witness", "serve", "--key", "w.pem",
         "--logs-file", "logs.txt", "--state", "w.db", "--port", "0", "--json"],
        cwd=tmp, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"witness server did not start (exit {proc.wait()})")
    return proc, json.loads(line)["url"]


def latency(url: str, key: notes.Signer, origins: list[str]) -> tuple[list[float], list[float]]:
    """Seconds per add-checkpoint: first checkpoints (no proof), then 63-hash proofs."""
    proof, root1, root2 = long_proof()
    first, second = [], []
    with httpx.Client(base_url=url, timeout=60) as client:
        for origin in origins:
            for old, size, root, hashes, out in ((0, SIZE1, root1, (), first),
                                                 (SIZE1, SIZE2, root2, proof, second)):
                body = AddCheckpoint(old, hashes,
                                     sign_checkpoint(Checkpoint(origin, size, root), key)).encode()
                t0 = time.perf_counter()
                r = client.post("/add-checkpoint", content=body)
                out.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise SystemExit(f"witness answered {r.status_code}: {r.text}")
    return first, second


def chain(origin: str, key: notes.Signer, n: int) -> list[bytes]:
    """Request bodies growing `origin` one leaf at a time from 0 to n leaves."""
    leaves = [merkle.leaf_hash(f"{origin} {i}".encode()) for i in range(n)]
    bodies = []
    for size in range(1, n + 1):
        proof = merkle.consistency_proof(leaves[:size], size - 1) if size > 1 else []
        cp = Checkpoint(origin, size, merkle.root(leaves[:size]))
        bodies.append(AddCheckpoint(size - 1, tuple(proof), sign_checkpoint(cp, key)).encode())
    return bodies


def throughput(url: str, chains: list[list[bytes]]) -> float:
    """Cosignatures per second with every chain submitted at once, one client each."""
    go = threading.Barrier(len(chains) + 1)
    failures: list[str] = []

    def submit(bodies: list[bytes]) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            client.get("/")  # open the connection before the clock starts
            go.wait()
            for body in bodies:
                r = client.post("/add-checkpoint", content=body)
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text}")

    threads = [threading.Thread(target=submit, args=(c,)) for c in chains]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if failures:
        raise SystemExit(f"witness refused: {failures[0]}")
    return sum(map(len, chains)) / seconds


def in_process(tmp: Path, key: notes.Signer, n: int) -> list[float]:
    """The same 63-hash add-checkpoint called directly on the service: no HTTP."""
    proof, root1, root2 = long_proof()
    origins = [f"{LOG}/direct{i}" for i in range(n)]
    state = WitnessState(tmp / "direct.db")
    svc = WitnessService(state, [notes.generate_cosignature_key("bench.example/witness")],
                         {o: [key.verifier] for o in origins})
    times = []
    try:
        for o in origins:
            first = sign_checkpoint(Checkpoint(o, SIZE1, root1), key)
            svc.add_checkpoint(AddCheckpoint(0, (), first).encode())
            body = AddCheckpoint(SIZE1, proof,
                                 sign_checkpoint(Checkpoint(o, SIZE2, root2), key)).encode()
            t0 = time.perf_counter()
            r = svc.add_checkpoint(body)
            times.append(time.perf_counter() - t0)
            assert r.status == 200, r.body
    finally:
        state.close()
    return times


def commit_seconds(tmp: Path, runs: int) -> float:
    """One durable SQLite commit as the state makes it (WAL, synchronous=FULL): the fsync
    every answer waits for."""
    db = sqlite3.connect(tmp / "commit.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (x INTEGER)")
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?)", (i,))
        db.execute("COMMIT")
        times.append(time.perf_counter() - t0)
    db.close()
    return statistics.median(times)


def sign_verify_seconds(runs: int) -> float:
    """One cosignature/v1 sign and verify of a checkpoint body (median)."""
    w = notes.generate_cosignature_key("bench.example/witness")
    text = Checkpoint(LOG, SIZE2, bytes(32)).body()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sig = w.sign(text, 1_700_000_000)
        ok = w.verifier.verify(text, sig)
        times.append(time.perf_counter() - t0)
        assert ok
    return statistics.median(times)


def percentile(xs: list[float], p: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


@click.command()
@click.option("--samples", default=400, show_default=True, help="Log origins for latency.")
@click.option("--chain", "chain_len", default=200, show_default=True,
              help="Cosignatures per log in the 4-log throughput run.")
@click.option("--quick", is_flag=True, help="20 samples, chains of 10: judges nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def main(samples: int, chain_len: int, quick: bool, as_json: bool) -> None:
    """add-checkpoint p50/p99 with a 63-hash proof; cosignatures/s under 4 logs."""
    if quick:
        samples, chain_len = 20, 10
    key = notes.generate_key(LOG)
    origins = [f"{LOG}/{i}" for i in range(samples)]
    concurrent = [f"{LOG}/c{i}" for i in range(4)]
    with tempfile.TemporaryDirectory(prefix="bench-witness-") as d:
        proc, url = start_server(Path(d), [f"{o}={key.verifier.vkey}"
                                           for o in origins + concurrent], key)
        try:
            first, second = latency(url, key, origins)
            chains = [chain(o, key, chain_len) for o in concurrent]
            rate = throughput(url, chains)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        direct = in_process(Path(d), key, samples)
        commit = commit_seconds(Path(d), max(50, samples // 4))
    base = sign_verify_seconds(max(200, samples))
    ms = 1e3
    rows = [
        Result("add_checkpoint_p50", "add-checkpoint p50, 63-hash proof", percentile(second, .5)
               * ms, "ms", base * ms, "Ed25519 sign+verify", base / percentile(second, .5)),
        Result("add_checkpoint_p99", "add-checkpoint p99, 63-hash proof", percentile(second, .99)
               * ms, "ms", base * ms, "Ed25519 sign+verify", base / percentile(second, .99)),
        Result("add_checkpoint_first_p50", "add-checkpoint p50, old 0 (no proof)",
               percentile(first, .5) * ms, "ms"),
        Result("add_checkpoint_in_process_p50", "add-checkpoint p50, in process (no HTTP)",
               percentile(direct, .5) * ms, "ms"),
        Result("sqlite_commit", "one SQLite commit, synchronous=FULL (fsync)", commit * ms, "ms"),
        Result("sign_verify", "Ed25519 cosignature/v1 sign + verify", base * ms, "ms"),
        Result("cosignatures_per_s_4_logs", "cosignatures/s, 4 logs at once", rate, "1/s"),
    ]
    report("witness", rows, as_json=as_json, quick=quick,
           params={"samples": samples, "chain": chain_len, "proof_hashes": MAX_PROOF_LINES,
                   "size1": SIZE1, "size2": SIZE2, "cpus": os.cpu_count()},
           notes=[f"{samples} log origins, each cosigned at size 2^61-1 (old 0) then 2^62-1 "
                  "with a 63-hash proof (64 would be refused: tlog-witness allows 63 lines)",
                  "loopback HTTP/1.1 keep-alive, server in its own process; the state is "
                  "fsynced (SQLite WAL, synchronous=FULL) before every answer",
                  f"throughput: 4 logs x {chain_len} one-leaf growths, one client thread each"])


if __name__ == "__main__":
    main()

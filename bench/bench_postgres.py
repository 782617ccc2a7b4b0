"""PostgreSQL ledger: appends from 1 and from 4 writer processes beside plain COPY of the
same bytes, and proof generation at 10^6 entries (issue 17).

    python bench/bench_postgres.py            # 10^6 entries in batches of 1,000 (minutes)
    python bench/bench_postgres.py --quick    # 8,000 entries: proves it works, judges nothing

The workload is bench_ledger's (Flower rounds: 90% signed updates, 10% dataset commitments,
about 650 B an entry), built before the clock starts. Baseline, in the same run on the same
server: the same entry bytes COPYed (binary) into a one-table database, one table with no
index, one commit per batch of 1,000 from one process. The ledger does more per batch (the
advisory lock, the tree edge read, leaf hashes, nodes, a tree head, the digest index, a
primary key), so the issue's target is half that rate. The server is a throwaway cluster
with fsync on (tests/postgres_server.py, durable), or $FLCHAIN_BENCH_POSTGRES.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import psycopg
from bench_ledger import Clients, construct, round_fields
from run_all import Result, report

from flchain_plugin import entries as E
from flchain_plugin.ledger import Ledger

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from postgres_server import PostgresServer, drop_database, new_database

ENV = "FLCHAIN_BENCH_POSTGRES"
WRITERS = 4
CLIENTS = 100


def batches(first_round: int, rounds: int, size: int) -> list[list[E.Entry]]:
    clients = Clients.make(CLIENTS)
    return [construct(round_fields(clients, r, size)) for r in range(first_round,
                                                                    first_round + rounds)]


@contextmanager
def server() -> Iterator[str]:
    configured = os.environ.get(ENV)
    if configured:
        yield configured
        return
    with PostgresServer(durable=True) as s:
        yield s.url


def _writer(url: str, first_round: int, rounds: int, size: int, ready: Any, go: Any) -> None:
    work = batches(first_round, rounds, size)  # built before the clock starts
    led = Ledger(url)
    ready.release()
    go.wait()
    for b in work:
        led.append(b)
    led.close()


def append_rate(url: str, n: int, size: int, writers: int) -> float:
    """Entries per second appended to a new ledger by `writers` processes at once."""
    ctx = mp.get_context("spawn")
    Ledger(url).close()  # created once, before the clock
    ready, go = ctx.Semaphore(0), ctx.Event()
    rounds = n // size // writers
    procs = [ctx.Process(target=_writer, args=(url, w * rounds, rounds, size, ready, go))
             for w in range(writers)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    t0 = time.perf_counter()
    go.set()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a writer process failed (exit {p.exitcode})")
    elapsed = time.perf_counter() - t0
    with Ledger(url, create=False) as led:
        assert led.size == rounds * size * writers and len(led.heads()) == rounds * writers
    return rounds * size * writers / elapsed


def copy_rate(url: str, n: int, size: int) -> tuple[float, float]:
    """Entries per second of plain binary COPY of the same bytes, and their mean size."""
    datas = [e.encode() for b in batches(0, n // size, size) for e in b]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE raw (data BYTEA NOT NULL)")
        conn.commit()
        t0 = time.perf_counter()
        for i in range(0, len(datas), size):
            with conn.cursor() as cur, cur.copy("COPY raw (data) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["bytea"])
                for d in datas[i:i + size]:
                    cp.write_row((d,))
            conn.commit()
        elapsed = time.perf_counter() - t0
    return len(datas) / elapsed, statistics.fmean(len(d) for d in datas)


@dataclass(frozen=True)
class Proofs:
    inclusion_ms: float
    consistency_ms: float
    samples: int


def proof_times(url: str, samples: int) -> Proofs:
    """Median milliseconds to generate an inclusion and a consistency proof at the head."""
    rng = random.Random(5)
    with Ledger(url, create=False) as led:
        size = led.size
        sizes = [h.size for h in led.heads()]
        inc, con = [], []
        for _ in range(samples):
            i = rng.randrange(size)
            t0 = time.perf_counter()
            p = led.inclusion_proof(i, size)
            inc.append(time.perf_counter() - t0)
            old = rng.choice(sizes)
            t0 = time.perf_counter()
            c = led.consistency_proof(old, size)
            con.append(time.perf_counter() - t0)
            p.verify()
            c.verify()
    return Proofs(statistics.median(inc) * 1e3, statistics.median(con) * 1e3, samples)


def results(one: float, four: float, raw: float, proofs: Proofs, quick: bool) -> list[Result]:
    def judge(ok: bool) -> bool | None:
        return None if quick else ok

    return [
        Result("append_1_writer", "append, 1 writer process", one, "entries/s", raw,
               "plain COPY, 1 process", one / raw, "≥ 0.5× plain COPY", judge(one / raw >= 0.5)),
        Result("append_4_writers", f"append, {WRITERS} writer processes", four, "entries/s",
               raw, "plain COPY, 1 process", four / raw, "≥ 0.5× plain COPY",
               judge(four / raw >= 0.5)),
        Result("plain_copy", "plain COPY of the same bytes (baseline)", raw, "entries/s"),
        Result("inclusion_generate", "inclusion proof at the head, generate (median)",
               proofs.inclusion_ms, "ms", None, None, None, "≤ 5 ms",
               judge(proofs.inclusion_ms <= 5)),
        Result("consistency_generate", "consistency proof to the head, generate (median)",
               proofs.consistency_ms, "ms", None, None, None, "≤ 5 ms",
               judge(proofs.consistency_ms <= 5)),
    ]


@click.command()
@click.option("--entries", "n", default=1_000_000, show_default=True)
@click.option("--batch", "size", default=1000, show_default=True, help="Entries per append.")
@click.option("--samples", default=1000, show_default=True, help="Proofs timed.")
@click.option("--quick", is_flag=True, help="8,000 entries: a smoke run, judges nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def main(n: int, size: int, samples: int, quick: bool, as_json: bool) -> None:
    """Append rates from 1 and 4 writers beside plain COPY; proof times at the head."""
    if quick:
        n, samples = 8_000, 50
    if size < 1 or n < size * WRITERS or samples < 1:
        raise click.BadParameter(f"--entries >= {WRITERS} x --batch, --samples >= 1")
    with server() as base:
        dbs = {k: new_database(base) for k in ("one", "four", "raw")}
        try:
            raw, mean_bytes = copy_rate(dbs["raw"], n, size)
            one = append_rate(dbs["one"], n, size, 1)
            four = append_rate(dbs["four"], n, size, WRITERS)
            proofs = proof_times(dbs["one"], samples)
        finally:
            for url in dbs.values():
                drop_database(url, base)
    params = {"entries": n, "batch": size, "writers": WRITERS, "samples": samples,
              "entry_bytes_mean": round(mean_bytes, 1),
              "server": "FLCHAIN_BENCH_POSTGRES" if os.environ.get(ENV) else
              "throwaway cluster, fsync on", "run": uuid.uuid4().hex[:8]}
    notes = [f"{n:,} entries of bench_ledger's Flower workload (mean {mean_bytes:.0f} B) in "
             f"batches of {size:,}, each one transaction and one tree head; {WRITERS} writers "
             "append to one ledger at once, serialised by the advisory lock",
             "plain COPY: the same bytes into a one-column table without index, one commit "
             f"per batch; proofs timed on {samples:,} random leaves and old tree heads"]
    report("postgres", results(one, four, raw, proofs, quick), as_json=as_json, quick=quick,
           params=params, notes=notes)


if __name__ == "__main__":
    main()

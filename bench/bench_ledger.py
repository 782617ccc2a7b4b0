"""The ledger at 10^6 entries: append throughput, proofs beside pymerkle 7, full verify.

One ledger file serves all three parts, so `--workdir DIR` keeps it (and pymerkle's tree
of the same leaves) between runs; `--only proofs,verify` then skips the minute of
appending. Baselines are measured in the same run on the same machine:

- append: the same entry bytes written with a plain `executemany` into a one-table SQLite
  file, one commit per batch, WAL + synchronous=FULL, so the ratio is the ledger's own cost
  (encoding, hashing, subtree nodes, tree heads, digest index);
- proofs: pymerkle 7's SqliteTree over the same leaves, its subtree cache warm (kept from
  the root and earlier proofs, pymerkle at its best); cold-cache figures are shown too;
- verify: the floor of any full check, reading every entry and recomputing the root.

    python bench/bench_ledger.py                          # 10^6 entries (a few minutes)
    python bench/bench_ledger.py --workdir /tmp/flb       # keep the files for the next run
    python bench/bench_ledger.py --workdir /tmp/flb --only proofs,verify
    python bench/bench_ledger.py --quick                  # 5,000 entries: proves it works
"""

from __future__ import annotations

import base64
import contextlib
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from run_all import Result, console, report

from flchain_plugin import entries as E
from flchain_plugin import merkle
from flchain_plugin.ledger import Ledger
from flchain_plugin.ledger_audit import verify_ledger

PARTS = ("append", "proofs", "verify")
UPDATES_PER_ROUND = 0.9  # the rest of each batch are dataset commitments


# -- a realistic workload: Flower rounds -------------------------------------------------

@dataclass(frozen=True)
class Clients:
    """The federation's fixed facts: node ids (64-bit, so strings), keys, datasets."""

    run: str
    nodes: tuple[str, ...]
    keys: tuple[str, ...]
    datasets: tuple[str, ...]

    @staticmethod
    def make(count: int, seed: int = 7) -> Clients:
        rng = random.Random(seed)
        nodes = tuple(str(rng.getrandbits(63)) for _ in range(count))
        keys = tuple(
            f"client-{n}+{rng.randbytes(4).hex()}+"
            + base64.b64encode(b"\x01" + rng.randbytes(32)).decode()
            for n in nodes
        )
        datasets = tuple(digest(rng) for _ in nodes)
        return Clients(f"run-{rng.randbytes(8).hex()}", nodes, keys, datasets)


def digest(rng: random.Random) -> str:
    return "sha256:" + rng.randbytes(32).hex()


def round_fields(clients: Clients, rnd: int, size: int) -> list[tuple[type[E.Entry], dict]]:
    """Plain field values of one round's batch: client updates, then dataset commitments.

    Kept apart from entry construction so the benchmark can time construction alone.
    """
    rng = random.Random(rnd)
    parent = digest(rng)
    n_updates = round(size * UPDATES_PER_ROUND)
    out: list[tuple[type[E.Entry], dict]] = []
    for j in range(size):
        c = j % len(clients.nodes)
        if j < n_updates:
            out.append((E.Update, {
                "run": clients.run, "round": rnd, "node": clients.nodes[c],
                "update": digest(rng), "parent": parent,
                "num_examples": rng.randrange(100, 5000),
                "metrics": {"loss": round(0.05 + rng.random(), 6),
                            "accuracy": round(0.5 + rng.random() / 2, 6)},
                "dataset": clients.datasets[c],
                "nonce": base64.b64encode(rng.randbytes(16)).decode(),
                "key": clients.keys[c],
                "signature": base64.b64encode(rng.randbytes(64)).decode(),
            }))
        else:
            out.append((E.Dataset, {
                "dataset": digest(rng), "owner": clients.nodes[c],
                "scheme": "flchain-dataset/v1", "examples": rng.randrange(100, 60000),
                "name": f"shard-{c}-r{rnd}",
            }))
    return out


def construct(fields: list[tuple[type[E.Entry], dict]]) -> list[E.Entry]:
    return [cls(**kw) for cls, kw in fields]


# -- progress ----------------------------------------------------------------------------

@contextlib.contextmanager
def progress_bar() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Rich progress on stderr, so `--json` output stays one line on stdout."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console(stderr=True), transient=True) as p:
        def task(description: str, total: int) -> Callable[[int], None]:
            tid = p.add_task(description, total=total)
            return lambda done: p.update(tid, completed=done)
        yield task


# -- part 1: append ----------------------------------------------------------------------

@dataclass(frozen=True)
class AppendFigures:
    entries: int
    construct_s: float
    append_s: float
    raw_s: float
    append_batch_median_s: float
    raw_batch_median_s: float
    append_disk_kb: float | None  # bytes sent to storage per batch, when the OS tells
    raw_disk_kb: float | None
    mean_bytes: float
    mean_bytes_by_type: dict[str, float]
    ledger_mb: float
    raw_mb: float


def disk_writes() -> int | None:
    """Bytes this process has caused to be written to storage (Linux), or None.

    Unlike times, unaffected by other work on the machine: it shows what a commit costs.
    """
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def db_mb(path: Path) -> float:
    return sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal")
               if Path(f"{path}{s}").exists()) / 1e6


def raw_sqlite(path: Path) -> sqlite3.Connection:
    """The baseline store: one table, the ledger store's page size and durability."""
    remove_db(path)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA page_size = 16384")
    c.execute("PRAGMA journal_mode = WAL")
    c.execute("PRAGMA synchronous = FULL")
    c.execute("CREATE TABLE entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    return c


def bench_append(path: Path, raw_path: Path, n: int, batch: int,
                 task: Callable[[str, int], Callable[[int], None]]) -> AppendFigures:
    """Append n entries in batches into a fresh ledger and, batch by batch in alternation,
    the same bytes into the raw SQLite baseline."""
    remove_db(path)
    clients = Clients.make(min(batch, 1000))
    led = Ledger(path, origin="bench.flchain.local/ledger")
    raw = raw_sqlite(raw_path)
    construct_s = 0.0
    times: dict[int, list[float]] = {0: [], 1: []}  # 0: ledger, 1: raw
    disk: dict[int, int] = {0: 0, 1: 0}
    sizes: dict[str, list[int]] = {}
    tick = task(f"appending {n:,} entries", n)
    done = 0
    for b in range(-(-n // batch)):
        fields = round_fields(clients, b, min(batch, n - done))
        t0 = time.perf_counter()
        entries = construct(fields)
        construct_s += time.perf_counter() - t0
        data = [(done + i, e.encode()) for i, e in enumerate(entries)]  # baseline's bytes
        if b == 0:
            for e, (_, d) in zip(entries, data, strict=True):
                sizes.setdefault(e.TYPE, []).append(len(d))
        for which in ((0, 1) if b % 2 else (1, 0)):  # alternate who goes first
            w0 = disk_writes()
            t0 = time.perf_counter()
            if which == 0:
                led.append(entries)
            else:
                raw.execute("BEGIN")
                raw.executemany("INSERT INTO entries (idx, data) VALUES (?, ?)", data)
                raw.execute("COMMIT")
            times[which].append(time.perf_counter() - t0)
            w1 = disk_writes()
            if w0 is not None and w1 is not None:
                disk[which] += w1 - w0
        done += len(entries)
        tick(done)
    raw.close()
    if led.size != n:
        sys.exit(f"ledger holds {led.size} entries after appending {n}")
    led.close()
    all_sizes = [s for v in sizes.values() for s in v]
    batches = len(times[0])
    known = disk_writes() is not None
    return AppendFigures(
        n, construct_s, sum(times[0]), sum(times[1]),
        statistics.median(times[0]), statistics.median(times[1]),
        disk[0] / batches / 1e3 if known else None, disk[1] / batches / 1e3 if known else None,
        statistics.fmean(all_sizes),
        {t: statistics.fmean(v) for t, v in sizes.items()}, db_mb(path), db_mb(raw_path))


def ensure_ledger(path: Path, raw_path: Path, n: int, batch: int,
                  task: Callable[[str, int], Callable[[int], None]]) -> None:
    """Reuse a cached ledger of n entries, or build it (untimed) when proofs need one."""
    if path.exists():
        with Ledger(path, create=False) as led:
            if led.size == n:
                return
    bench_append(path, raw_path, n, batch, task)
    remove_db(raw_path)


# -- part 2: proofs ----------------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter_ns()
    out = fn()
    return (time.perf_counter_ns() - t0) / 1e3, out  # µs


def pymerkle_tree(led: Ledger, workdir: Path, n: int,
                  task: Callable[[str, int], Callable[[int], None]]) -> tuple[Any, float | None]:
    """pymerkle's SqliteTree over the ledger's entry bytes, cached beside the ledger.
    Returns the tree and its build rate (None when reused from the cache)."""
    from pymerkle import SqliteTree

    path = workdir / f"pymerkle-{n}-{led.head().root[:8].hex()}.db"
    tree = SqliteTree(str(path))
    if tree.get_size() == n:
        return tree, None
    tree.close()
    remove_db(path)
    tree = SqliteTree(str(path))
    tick = task(f"building pymerkle's tree of {n:,} leaves", n)

    def rows() -> Iterator[bytes]:
        for row in led.store.entries(0, n):
            if row.index % 10_000 == 0:
                tick(row.index)
            yield row.data

    t0 = time.perf_counter()
    tree.append_entries(rows())
    rate = n / (time.perf_counter() - t0)
    tick(n)
    return tree, rate


@dataclass(frozen=True)
class ProofFigures:
    inc_gen: float
    inc_verify: float
    inc_len: float
    con_gen: float
    con_verify: float
    root_past: float
    pm_inc: float
    pm_inc_cold: float
    pm_inc_verify: float
    pm_con: float
    pm_con_cold: float
    pm_con_verify: float
    pm_root_past: float
    pm_build_rate: float | None
    same_root: bool
    same_proofs: bool
    samples: int
    pm_samples: int


def bench_proofs(path: Path, workdir: Path, n: int, samples: int, pm_samples: int,
                 task: Callable[[str, int], Callable[[int], None]]) -> ProofFigures:
    import pymerkle

    rng = random.Random(2)
    led = Ledger(path, create=False)
    head = led.head()
    indices = [rng.randrange(n) for _ in range(samples)]
    olds = [rng.randrange(1, n) for _ in range(samples)]

    inc_gen, inc_ver, ours = [], [], []
    for i in indices:
        us, p = timed(lambda i=i: led.inclusion_proof(i))
        inc_gen.append(us)
        inc_ver.append(timed(p.verify)[0])
        ours.append(p)
    con_gen, con_ver = [], []
    for m in olds:
        us, p = timed(lambda m=m: led.consistency_proof(m))
        con_gen.append(us)
        con_ver.append(timed(p.verify)[0])
    root_past = [timed(lambda m=m: led.root_at(m))[0] for m in olds]

    tree, build_rate = pymerkle_tree(led, workdir, n, task)
    cold = max(1, pm_samples // 4)  # a cold pymerkle proof rereads every leaf: ~1 s at 10^6
    tick = task("pymerkle proofs", 2 * pm_samples + 3 * cold)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        tick(done)

    # Warm: pymerkle at its best, its subtree cache filled by the root and earlier proofs,
    # as a server answering proofs would run. This is the baseline the targets judge.
    tree.cache_clear()
    same_root = tree.get_root() == head.root
    pm_inc, pm_inc_ver, pm_con, pm_con_ver = [], [], [], []
    same_proofs = True
    for i, p in zip(indices[:pm_samples], ours, strict=False):
        us, proof = timed(lambda i=i: tree.prove_inclusion(i + 1))
        pm_inc.append(us)
        pm_inc_ver.append(timed(lambda proof=proof, p=p: pymerkle.verify_inclusion(
            p.leaf_hash, head.root, proof))[0])
        same_proofs &= list(proof.path[1:]) == list(p.hashes) and proof.path[0] == p.leaf_hash
        step()
    for m in olds[:pm_samples]:
        us, proof = timed(lambda m=m: tree.prove_consistency(m))
        pm_con.append(us)
        old_root = led.root_at(m)
        pm_con_ver.append(timed(lambda proof=proof, r=old_root: pymerkle.verify_consistency(
            r, head.root, proof))[0])
        step()
    # Cold: the cache cleared before each call, as for the first proofs after a restart.
    pm_inc_cold, pm_con_cold, pm_root = [], [], []
    for fn, arg, out in ((tree.prove_inclusion, [i + 1 for i in indices], pm_inc_cold),
                         (tree.prove_consistency, olds, pm_con_cold),
                         (tree.get_root, olds, pm_root)):
        for a in arg[pm_samples: pm_samples + cold]:
            tree.cache_clear()
            out.append(timed(lambda fn=fn, a=a: fn(a))[0])
            step()
    tree.close()
    led.close()
    med = statistics.median
    return ProofFigures(
        med(inc_gen), med(inc_ver), statistics.fmean(len(p.hashes) for p in ours),
        med(con_gen), med(con_ver), med(root_past),
        med(pm_inc), med(pm_inc_cold), med(pm_inc_ver), med(pm_con), med(pm_con_cold),
        med(pm_con_ver), med(pm_root),
        build_rate, same_root, same_proofs, samples, pm_samples)


# -- part 3: verify ----------------------------------------------------------------------

@dataclass(frozen=True)
class VerifyFigures:
    verify_s: float
    verify_no_decode_s: float
    floor_s: float
    ok: bool


def bench_verify(path: Path, n: int,
                 task: Callable[[str, int], Callable[[int], None]]) -> VerifyFigures:
    led = Ledger(path, create=False, read_only=True)  # as an auditor opens it
    tick = task(f"verify of {n:,} entries", n)
    t0 = time.perf_counter()
    rep = verify_ledger(led, progress=lambda done, total: tick(done))
    verify_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rep2 = verify_ledger(led, decode_entries=False)
    no_decode_s = time.perf_counter() - t0
    # The floor: read every entry's bytes and recompute the root, checking nothing else.
    t0 = time.perf_counter()
    leaf = merkle.leaf_hash
    floor_root = merkle.root([leaf(row.data) for row in led.store.entries(0, n)])
    floor_s = time.perf_counter() - t0
    ok = rep.ok and rep2.ok and rep.size == n and floor_root == led.head().root
    led.close()
    if not ok:
        sys.exit(f"verify failed on an untouched ledger: {rep.problem or rep2.problem}")
    return VerifyFigures(verify_s, no_decode_s, floor_s, ok)


# -- report ------------------------------------------------------------------------------

def results(n: int, batch: int, quick: bool, a: AppendFigures | None,
            p: ProofFigures | None, v: VerifyFigures | None) -> list[Result]:
    def judge(ok: bool) -> bool | None:
        return None if quick else ok

    out: list[Result] = []
    if a:
        rate = a.entries / a.append_s
        raw = a.entries / a.raw_s
        with_construct = a.entries / (a.append_s + a.construct_s)
        out += [
            Result("append", "append, entries built beforehand", rate, "entries/s",
                   raw, "raw SQLite executemany", rate / raw, "≥ 100,000 entries/s",
                   judge(rate >= 100_000)),
            Result("append_with_construction", "append, entry construction included",
                   with_construct, "entries/s", raw, "raw SQLite executemany", with_construct / raw),
            Result("raw_sqlite", "raw SQLite executemany (baseline)", raw, "entries/s"),
            Result("append_median_batch", "append, rate of the median batch",
                   batch / a.append_batch_median_s, "entries/s", batch / a.raw_batch_median_s,
                   "raw SQLite, median batch", a.raw_batch_median_s / a.append_batch_median_s),
        ]
        if a.append_disk_kb and a.raw_disk_kb:
            out.append(Result("append_disk_writes", "disk writes per batch", a.append_disk_kb,
                              "kB", a.raw_disk_kb, "raw SQLite", a.raw_disk_kb / a.append_disk_kb))
    if p:
        inc_ratio = p.pm_inc / p.inc_gen
        out += [
            Result("inclusion_generate", "inclusion proof, generate (median)", p.inc_gen, "µs",
                   p.pm_inc, "pymerkle, warm cache", inc_ratio, "≤ 1 ms and ≥ 300× pymerkle",
                   judge(p.inc_gen <= 1000 and inc_ratio >= 300)),
            Result("inclusion_verify", "inclusion proof, verify (median)", p.inc_verify, "µs",
                   p.pm_inc_verify, "pymerkle", p.pm_inc_verify / p.inc_verify, "≤ 100 µs",
                   judge(p.inc_verify <= 100)),
            Result("consistency_generate", "consistency proof, generate (median)", p.con_gen, "µs",
                   p.pm_con, "pymerkle, warm cache", p.pm_con / p.con_gen, "≤ 1 ms",
                   judge(p.con_gen <= 1000)),
            Result("consistency_verify", "consistency proof, verify (median)", p.con_verify, "µs",
                   p.pm_con_verify, "pymerkle", p.pm_con_verify / p.con_verify, "≤ 100 µs",
                   judge(p.con_verify <= 100)),
            Result("inclusion_vs_pymerkle_cold", "inclusion proof vs pymerkle, cold cache",
                   p.inc_gen, "µs", p.pm_inc_cold, "pymerkle, cold cache",
                   p.pm_inc_cold / p.inc_gen),
            Result("consistency_vs_pymerkle_cold", "consistency proof vs pymerkle, cold cache",
                   p.con_gen, "µs", p.pm_con_cold, "pymerkle, cold cache",
                   p.pm_con_cold / p.con_gen),
            Result("root_past_size", "root of a past tree size (median)", p.root_past, "µs",
                   p.pm_root_past, "pymerkle get_root, cold", p.pm_root_past / p.root_past),
        ]
        if p.pm_build_rate:
            out.append(Result("pymerkle_build", "pymerkle SqliteTree insert (no tree heads)",
                              p.pm_build_rate, "entries/s"))
    if v:
        out += [
            Result("verify", f"verify {n:,} entries", v.verify_s, "s", v.floor_s,
                   "read + leaf hash + root", v.floor_s / v.verify_s, "≤ 15 s",
                   judge(v.verify_s <= 15)),
            Result("verify_no_decode", "verify without decoding entries", v.verify_no_decode_s,
                   "s", v.floor_s, "read + leaf hash + root", v.floor_s / v.verify_no_decode_s),
        ]
    return out


@click.command()
@click.option("--entries", "n", default=1_000_000, show_default=True)
@click.option("--batch", default=1000, show_default=True, help="Entries per append.")
@click.option("--samples", default=2000, show_default=True, help="Proofs of our ledger timed.")
@click.option("--pymerkle-samples", default=20, show_default=True,
              help="pymerkle proofs timed (each ~0.3 s at 10^6).")
@click.option("--only", default=",".join(PARTS), show_default=True,
              help="Comma-separated parts to run: append, proofs, verify.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              envvar="FLCHAIN_BENCH_WORKDIR",
              help="Keep the ledger and pymerkle files here and reuse them (default: a "
                   "temporary directory removed at the end; env FLCHAIN_BENCH_WORKDIR).")
@click.option("--quick", is_flag=True, help="5,000 entries: a smoke run, judges nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def main(n: int, batch: int, samples: int, pymerkle_samples: int, only: str,
         workdir: Path | None, quick: bool, as_json: bool) -> None:
    """Append throughput, proof times beside pymerkle 7, and a full verify."""
    parts = [s.strip() for s in only.split(",") if s.strip()]
    if bad := [s for s in parts if s not in PARTS]:
        raise click.BadParameter(f"unknown part {bad[0]!r}; use {', '.join(PARTS)}",
                                 param_hint="--only")
    if quick:
        n, samples, pymerkle_samples = 5000, 100, 5
    if n < 2 or batch < 1 or samples < 1 or pymerkle_samples < 1:
        raise click.BadParameter("--entries >= 2, --batch, --samples and --pymerkle-samples >= 1")
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="flchain-bench-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"ledger-{n}.db"
    raw_path = work / "raw-sqlite.db"
    a = p = v = None
    try:
        with progress_bar() as task:
            if "append" in parts:
                a = bench_append(path, raw_path, n, batch, task)
                remove_db(raw_path)
            else:
                ensure_ledger(path, raw_path, n, batch, task)
            if "proofs" in parts:
                p = bench_proofs(path, work, n, samples, pymerkle_samples, task)
            if "verify" in parts:
                v = bench_verify(path, n, task)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    params: dict[str, Any] = {"entries": n, "batch": batch, "parts": parts,
                              "workdir": None if own_dir else str(work)}
    notes = []
    if a:
        params.update(entry_bytes_mean=round(a.mean_bytes, 1),
                      entry_bytes_by_type={k: round(x, 1) for k, x in a.mean_bytes_by_type.items()},
                      ledger_mb=round(a.ledger_mb, 1), raw_sqlite_mb=round(a.raw_mb, 1),
                      construct_s=round(a.construct_s, 3), append_s=round(a.append_s, 3),
                      raw_s=round(a.raw_s, 3))
        notes.append(
            f"{n:,} entries in batches of {batch:,} (each one transaction and one tree head); "
            f"{UPDATES_PER_ROUND:.0%} update / {1 - UPDATES_PER_ROUND:.0%} dataset entries, "
            f"mean {a.mean_bytes:.0f} B ({', '.join(f'{k} {x:.0f} B' for k, x in a.mean_bytes_by_type.items())}); "
            f"ledger file {a.ledger_mb:.0f} MB, raw table {a.raw_mb:.0f} MB")
    if p:
        params.update(same_root=p.same_root, same_proofs=p.same_proofs, samples=p.samples,
                      pymerkle_samples=p.pm_samples, inclusion_path_mean=round(p.inc_len, 2))
        notes.append(
            f"pymerkle 7 SqliteTree (default: 0x00/0x01 prefixes, RFC 9162 split) over the same "
            f"entry bytes: same root {'yes' if p.same_root else 'NO'}, same inclusion paths "
            f"{'yes' if p.same_proofs else 'NO'}; ours timed on {p.samples:,} proofs, pymerkle on "
            f"{p.pm_samples} warm (cache kept, after computing the root) and "
            f"{max(1, p.pm_samples // 4)} cold (cache cleared before each)")
    if v:
        params.update(verify_ok=v.ok)
    report("ledger", results(n, batch, quick, a, p, v), as_json=as_json, quick=quick, params=params,
           notes=notes)


if __name__ == "__main__":
    main()

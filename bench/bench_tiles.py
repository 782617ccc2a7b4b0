"""`tiles export` of a 10^6-entry ledger beside `verify` of the same ledger, and the
incremental export after one 1,000-entry batch (issue 14).

The ledger is bench_ledger's workload (Flower rounds of ~600-byte entries, batches of
1,000) with a signed checkpoint after every batch, as `LedgerStrategy` signs every round,
so the export also writes the partial tiles of 1,000 checkpointed sizes. Baselines in the
same run: `Ledger.verify()` of the same ledger for the full export (a reader's full check
of what is published); the append and signing of the batch itself for the incremental
export. An export with nothing new (the call `LedgerStrategy(tiles=DIR)` makes after a
round that published nothing) is shown for context.

    python bench/bench_tiles.py                      # 10^6 entries (minutes to build)
    python bench/bench_tiles.py --workdir /tmp/flb   # keep the ledger for the next run
    python bench/bench_tiles.py --quick              # 10^5 entries: proves it works
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from bench_ledger import Clients, construct, progress_bar, remove_db, round_fields
from run_all import Result, report

from flchain_plugin.ledger import Ledger
from flchain_plugin.ledger_audit import verify_ledger
from flchain_plugin.notes import Signer, generate_key, load_private_key, save_private_key
from flchain_plugin.tiles_export import export_tiles

ORIGIN = "bench.flchain.local/tiles"
BATCH = 1000
INCREMENTS = 15
"""Incremental exports timed (one 1,000-entry batch each), on a copy of the ledger."""

Task = Callable[[str, int], Callable[[int], None]]


def build(path: Path, n: int, task: Task) -> Signer:
    """A ledger of n entries, a signed checkpoint per batch; reused when already built."""
    key_file = path.with_suffix(".key")
    if path.exists() and key_file.exists():
        with Ledger(path, create=False) as led:
            if led.size == n:
                return load_private_key(key_file)
    remove_db(path)
    key = generate_key(ORIGIN)
    save_private_key(key, key_file, None, overwrite=True)
    clients = Clients.make(BATCH)
    tick = task(f"building a ledger of {n:,} entries", n)
    with Ledger(path, origin=ORIGIN) as led:
        while led.size < n:
            m = min(BATCH, n - led.size)
            led.append(construct(round_fields(clients, led.size // BATCH, m)), signer=key)
            tick(led.size)
    return key


def copy_db(src: Path, dst: Path) -> None:
    remove_db(dst)
    for suffix in ("", "-wal"):
        if Path(f"{src}{suffix}").exists():
            shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")


@dataclass(frozen=True)
class Figures:
    export_s: float
    export_tiles: int
    export_mb: float
    verify_s: float
    increment_s: list[float]
    increment_tiles: int
    append_s: list[float]
    unchanged_s: float
    fsync_s: float
    same_root: bool


def bench(work: Path, n: int, task: Task) -> Figures:
    path = work / f"tiles-ledger-{n}.db"
    key = build(path, n, task)
    out = work / "tiles-full"
    shutil.rmtree(out, ignore_errors=True)
    with Ledger(path, create=False, read_only=True) as led:
        t0 = time.perf_counter()
        full = export_tiles(led, out)
        export_s = time.perf_counter() - t0
        tick = task(f"verify of {n:,} entries", n)
        t0 = time.perf_counter()
        rep = verify_ledger(led, progress=lambda done, total: tick(done))
        verify_s = time.perf_counter() - t0
        if not rep.ok:
            sys.exit(f"verify failed on an untouched ledger: {rep.problem}")
        same_root = rep.root == led.head().root
    copy = work / "tiles-ledger-copy.db"
    copy_db(path, copy)  # the increments must not grow the cached ledger
    inc, app, tiles = [], [], 0
    clients = Clients.make(BATCH)
    try:
        with Ledger(copy, create=False) as led:
            for r in range(INCREMENTS):
                entries = construct(round_fields(clients, n // BATCH + r, BATCH))
                t0 = time.perf_counter()
                led.append(entries, signer=key)
                app.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                tiles = export_tiles(led, out).tiles
                inc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            unchanged = export_tiles(led, out)
            unchanged_s = time.perf_counter() - t0
            if unchanged.files:
                sys.exit(f"an export with nothing new wrote {unchanged.files} files")
    finally:
        remove_db(copy)
    return Figures(export_s, full.tiles, full.bytes / 1e6, verify_s, inc, tiles, app,
                   unchanged_s, durable_write_s(out / "tile" / "0"), same_root)


def durable_write_s(directory: Path, runs: int = 15) -> float:
    """Median time of one durable file replacement on the export's disk: the unit an
    export pays twice in a row (tiles in parallel, then their directories)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        tmp = directory / ".bench.tmp"
        with open(tmp, "wb") as f:
            f.write(bytes(8192))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / ".bench")
        fd = os.open(directory, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        times.append(time.perf_counter() - t0)
    (directory / ".bench").unlink()
    return statistics.median(times)


def results(n: int, f: Figures, quick: bool) -> list[Result]:
    inc = statistics.median(f.increment_s) * 1e3
    app = statistics.median(f.append_s) * 1e3
    return [
        Result("export", f"tiles export of {n:,} entries ({f.export_tiles:,} tiles)",
               f.export_s, "s", f.verify_s, f"verify of the same {n:,} entries",
               f.verify_s / f.export_s),
        Result("export_rate", "tiles export rate", n / f.export_s, "entries/s"),
        Result("incremental_export", f"incremental export after a {BATCH:,}-entry batch "
               f"(median of {INCREMENTS})", inc, "ms", app,
               f"append + sign of the {BATCH:,}-entry batch", app / inc, "≤ 50 ms",
               None if quick else inc <= 50),
        Result("unchanged_export", "export with nothing new", f.unchanged_s * 1e3, "ms"),
        Result("durable_write", "one 8 KiB file: write, fsync, rename, fsync its directory "
               "(median)", f.fsync_s * 1e3, "ms"),
    ]


@click.command()
@click.option("--entries", "n", default=1_000_000, show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              envvar="FLCHAIN_BENCH_WORKDIR",
              help="Keep the ledger here and reuse it (default: a temporary directory "
                   "removed at the end; env FLCHAIN_BENCH_WORKDIR).")
@click.option("--quick", is_flag=True, help="10^5 entries: a smoke run, judges nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def main(n: int, workdir: Path | None, quick: bool, as_json: bool) -> None:
    """Full and incremental `tiles export` beside `verify` and the batch append."""
    if quick:
        n = 100_000
    if n < BATCH:
        raise click.BadParameter(f"--entries must be at least {BATCH}")
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="flchain-bench-tiles-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    try:
        with progress_bar() as task:
            f = bench(work, n, task)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
        else:
            shutil.rmtree(work / "tiles-full", ignore_errors=True)
    params: dict[str, Any] = {"entries": n, "batch": BATCH, "checkpoints": n // BATCH,
                              "export_mb": round(f.export_mb, 1),
                              "increment_tiles": f.increment_tiles, "verify_ok": f.same_root,
                              "workdir": None if own_dir else str(work)}
    notes = [
        f"the ledger has a signed checkpoint after every {BATCH:,}-entry batch, so the export "
        f"writes {n // BATCH:,} sizes' partial tiles too ({f.export_mb:,.0f} MB in all)",
        f"each increment writes {f.increment_tiles} files (new and partial tiles) + the "
        "checkpoint, each fsynced, then their directories",
    ]
    report("tiles", results(n, f, quick), as_json=as_json, quick=quick, params=params,
           notes=notes)


if __name__ == "__main__":
    main()

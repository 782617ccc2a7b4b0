"""`mirror` of a 10^6-entry log from a local tiles directory, beside `verify` of the source.

The source is the ledger benchmark's workload (Flower rounds: update and dataset entries,
batches of 1,000), signed once at its head and exported with `export_tiles`; `--workdir`
keeps the ledger, its key and its tiles between runs. Both figures are measured in the
same run on the same machine: `verify` of the source (every entry decoded and checked,
every node recomputed) is the baseline, since a mirror does at least that much work per
entry and then appends it; the target is a mirror at least as fast (ratio >= 1).

    python bench/bench_mirror.py                      # 10^6 entries (minutes)
    python bench/bench_mirror.py --workdir /tmp/flb   # keep the source for the next run
    python bench/bench_mirror.py --quick              # 5,000 entries: proves it works
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from bench_ledger import ensure_ledger, progress_bar, remove_db
from run_all import Result, report

from flchain_plugin.commit import log_signer
from flchain_plugin.ledger import Ledger
from flchain_plugin.ledger_audit import verify_ledger
from flchain_plugin.mirror import mirror
from flchain_plugin.notes import Verifier
from flchain_plugin.tiles_export import export_tiles


@dataclass(frozen=True)
class Figures:
    entries: int
    verify_s: float
    mirror_s: float
    mirror_check_s: float
    batches: int


def signed_source(path: Path, tiles: Path, n: int) -> Verifier:
    """The source ledger of n entries with a checkpoint of its head, exported as tiles
    (built once per workdir; an existing export is brought up to date, untimed)."""
    with progress_bar() as task:
        ensure_ledger(path, path.with_name("raw-sqlite.db"), n, 1000, task)
    remove_db(path.with_name("raw-sqlite.db"))
    with Ledger(path, create=False) as led:
        signer = log_signer(led)
        if led.checkpoint_sizes(1) != [led.size]:
            led.sign_checkpoint(signer)
        with progress_bar() as task:
            tick = task(f"exporting {n:,} entries as tiles", 1)
            export_tiles(led, tiles, progress=lambda done, total: tick(done))
    return signer.verifier


def measure(path: Path, tiles: Path, mirror_path: Path, key: Verifier, n: int) -> Figures:
    with Ledger(path, create=False, read_only=True) as led, progress_bar() as task:
        tick = task(f"verify of the source's {n:,} entries", n)
        t0 = time.perf_counter()
        rep = verify_ledger(led, progress=lambda done, total: tick(done))
        verify_s = time.perf_counter() - t0
    if not rep.ok:
        sys.exit(f"the source does not verify: {rep.problem}")
    remove_db(mirror_path)
    stages: dict[str, float] = {}
    with progress_bar() as task:
        ticks = {s: task(f"mirror: {s}", n) for s in ("verify", "append")}

        def progress(stage: str, done: int, total: int) -> None:
            ticks[stage](done)
            stages[stage] = time.perf_counter()

        t0 = time.perf_counter()
        got = mirror(tiles, mirror_path, key, progress=progress)
        mirror_s = time.perf_counter() - t0
    with Ledger(mirror_path, create=False, read_only=True) as m:
        batches = len(m.heads())
        check = verify_ledger(m, verifier=key, decode_entries=False)
    if got.size != n or not check.ok:
        sys.exit(f"the mirror holds {got.size} entries of {n} or does not verify: "
                 f"{check.problem}")
    return Figures(n, verify_s, mirror_s, stages["verify"] - t0, batches)


def results(f: Figures, quick: bool) -> list[Result]:
    rate = f.entries / f.mirror_s
    base = f.entries / f.verify_s
    return [
        Result("mirror", f"mirror {f.entries:,} entries from a tiles directory", rate,
               "entries/s", base, "verify of the source", rate / base, "≥ 1× verify",
               None if quick else rate >= base),
        Result("mirror_check", "mirror, checking phase only (leaves, tiles, proof, root)",
               f.entries / f.mirror_check_s, "entries/s", base, "verify of the source",
               f.verify_s / f.mirror_check_s),
        Result("verify_source", "verify of the source (baseline)", base, "entries/s"),
    ]


@click.command()
@click.option("--entries", "n", default=1_000_000, show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              envvar="FLCHAIN_BENCH_WORKDIR",
              help="Keep the source ledger, its key and its tiles here and reuse them "
                   "(default: a temporary directory; env FLCHAIN_BENCH_WORKDIR).")
@click.option("--quick", is_flag=True, help="5,000 entries: a smoke run, judges nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def main(n: int, workdir: Path | None, quick: bool, as_json: bool) -> None:
    """Mirror throughput from a local tiles directory, beside verify of the source."""
    if quick:
        n = 5000
    if n < 2:
        raise click.BadParameter("--entries >= 2")
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="flchain-bench-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"mirror-source-{n}.db"
    tiles = work / f"mirror-tiles-{n}"
    try:
        key = signed_source(path, tiles, n)
        f = measure(path, tiles, work / "mirror.db", key, n)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
        else:
            remove_db(work / "mirror.db")
    params: dict[str, Any] = {"entries": n, "mirror_batches": f.batches,
                              "verify_s": round(f.verify_s, 3), "mirror_s": round(f.mirror_s, 3),
                              "workdir": None if own_dir else str(work)}
    notes = [f"the source: {n:,} entries of the ledger benchmark's workload, one signed "
             f"checkpoint, exported with export_tiles; the mirror appended {f.batches} "
             "batches (at most about 65,536 entries each) and verifies with the log key",
             "a mirror checks every entry as verify does (entries.check_stored, most of its "
             "time) and then writes it durably, after the tiles, proof and root checks: it "
             "does verify's per-entry work and more, so 1x is the floor it approaches"]
    report("mirror", results(f, quick), as_json=as_json, quick=quick, params=params,
           notes=notes)


if __name__ == "__main__":
    main()

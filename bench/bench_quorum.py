"""A Flower round held to a witness quorum (2 of 3) beside the same round without witnesses.

Three `flchain witness serve` processes on loopback cosign every checkpoint; the server
gathers 2 cosignatures before announcing each round's model and every client verifies
them (signing_mod(witness_keys=..., quorum=2)). The baseline is the same LedgerStrategy
round on the same task (the README demo's model and data) without witnesses, both kinds
alternated in this process on an in-process grid (no engine: a round's time is its
work plus the witnesses' HTTP round trips). Also given: one `Quorum.gather` alone.

    python bench/bench_quorum.py            # 6 clients, 12 rounds, 3 runs of each kind
    python bench/bench_quorum.py --quick    # 3 clients, 4 rounds, 1 run: a smoke run
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from bench_flower import _direct_grid, as_server_app, load_demo
from run_all import Result, report

from flchain_plugin import entries as E
from flchain_plugin import notes
from flchain_plugin.flower import LedgerStrategy, ledger_key
from flchain_plugin.ledger import Ledger
from flchain_plugin.quorum import Quorum, Witnesses

QUORUM = 2
WITNESSES = 3


@contextlib.contextmanager
def witness_processes(directory: Path, log_vkeys: list[str]) -> Iterator[list[tuple[str, str]]]:
    """(url, verifier key) of WITNESSES `flchain witness serve` processes on loopback."""
    procs: list[subprocess.Popen] = []
    out: list[tuple[str, str]] = []
    try:
        for i in range(WITNESSES):
            key = directory / f"w{i}.key"
            notes.save_private_key(notes.generate_cosignature_key(f"w{i}.bench"), key, None)
            cmd = [sys.executable, "-m", "flchain_plugin.cli", "witness", "serve", "--key",
                   str(key), "--state", str(directory / f"w{i}.db"), "--port", "0", "--json",
                   *(a for v in log_vkeys for a in ("--log", v))]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE))
            ready, _, _ = select.select([procs[-1].stdout], [], [], 30)
            line = procs[-1].stdout.readline() if ready else b""  # type: ignore[union-attr]
            if not line:
                sys.exit(f"witness {i} did not start")
            doc = json.loads(line)
            out.append((doc["url"], doc["verifiers"][0]))
        yield out
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def rounds(demo: Any, ledger: Path, keys: Path, clients: int, n: int,
           witnesses: Witnesses | None) -> list[float]:
    """Seconds of each round after the first two, on an in-process grid."""
    from flwr.app import ArrayRecord
    from flwr.serverapp.strategy import FedAvg

    strategy = LedgerStrategy(FedAvg(fraction_train=1.0, fraction_evaluate=0.0,
                                     min_available_nodes=clients), ledger=ledger,
                              witnesses=witnesses)
    vkeys = tuple(e.keys[0].vkey for e in witnesses.endpoints) if witnesses else ()
    app = demo.make_client_app(keys, strategy.verifier_key, attacks=False,
                               witness_keys=vkeys, quorum=QUORUM if witnesses else None)
    marks: list[float] = []

    def mark(rnd: int, arrays: Any) -> None:
        marks.append(time.perf_counter())

    strategy.start(_direct_grid(app, clients), ArrayRecord(demo.model().state_dict()),
                   num_rounds=n, evaluate_fn=strategy.evaluate_fn(mark))
    with Ledger(ledger, create=False) as led:
        if list(led.iter_entries(type="rejected")):
            sys.exit(f"{ledger}: replies were refused; the bench measures clean rounds")
    return [b - a for a, b in itertools.pairwise(marks[2:])]


def gather_seconds(directory: Path, witnesses: Witnesses, signer: notes.Signer,
                   origin: str, n: int) -> float:
    """Median seconds of one Quorum.gather of a one-entry batch's checkpoint."""
    q = Quorum(witnesses)
    times = []
    with Ledger(directory / "gather.db", origin=origin) as led:
        for i in range(n):
            led.append([E.Erasure(blob=f"sha256:{i:064x}", reason="bench")])
            note = led.sign_checkpoint(signer)
            t0 = time.perf_counter()
            q.gather(led, note, signer.verifier)
            times.append(time.perf_counter() - t0)
    q.close()
    return statistics.median(times)


@click.command()
@click.option("--clients", default=6, show_default=True)
@click.option("--rounds", "n", default=12, show_default=True, help="Rounds per run.")
@click.option("--runs", default=3, show_default=True, help="Runs of each kind, alternated.")
@click.option("--quick", is_flag=True, help="3 clients, 4 rounds, 1 run: a smoke run.")
@click.option("--json", "as_json", is_flag=True)
def main(clients: int, n: int, runs: int, quick: bool, as_json: bool) -> None:
    """Round time with a 2-of-3 witness quorum beside the plain round."""
    warnings.filterwarnings("ignore")
    logging.getLogger("flwr").setLevel(logging.ERROR)
    if quick:
        clients, n, runs = 3, 4, 1
    as_server_app(4242)
    demo = load_demo()
    tmp = Path(tempfile.mkdtemp(prefix="bench-quorum-"))
    ledgers = {(kind, i): tmp / f"{kind}-{i}" / "ledger.db"
               for i in range(runs) for kind in ("plain", "quorum")}
    for p in ledgers.values():
        p.parent.mkdir()
    gather_origin = "bench.quorum/gather"
    gather_key = notes.generate_key(gather_origin)
    vkeys = [ledger_key(p).verifier_key for p in ledgers.values()] + [gather_key.verifier_key]
    with witness_processes(tmp, vkeys) as ws:
        cfg = Witnesses(tuple(ws), QUORUM)
        got: dict[str, list[float]] = {"plain": [], "quorum": []}
        for i in range(runs):
            for kind in ("plain", "quorum"):
                got[kind] += rounds(demo, ledgers[(kind, i)], tmp / "keys", clients, n,
                                    cfg if kind == "quorum" else None)
        gather = gather_seconds(tmp, cfg, gather_key, gather_origin, 5 if quick else 30)
    plain, quorum = statistics.median(got["plain"]), statistics.median(got["quorum"])
    results = [
        Result("quorum_round", f"round with a {QUORUM}-of-{WITNESSES} witness quorum",
               quorum * 1e3, "ms", plain * 1e3, "the same round without witnesses",
               quorum / plain),
        Result("quorum_round_added", "… added per round", (quorum - plain) * 1e3, "ms"),
        Result("quorum_gather", f"one Quorum.gather ({QUORUM} of {WITNESSES}, loopback)",
               gather * 1e3, "ms"),
    ]
    report("quorum", results, as_json=as_json, quick=quick,
           params={"clients": clients, "rounds": n, "runs": runs, "cpus": os.cpu_count()},
           notes=[f"medians over {len(got['plain'])} rounds of each kind (rounds 3.. of "
                  f"each run), {clients} clients on an in-process grid, the demo's task",
                  "the quorum round includes the server's gather (2 of 3 cosignatures over "
                  "HTTP, each with a consistency proof) and every client's verify_quorum"])


if __name__ == "__main__":
    main()

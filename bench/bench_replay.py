"""Replay and keep_updates: what an auditor's recomputation and the kept updates cost.

A run of LedgerStrategy(FedAvg, keep_updates=True) is driven without the Flower engine
(configure_train, then `aggregate_train` on signed replies built in this process, as
bench_flower.py's part 1 does), 20 clients a round on a 1M-parameter model, 100 rounds.

1. Replay of the whole run (`flchain_plugin.replay.replay`: decrypt and re-digest every
   kept update, re-aggregate with Flower's FedAvg, digest the result) beside the run's own
   aggregation time (the sum of LedgerStrategy.aggregate_train over the rounds). Target
   (issue 16): at most 1.5x. Plain FedAvg.aggregate_train on the same replies is shown
   for context.
2. keep_updates' work per round (`flower.kept.keep_accepted`: AES-256-GCM per update,
   atomic write with fsync), beside one hashlib.sha256 pass over the round's replies.

    python bench/bench_replay.py            # 100 rounds x 20 clients, 1M parameters (~8 GB)
    python bench/bench_replay.py --quick    # 3 rounds x 4 clients, a small model: smoke
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from bench_flower import _Grid, as_server_app, model_1m
from run_all import Result, report


def _replies(msgs: list[Any], updates: list[dict[str, np.ndarray]], keys: dict[int, Any],
             server_round: int) -> list[Any]:
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    from flchain_plugin.flower.arrays import arrayrecord_digest
    from flchain_plugin.flower.protocol import Announcement, statement_record
    from flchain_plugin.statement import Statement

    out = []
    for i, m in enumerate(msgs):
        m.metadata.__dict__["_message_id"] = f"m{server_round}-{i}"
        rec = ArrayRecord({k: Array(v) for k, v in updates[i].items()})
        n = 40 + i
        content = RecordDict({"arrays": rec, "metrics": MetricRecord({"num-examples": n})})
        ann = Announcement.read(m.content["config"])
        st = Statement(ann.run, server_round, str(m.metadata.dst_node_id), ann.model,
                       arrayrecord_digest(rec), n, {"num-examples": n})
        content["flchain-statement"] = statement_record(st.sign(keys[m.metadata.dst_node_id]))
        out.append(Message(content, reply_to=m))
    return out


def _keep_time(replies: list[Any], scratch: Path) -> float:
    """keep_accepted alone, into a scratch vault, on the round's replies."""
    from flchain_plugin.flower.arrays import arrayrecord_digest
    from flchain_plugin.flower.kept import keep_accepted
    from flchain_plugin.vault import UpdateVault
    from flchain_plugin.verification import ReplyFacts, Verdict

    verdicts = [Verdict(ReplyFacts(node=str(i), parent="", expected={},
                                   update=arrayrecord_digest(r.content["arrays"])))
                for i, r in enumerate(replies)]
    t0 = time.perf_counter()
    keep_accepted(UpdateVault(scratch), replies, verdicts)
    t = time.perf_counter() - t0
    shutil.rmtree(scratch, ignore_errors=True)
    return t


def run(rounds: int, clients: int, small: bool, tmp: Path) -> dict[str, Any]:
    from flwr.app import Array, ArrayRecord, ConfigRecord
    from flwr.serverapp.strategy import FedAvg

    from flchain_plugin.blobs import BlobStore, default_root
    from flchain_plugin.flower import LedgerStrategy
    from flchain_plugin.ledger import Ledger
    from flchain_plugin.notes import generate_key
    from flchain_plugin.replay import replay

    as_server_app(4242)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    base = model_1m(0)
    if small:
        base = {k: v[:10] for k, v in base.items()}
    ids = [2**63 + 17 * i for i in range(clients)]
    keys = {nid: generate_key(f"client-{i}") for i, nid in enumerate(ids)}  # configure_train
    # samples the nodes in a random order: a reply is signed by its node's key
    opts = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_available_nodes": clients}
    ledger = tmp / "ledger.db"
    strategy = LedgerStrategy(FedAvg(**opts), ledger=ledger, keep_updates=True)
    arrays = ArrayRecord({k: Array(v) for k, v in base.items()})
    rng = np.random.default_rng(1)
    t: dict[str, list[float]] = {"run": [], "fedavg": [], "sha": [], "keep": []}
    for r in range(1, rounds + 1):
        msgs = list(strategy.configure_train(r, arrays, ConfigRecord(), _Grid(ids)))
        current = {k: v.numpy() for k, v in arrays.items()}
        updates = [{k: v + rng.standard_normal(v.shape, dtype=np.float32) * np.float32(1e-3)
                    for k, v in current.items()} for _ in range(clients)]
        replies = _replies(msgs, updates, keys, r)
        t0 = time.perf_counter()
        h = hashlib.sha256()
        for m in replies:
            for a in m.content["arrays"].values():
                h.update(a.data)
        t["sha"].append(time.perf_counter() - t0)
        t["keep"].append(_keep_time(replies, tmp / "scratch"))
        t0 = time.perf_counter()
        new, _ = strategy.aggregate_train(r, replies)
        t["run"].append(time.perf_counter() - t0)
        if new is None or new is arrays:
            why = [le.entry.detail for le in strategy.ledger.iter_entries(type="rejected")]
            sys.exit(f"round {r}: LedgerStrategy refused the benchmark's replies: {why[:2]}")
        t0 = time.perf_counter()
        FedAvg(**opts).aggregate_train(r, replies)
        t["fedavg"].append(time.perf_counter() - t0)
        arrays = new
        print(f"round {r}/{rounds}", file=sys.stderr, end="\r")
    strategy.ledger.close()
    with Ledger(ledger, create=False) as led:
        t0 = time.perf_counter()
        rep = replay(led, BlobStore(default_root(ledger)))
        t_replay = time.perf_counter() - t0
    if not rep.ok or rep.counts()["ok"] != rounds:
        sys.exit(f"replay did not confirm every round: {rep.counts()}")
    nbytes = sum(len(a.data) for m in replies for a in m.content["arrays"].values())
    return {"t": t, "replay": t_replay, "nbytes": nbytes,
            "params": sum(v.size for v in base.values())}


@click.command()
@click.option("--rounds", default=100, show_default=True)
@click.option("--clients", default=20, show_default=True)
@click.option("--quick", is_flag=True, help="3 rounds of 4 clients, a small model: smoke.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line on stdout.")
def main(rounds: int, clients: int, quick: bool, as_json: bool) -> None:
    if quick:
        rounds, clients = 3, 4
    tmp = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    try:
        m = run(rounds, clients, quick, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    t = m["t"]
    total_run, total_avg = sum(t["run"]), sum(t["fedavg"])
    keep, sha = statistics.median(t["keep"]), statistics.median(t["sha"])
    ratio = m["replay"] / total_run
    results = [
        Result("replay", f"replay of {rounds} rounds x {clients} clients", m["replay"], "s",
               total_run, "the run's LedgerStrategy.aggregate_train", 1 / ratio,
               "≤ 1.5× the run's aggregation", None if quick else ratio <= 1.5),
        Result("replay_vs_fedavg", "… beside plain FedAvg.aggregate_train alone",
               m["replay"], "s", total_avg, "FedAvg.aggregate_train", total_avg / m["replay"]),
        Result("keep_round", "keep_updates work per round (encrypt + write + fsync)", keep,
               "s", sha, "one sha256 pass over the replies", sha / keep,
               "near one sha256 pass (≤ 3×)", None if quick else keep <= 3 * sha),
    ]
    report("replay", results, as_json=as_json, quick=quick,
           params={"rounds": rounds, "clients": clients, "parameters": m["params"],
                   "reply_bytes_per_round": m["nbytes"]},
           notes=["replay = decrypt (AES-256-GCM) + re-digest every kept update + Flower's "
                  "own aggregation + digest of the result, rounds one after another",
                  "keep_updates per round includes, per update, an fsync of its ciphertext "
                  "and of its key, each followed by an fsync of the file's directory"])


if __name__ == "__main__":
    main()

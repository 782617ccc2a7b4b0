"""LedgerStrategy's cost: aggregation overhead, and end to end on the README's Flower run.

1. `aggregate_train` of LedgerStrategy(FedAvg) against plain FedAvg on the same 20 replies
   of a 1M-parameter model (real Flower Messages carrying signed statements). The wrapper's
   overhead (digests, signature checks, lineage checks, the ledger batch and its signed
   checkpoint) is compared with one hashlib.sha256 pass over the replies' bytes; issue 3's
   target is at most 1.5x. Global-model weights go to the blob store in the default
   configuration; that figure is shown beside it (blobs=False is what the target measures).
2. The README's run (examples/federated_demo.py's task: 6 clients, 5 rounds, honest
   clients) with plain FedAvg and a ClientApp without mods, then with LedgerStrategy and
   signing_mod, in this process, alternating. Per round: mean wall time of rounds 2..
   (round 1 includes Ray actors starting); per run: the whole `run_simulation`. Target: at
   most 5% overhead. Means with a bootstrap 95% interval of their ratio (see end_to_end).
3. The same task without the engine: the ServerApp's main on a Grid that calls the
   ClientApp in this process, so what the plugin adds to a round's work (server and
   clients) shows without the engine's 0.1 s polls. Target (issue 13): at most 5% of the
   plain round under the engine (part 2's per-round mean), printed beside it.

    python bench/bench_flower.py            # all parts (about 4 minutes)
    python bench/bench_flower.py --quick    # small model, 1 end-to-end run each: smoke
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
from run_all import Result, report

ROOT = Path(__file__).resolve().parents[1]


# -- part 1: aggregate_train ------------------------------------------------------------------


def model_1m(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {"fc1.weight": (1000, 768), "fc1.bias": (1000,), "fc2.weight": (231, 1000),
              "fc2.bias": (231,)}
    return {k: rng.standard_normal(s, dtype=np.float32) * 0.01 for k, s in shapes.items()}


def empty_run(run_id: int) -> Any:
    """flwr's Run record (flwr.supercore.run from flwr 1.32, flwr.common.typing before)."""
    try:
        from flwr.supercore.run import Run
    except ImportError:
        from flwr.common.typing import Run  # type: ignore[no-redef]
    return Run.create_empty(run_id)


def as_server_app(run_id: int) -> None:
    """Messages built in this process are the ServerApp's of `run_id`: flwr >= 1.38 takes
    that from TaskIdentity; before, a Grid stamped it when pushing."""
    try:
        from flwr.supercore.task_identity import TaskIdentity
    except ImportError:
        return
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 0, run_id, 0


class _Grid:
    """Just enough of a Grid for configure_train: the node ids and the run."""

    def __init__(self, ids: list[int]):
        self.ids = ids

    def get_node_ids(self) -> list[int]:
        return self.ids

    @property
    def run(self) -> Any:
        return empty_run(4242)


def aggregation(replies_n: int, runs: int, small: bool) -> dict[str, Any]:
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg

    from flchain_plugin.flower import LedgerStrategy
    from flchain_plugin.flower.arrays import arrayrecord_digest
    from flchain_plugin.flower.protocol import Announcement, statement_record
    from flchain_plugin.notes import generate_key
    from flchain_plugin.statement import Statement

    as_server_app(4242)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    base = model_1m(0)
    if small:
        base = {k: v[:10] for k, v in base.items()}
    params = sum(v.size for v in base.values())
    ids = [2**63 + 17 * i for i in range(replies_n)]
    keys = [generate_key(f"client-{i}") for i in range(replies_n)]
    updates = [{k: v + np.float32(0.001 * (i + 1)) for k, v in base.items()} for i in
               range(replies_n)]
    opts = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_available_nodes": replies_n}

    def record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
        return ArrayRecord({k: Array(v) for k, v in arrays.items()})

    def replies(msgs: list[Message], signed: bool) -> list[Message]:
        out = []
        for i, m in enumerate(msgs):
            m.metadata.__dict__["_message_id"] = f"m{i}"
            rec = record(updates[i])
            content = RecordDict({"arrays": rec, "metrics": MetricRecord({"num-examples": 50})})
            if signed:
                ann = Announcement.read(m.content["config"])
                st = Statement(ann.run, 1, str(m.metadata.dst_node_id), ann.model,
                               arrayrecord_digest(rec), 50, {"num-examples": 50})
                content["flchain-statement"] = statement_record(st.sign(keys[i]))
            r = Message(content, reply_to=m)
            out.append(r)
        return out

    tmp = Path(tempfile.mkdtemp(prefix="bench-flower-"))
    times: dict[str, list[float]] = {"fedavg": [], "ledger": [], "ledger_blobs": [], "sha": []}
    nbytes = 0
    for r in range(runs + 1):  # run 0 warms up
        msgs_plain = list(FedAvg(**opts).configure_train(1, record(base), ConfigRecord(),
                                                          _Grid(ids)))
        plain = replies(msgs_plain, signed=False)
        nbytes = sum(len(a.data) for m in plain for a in m.content["arrays"].values())
        t0 = time.perf_counter()
        FedAvg(**opts).aggregate_train(1, plain)
        t_plain = time.perf_counter() - t0

        t0 = time.perf_counter()
        h = hashlib.sha256()
        for m in plain:
            for a in m.content["arrays"].values():
                h.update(a.data)
        t_sha = time.perf_counter() - t0

        got = {}
        for kind, blobs in (("ledger", False), ("ledger_blobs", None)):
            strategy = LedgerStrategy(FedAvg(**opts), ledger=tmp / f"{kind}-{r}.db",
                                      blobs=blobs)
            msgs = list(strategy.configure_train(1, record(base), ConfigRecord(), _Grid(ids)))
            signed = replies(msgs, signed=True)
            t0 = time.perf_counter()
            arrays, _ = strategy.aggregate_train(1, signed)
            got[kind] = time.perf_counter() - t0
            if arrays is None or len(strategy.ledger.find(strategy.global_model)) != 1:
                sys.exit("LedgerStrategy refused the benchmark's replies")
            strategy.ledger.close()
        if r:
            times["fedavg"].append(t_plain)
            times["sha"].append(t_sha)
            times["ledger"].append(got["ledger"])
            times["ledger_blobs"].append(got["ledger_blobs"])
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"med": med, "params": params, "nbytes": nbytes}


# -- part 2: end to end -----------------------------------------------------------------------


def load_demo() -> Any:
    spec = importlib.util.spec_from_file_location("federated_demo",
                                                  ROOT / "examples" / "federated_demo.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["federated_demo"] = mod
    spec.loader.exec_module(mod)
    from ray import cloudpickle  # Ray workers cannot import examples/: ship it by value

    cloudpickle.register_pickle_by_value(mod)
    return mod


def _plain_client(demo: Any) -> Any:
    """The demo's ClientApp as it would be without the plugin: same task, no mods."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    client = ClientApp()

    @client.train()
    def fit(msg: Message, ctx: Context) -> Message:
        net, x, y = demo.received(msg, ctx)
        loss = demo.train(net, x, y)
        return Message(RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics":
                                   MetricRecord({"train_loss": loss, "num-examples": len(x)})}),
                       reply_to=msg)

    @client.evaluate()
    def ev(msg: Message, ctx: Context) -> Message:
        net, x, y = demo.received(msg, ctx)
        loss, acc = demo.evaluate(net, x, y)
        return Message(RecordDict({"metrics": MetricRecord(
            {"eval_loss": loss, "eval_acc": acc, "num-examples": len(x)})}), reply_to=msg)

    return client


@dataclass
class _Probe:
    """What one timed run records: each round's end (its central evaluation) with the
    pauses taken so far, replies that failed, and the pauses to take before each send."""

    pauses: list[float] = field(default_factory=list)  # taken from the end, one per send
    slept: float = 0.0
    marks: list[tuple[float, float, float]] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    client_seconds: Callable[[], float] = lambda: 0.0

    def mark(self) -> None:
        self.marks.append((time.perf_counter(), self.slept, self.client_seconds()))

    def rounds(self) -> list[tuple[float, float]]:
        """(wall seconds less pauses, client seconds) of each round after the first mark."""
        return [(b[0] - a[0] - (b[1] - a[1]), b[2] - a[2])
                for a, b in itertools.pairwise(self.marks)]


def stratified_pauses(sends: int, seed: int) -> list[float]:
    """One pause per send, uniform on [0, 0.1 s) and stratified: sends start at a random
    phase of the engine's 0.1 s polls, and the phases of one run cover the poll evenly."""
    rng = np.random.default_rng(seed)
    u = rng.random()
    return [float((k + u) / sends * 0.1) for k in rng.permutation(sends)]


def _apps(demo: Any, with_ledger: bool, out: Path, clients: int, rounds: int,
          probe: _Probe) -> tuple[Any, Any]:
    """(ServerApp, ClientApp) of the demo's task, plain or with the plugin, reporting to
    `probe`. A run with failed replies is flagged: its times would measure the wrong thing."""
    import torch
    from flwr.app import ArrayRecord, Context, MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    from flchain_plugin.flower import LedgerStrategy
    from flchain_plugin.flower.keys import ledger_key

    out.mkdir(parents=True, exist_ok=True)
    opts = {"fraction_train": 1.0, "fraction_evaluate": 1.0, "min_available_nodes": clients}
    if with_ledger:
        vkey = ledger_key(out / "ledger.db").verifier_key
        client = demo.make_client_app(out / "keys", vkey, attacks=False)
    else:
        client = _plain_client(demo)
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        torch.set_num_threads(1)
        x_test, y_test = demo.dataset(-1, clients)

        def central(rnd: int, arrays: ArrayRecord) -> MetricRecord:
            probe.mark()
            net = demo.model()
            net.load_state_dict(arrays.to_torch_state_dict())
            loss, acc = demo.evaluate(net, x_test, y_test)
            return MetricRecord({"test_loss": loss, "test_acc": acc})

        s: Any = (LedgerStrategy(FedAvg(**opts), ledger=out / "ledger.db") if with_ledger
                  else FedAvg(**opts))
        for name in ("aggregate_train", "aggregate_evaluate"):
            inner = getattr(s, name)

            def checked(rnd: int, replies: Any, inner: Any = inner, name: str = name) -> Any:
                replies = list(replies)
                probe.faults.extend(f"{name} round {rnd}: {r.error.reason}" for r in replies
                                    if r.has_error())
                if len(replies) != clients:
                    probe.faults.append(f"{name} round {rnd}: {len(replies)} replies, "
                                        f"want {clients}")
                return inner(rnd, replies)

            setattr(s, name, checked)
        for name in ("configure_train", "configure_evaluate"):
            inner = getattr(s, name)

            def paused(rnd: int, *args: Any, inner: Any = inner) -> Any:
                messages = list(inner(rnd, *args))
                if probe.pauses:
                    pause = probe.pauses.pop()
                    time.sleep(pause)
                    probe.slept += pause
                return messages

            setattr(s, name, paused)
        s.start(grid, ArrayRecord(demo.model().state_dict()), num_rounds=rounds,
                evaluate_fn=s.evaluate_fn(central) if with_ledger else central)

    return server, client


def one_run(demo: Any, with_ledger: bool, out: Path, clients: int, rounds: int,
            seed: int | None) -> dict:
    """One `run_simulation` of the demo's task: its wall time and its rounds', less the
    phase-randomizing pauses (stratified_pauses(seed); None: no pauses) it took."""
    from flwr.simulation import run_simulation

    probe = _Probe(pauses=[] if seed is None else stratified_pauses(2 * rounds, seed))
    server, client = _apps(demo, with_ledger, out, clients, rounds, probe)
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"logging_level": logging.ERROR, "log_to_driver": False,
                             "include_dashboard": False}}
    t0 = time.perf_counter()
    run_simulation(server_app=server, client_app=client, num_supernodes=clients,
                   backend_config=backend)
    total = time.perf_counter() - t0 - probe.slept
    rounds_s = [w for w, _ in probe.rounds()]
    if len(rounds_s) != rounds:
        probe.faults.append(f"{len(rounds_s)} of {rounds} rounds finished")
    return {"total": total, "rounds": rounds_s, "faults": probe.faults}


def ratio_ci(plain: list[float], ledger: list[float], seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of mean(ledger) / mean(plain)."""
    rng = np.random.default_rng(seed)
    p, lg = np.asarray(plain), np.asarray(ledger)
    r = [lg[rng.integers(0, len(lg), len(lg))].mean() / p[rng.integers(0, len(p), len(p))].mean()
         for _ in range(2000)]
    lo, hi = np.percentile(r, [2.5, 97.5])
    return float(lo), float(hi)


def series(demo: Any, runs: int, clients: int, rounds: int, label: str, pauses: bool,
           discarded: list[str]) -> dict[str, list]:
    """`runs` runs of each kind, alternated; run i of both kinds takes the same pauses.
    A run whose replies failed (Flower or Ray under load) timed something else: it is
    noted in `discarded` and run again."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-flower-e2e-"))
    res: dict[str, list[dict]] = {"plain": [], "ledger": []}
    for i in range(runs):
        for kind in (("plain", "ledger") if i % 2 == 0 else ("ledger", "plain")):
            for attempt in range(3):
                run = one_run(demo, kind == "ledger", tmp / f"{label}-{kind}-{i}-{attempt}",
                              clients, rounds, seed=i if pauses else None)
                if not run["faults"]:
                    break
                discarded.append(f"{label} {kind} run {i + 1}: {run['faults'][0]}")
                print(f"  discarded {discarded[-1]}", file=sys.stderr)
            else:
                sys.exit(f"three {kind} runs in a row had failed replies: {run['faults'][:3]}")
            res[kind].append(run)
            r = res[kind][-1]["rounds"]
            print(f"  {label} {kind} run {i + 1}/{runs}: {res[kind][-1]['total']:.1f} s, "
                  f"rounds 2..{rounds} mean {statistics.fmean(r[1:] or r) * 1e3:.0f} ms",
                  file=sys.stderr)
    return res


def end_to_end(runs: int, clients: int, rounds: int, round_runs: int,
               long_rounds: int, pauses: bool = True) -> dict[str, Any]:
    """The README's run (`runs` of each kind, `rounds` rounds) timed whole, and rounds
    timed in `round_runs` longer runs (none: the README runs' rounds).

    A round takes a whole number of the in-memory grid's 0.1 s reply polls, and which
    number depends on the phase of the engine's own 0.1 s polls when the server sends: a
    phase that moves only a few ms a round, from wherever start-up left it. Left alone,
    that phase, not the work, decides whether a run's rounds take 200 or 300 ms. So every
    send here waits a pause drawn from stratified_pauses (excluded from the times) and the
    rounds are averaged: the mean then moves with the work each round really adds."""
    demo = load_demo()
    discarded: list[str] = []
    readme = series(demo, runs, clients, rounds, "run", pauses, discarded)
    timed = (series(demo, round_runs, clients, long_rounds, "rounds", pauses, discarded)
             if round_runs else readme)
    rounds_of = {k: [x for r in rs for x in r["rounds"][1:]] for k, rs in timed.items()}
    totals = {k: [r["total"] for r in rs] for k, rs in readme.items()}
    return {
        "round": {k: statistics.fmean(v) for k, v in rounds_of.items()},
        "run": {k: statistics.fmean(v) for k, v in totals.items()},
        "round_ci": ratio_ci(rounds_of["plain"], rounds_of["ledger"]),
        "run_ci": ratio_ci(totals["plain"], totals["ledger"]),
        "rounds_timed": len(rounds_of["plain"]),
        "discarded": discarded,
    }


# -- part 3: the work per round, without the engine --------------------------------------------


def _direct_grid(app: Any, clients: int) -> Any:
    """A Grid that hands each Message straight to the ClientApp in this process: what the
    plugin adds to a round's work, free of the engine's polling and Ray's transport."""
    import uuid

    from flwr.app import Context, RecordDict
    from flwr.serverapp import Grid

    class DirectGrid(Grid):
        def __init__(self) -> None:
            self.ctx = {1000 + i: Context(run_id=4242, node_id=1000 + i, state=RecordDict(),
                                          node_config={"partition-id": i,
                                                       "num-partitions": clients},
                                          run_config={}) for i in range(clients)}
            self.client_seconds = 0.0

        def set_run(self, run: Any) -> None:
            raise NotImplementedError

        @property
        def run(self) -> Any:
            return empty_run(4242)

        def create_message(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

        def get_node_ids(self) -> list[int]:
            return list(self.ctx)

        def push_messages(self, messages: Any) -> Any:
            raise NotImplementedError

        def pull_messages(self, message_ids: Any) -> Any:
            raise NotImplementedError

        def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list:
            out = []
            for m in messages:
                m.metadata.__dict__["_message_id"] = str(uuid.uuid4())
                t0 = time.perf_counter()
                reply = app(m, self.ctx[m.metadata.dst_node_id])
                self.client_seconds += time.perf_counter() - t0
                reply.metadata.__dict__["_src_node_id"] = m.metadata.dst_node_id
                out.append(reply)
            return out

    return DirectGrid()


def work(clients: int, rounds: int, repeats: int = 2) -> dict[str, tuple[float, float]]:
    """Median (round, client) seconds of rounds 3.., both kinds alternated, in this process:
    without the engine's polls a round's time is its work, and the median keeps a stray
    disk stall or a Ray process still shutting down out of it."""
    as_server_app(4242)
    demo = load_demo()
    tmp = Path(tempfile.mkdtemp(prefix="bench-flower-work-"))
    got: dict[str, list[tuple[float, float]]] = {"plain": [], "ledger": []}
    for i in range(repeats):
        for kind in ("plain", "ledger"):
            probe = _Probe()
            server, client = _apps(demo, kind == "ledger", tmp / f"{kind}-{i}", clients, rounds,
                                   probe)
            grid = _direct_grid(client, clients)
            probe.client_seconds = lambda g=grid: g.client_seconds
            server._main(grid, None)  # the @server.main() function, on the direct grid
            if probe.faults:
                sys.exit(f"the in-process {kind} run had failed replies: {probe.faults[:3]}")
            d = probe.rounds()[2:]
            got[kind].append((statistics.median(x for x, _ in d),
                              statistics.median(c for _, c in d)))
    return {k: (statistics.fmean(x for x, _ in v), statistics.fmean(c for _, c in v))
            for k, v in got.items()}


@click.command()
@click.option("--replies", default=20, show_default=True, help="Replies aggregated (part 1).")
@click.option("--runs", default=7, show_default=True, help="Timed aggregations (median).")
@click.option("--e2e-runs", default=6, show_default=True,
              help="README runs of each kind, timed whole.")
@click.option("--rounds", default=5, show_default=True,
              help="Rounds per README run (the README's run has 5).")
@click.option("--round-runs", default=3, show_default=True,
              help="Longer runs of each kind whose rounds are timed.")
@click.option("--long-rounds", default=40, show_default=True, help="Rounds per longer run.")
@click.option("--clients", default=6, show_default=True, help="SuperNodes per e2e run.")
@click.option("--pauses/--no-pauses", default=True, show_default=True,
              help="Randomize the poll phase before each send (see end_to_end).")
@click.option("--quick", is_flag=True, help="Small model, one e2e run each: a smoke run.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def main(replies: int, runs: int, e2e_runs: int, rounds: int, round_runs: int,
         long_rounds: int, clients: int, pauses: bool, quick: bool, as_json: bool) -> None:
    """LedgerStrategy overhead: aggregate_train, and end to end on the demo's run."""
    warnings.filterwarnings("ignore")
    logging.getLogger("flwr").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if quick:
        runs, e2e_runs, rounds, round_runs = 2, 1, 3, 0
    agg = aggregation(replies, runs, small=quick)
    m = agg["med"]
    over = m["ledger"] - m["fedavg"]
    over_blobs = m["ledger_blobs"] - m["fedavg"]
    results = [
        Result("aggregate_overhead_vs_sha256", f"aggregate_train overhead, {replies} replies",
               over * 1e3, "ms", m["sha"] * 1e3, "sha256 over the replies' bytes",
               over / m["sha"], "≤ 1.5× one sha256 pass", None if quick else over <= 1.5 *
               m["sha"]),
        Result("aggregate_overhead_with_blobs", "… with the global model stored in blobs",
               over_blobs * 1e3, "ms", m["sha"] * 1e3, "sha256 over the replies' bytes",
               over_blobs / m["sha"]),
        Result("aggregate_fedavg", "plain FedAvg.aggregate_train", m["fedavg"] * 1e3, "ms"),
        Result("aggregate_ledger", "LedgerStrategy(FedAvg).aggregate_train", m["ledger"] * 1e3,
               "ms", m["fedavg"] * 1e3, "plain FedAvg", m["ledger"] / m["fedavg"]),
    ]
    w = work(clients, max(rounds, 10) if not quick else 4, repeats=1 if quick else 3)
    e2e = end_to_end(e2e_runs, clients, rounds, round_runs, long_rounds, pauses)
    pr, lr_ = e2e["round"]["plain"], e2e["round"]["ledger"]
    pt, lt = e2e["run"]["plain"], e2e["run"]["ledger"]
    (wp, cp), (wl, cl) = w["plain"], w["ledger"]
    results += [
        Result("e2e_round", "end to end, per round (mean" + (", poll phase randomized)"
                                                             if pauses else ")"), lr_, "s", pr,
               "plain FedAvg + no mods", lr_ / pr, "≤ 1.05× (5% overhead)",
               None if quick else lr_ <= 1.05 * pr),
        Result("e2e_run", "end to end, the README's run (engine start-up included)", lt, "s",
               pt,
               "plain FedAvg + no mods", lt / pt, "≤ 1.05× (5% overhead)",
               None if quick else lt <= 1.05 * pt),
        Result("work_round_added", "work added per round, no engine (server + clients)",
               (wl - wp) * 1e3, "ms"),
        Result("work_share", "… as a share of the plain round under the engine",
               (wl - wp) / pr * 100, "%", None, None, None,
               "≤ 5% (clients' work counted as if serial)",
               None if quick else (wl - wp) <= 0.05 * pr),
        Result("work_server_added", "… of which the server (wrapper)",
               ((wl - cl) - (wp - cp)) * 1e3, "ms"),
        Result("work_client_added_per_message", "… of which signing_mod, per message",
               (cl - cp) / (2 * clients) * 1e3, "ms"),
    ]
    (rlo, rhi), (tlo, thi) = e2e["round_ci"], e2e["run_ci"]
    report("flower", results, as_json=as_json, quick=quick,
           params={"replies": replies, "params_per_reply": agg["params"],
                   "reply_bytes": agg["nbytes"], "runs": runs, "e2e_runs": e2e_runs,
                   "rounds": rounds, "round_runs": round_runs, "long_rounds": long_rounds,
                   "clients": clients, "pauses": pauses, "cpus": os.cpu_count()},
           notes=[f"aggregation: medians of {runs} runs over {replies} replies of "
                  f"{agg['params']:,} float32 parameters ({agg['nbytes'] / 1e6:.1f} MB in all)",
                  f"end to end: {clients} clients; {e2e_runs} README runs ({rounds} rounds) of "
                  f"each kind: {pt:.2f} s plain vs {lt:.2f} s (ratio 95% CI {tlo:.3f}–"
                  f"{thi:.3f}); {e2e['rounds_timed']} rounds of each kind timed: "
                  f"{pr * 1e3:.0f} ms plain vs {lr_ * 1e3:.0f} ms (95% CI {rlo:.3f}–{rhi:.3f})",
                  "a round takes a whole number of the in-memory grid's 0.1 s reply polls; "
                  "each send waits a random pause (stratified over 0-0.1 s, excluded from the "
                  "times) so that the work, not the engine's poll phase, decides "
                  "that number; the no-engine rows give the work itself",
                  f"no engine: plain {wp * 1e3:.1f} ms a round ({cp * 1e3:.1f} in clients), "
                  f"ledger {wl * 1e3:.1f} ms ({cl * 1e3:.1f} in clients)",
                  *(f"run again after failed replies: {d}" for d in e2e["discarded"])])


if __name__ == "__main__":
    main()

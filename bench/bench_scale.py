"""Rounds of 1,000 clients: what the plugin adds to a round of examples/flower-app.

The app's own task (generated data, a tiny torch MLP, 5 local steps, every client trains
and evaluates) with the app's own pieces: its ClientApp (signing_mod outermost) against
the same handlers without mods, and its `strategy(run_config)` (FedAvg in LedgerStrategy,
ledger on) against the same FedAvg alone.

1. No engine: the ServerApp's strategy on a Grid that hands every Message to the ClientApp
   in this process, so a round's time is its work (server and clients), free of the
   engine's polls; rounds 2.. (round 1 creates the clients' keys), median per run, both
   kinds alternated. The plugin's added work per round is the difference.
2. Flower's simulation engine (`run_simulation`, Ray) with the same number of virtual
   clients, plain: the round the added work is a share of (target: at most 5%).

    python bench/bench_scale.py             # 1,000 clients (several minutes on 2 cores)
    python bench/bench_scale.py --quick     # 10 clients, no engine run: a smoke run
"""

from __future__ import annotations

import itertools
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import click
import tomllib
from bench_flower import as_server_app, empty_run
from run_all import Result, report

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "flower-app"
RUN_ID = 4242


def app_modules() -> tuple[Any, Any]:
    """examples/flower-app's server_app and client_app modules (shipped to Ray by value)."""
    sys.path.insert(0, str(APP))
    from flchain_app import client_app, server_app, task
    from ray import cloudpickle

    for mod in (task, client_app, server_app):
        cloudpickle.register_pickle_by_value(mod)
    return server_app, client_app


def run_config(data_dir: Path, rounds: int, clients: int) -> dict[str, Any]:
    """The app's `[tool.flwr.app.config]`, as Flower gives it to both apps."""
    with open(APP / "pyproject.toml", "rb") as f:
        cfg = dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"])
    cfg.update({"data-dir": str(data_dir), "num-server-rounds": rounds, "min-nodes": clients})
    return cfg


def plain_client(client_app: Any, mods: list[Any] | None = None) -> Any:
    """The app's ClientApp without the plugin: the same handlers, no flchain mod."""
    from flwr.clientapp import ClientApp

    plain = ClientApp(mods=mods)
    plain.train()(client_app.fit)
    plain.evaluate()(client_app.check)
    return plain


def strategies(server_app: Any, cfg: dict[str, Any], ledger: bool) -> Any:
    from flwr.serverapp.strategy import FedAvg

    if ledger:
        return server_app.strategy(cfg)
    return FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_available_nodes=cfg["min-nodes"],
                  min_train_nodes=cfg["min-nodes"], min_evaluate_nodes=cfg["min-nodes"])


class DirectGrid:
    """A Grid handing each Message straight to the ClientApp (each node its own Context):
    a round's work without the engine's polls and transport."""

    def __init__(self, app: Any, clients: int, cfg: dict[str, Any]) -> None:
        from flwr.app import Context, RecordDict

        self.app = app
        self.ctx = {1000 + i: Context(run_id=RUN_ID, node_id=1000 + i, state=RecordDict(),
                                      node_config={"partition-id": i, "num-partitions": clients},
                                      run_config=dict(cfg)) for i in range(clients)}

    @property
    def run(self) -> Any:
        return empty_run(RUN_ID)

    def get_node_ids(self) -> list[int]:
        return list(self.ctx)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Any]:
        out = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            reply = self.app(m, self.ctx[m.metadata.dst_node_id])
            reply.metadata.__dict__["_src_node_id"] = m.metadata.dst_node_id
            out.append(reply)
        return out


def timed_rounds(strategy: Any, grid: Any, initial: Any, rounds: int) -> list[float]:
    """Seconds of each round (train, evaluate, central evaluation) of `strategy.start`."""
    from flwr.app import MetricRecord

    marks: list[float] = []

    def central(rnd: int, arrays: Any) -> MetricRecord:
        marks.append(time.perf_counter())
        return MetricRecord({})

    fn = strategy.evaluate_fn(central) if hasattr(strategy, "evaluate_fn") else central
    result = strategy.start(grid, initial, num_rounds=rounds, evaluate_fn=fn)
    if hasattr(strategy, "ledger"):
        with strategy.ledger as led:
            refused = sum(1 for _ in led.iter_entries(type="rejected"))
        if refused:
            sys.exit(f"the ledger run refused {refused} replies: its times would measure "
                     "the wrong thing")
    del result
    return [b - a for a, b in itertools.pairwise(marks)]


def no_engine(clients: int, rounds: int, repeats: int) -> dict[str, float]:
    """Median round seconds of rounds 2.. per run, median over runs, per kind (the
    kinds alternate, in turn first, after a warm-up run of each)."""
    import torch
    from flwr.app import ArrayRecord

    torch.set_num_threads(1)
    as_server_app(RUN_ID)
    server_app, client_app = app_modules()
    from flchain_app.task import model

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))

    def one(kind: str, name: str, n: int, rounds: int) -> list[float]:
        cfg = run_config(tmp / name, rounds, n)
        app = client_app.app if kind == "ledger" else plain_client(client_app)
        return timed_rounds(strategies(server_app, cfg, kind == "ledger"),
                            DirectGrid(app, n, cfg), ArrayRecord(model().state_dict()), rounds)

    for kind in ("plain", "ledger"):  # warm-up: imports, torch and numpy paths, caches
        one(kind, f"warm-{kind}", 10, 2)
    got: dict[str, list[float]] = {"plain": [], "ledger": []}
    for i in range(repeats):
        for kind in ("plain", "ledger") if i % 2 == 0 else ("ledger", "plain"):
            times = one(kind, f"{kind}-{i}", clients, rounds)
            got[kind].append(statistics.median(times[1:]))
            print(f"bench_scale: {kind} run {i}: rounds {[round(t, 2) for t in times]} s",
                  file=sys.stderr, flush=True)
    return {k: statistics.median(v) for k, v in got.items()}


def engine_round(clients: int, rounds: int) -> float:
    """Median round seconds (rounds 2..) of the plain app under `run_simulation`."""
    from flwr.app import ArrayRecord, Context, MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    server_app, client_app = app_modules()
    from flchain_app.task import model

    cfg = run_config(Path(tempfile.mkdtemp(prefix="bench-scale-engine-")), rounds, clients)
    marks: list[float] = []
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        def central(rnd: int, arrays: Any) -> MetricRecord:
            marks.append(time.perf_counter())
            return MetricRecord({})

        strategies(server_app, cfg, False).start(grid, ArrayRecord(model().state_dict()),
                                                 num_rounds=rounds, evaluate_fn=central)

    def with_config(msg: Any, ctx: Any, call_next: Any) -> Any:
        """run_simulation gives every ClientApp an empty (and read-only) run_config: the
        handlers get a Context holding the app's."""
        return call_next(msg, Context(run_id=ctx.run_id, node_id=ctx.node_id,
                                      node_config=ctx.node_config, state=ctx.state,
                                      run_config=dict(cfg)))

    plain = plain_client(client_app, [with_config])
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"logging_level": logging.ERROR, "log_to_driver": False,
                             "include_dashboard": False}}
    run_simulation(server_app=server, client_app=plain, num_supernodes=clients,
                   backend_config=backend)
    times = [b - a for a, b in itertools.pairwise(marks)]
    print(f"bench_scale: engine rounds {[round(t, 2) for t in times]} s", file=sys.stderr,
          flush=True)
    return statistics.median(times[1:])


@click.command()
@click.option("--clients", default=1000, show_default=True, help="Clients per round.")
@click.option("--rounds", default=4, show_default=True, help="Rounds per run.")
@click.option("--repeats", default=3, show_default=True, help="No-engine runs of each kind.")
@click.option("--engine/--no-engine", default=True, show_default=True,
              help="Also time the plain round on Flower's simulation engine.")
@click.option("--quick", is_flag=True, help="10 clients, no engine: a smoke run.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def main(clients: int, rounds: int, repeats: int, engine: bool, quick: bool,
         as_json: bool) -> None:
    """The plugin's added work per round of examples/flower-app at 1,000 clients."""
    warnings.filterwarnings("ignore")
    logging.getLogger("flwr").setLevel(logging.ERROR)
    if quick:
        clients, rounds, repeats, engine = 10, 3, 1, False
    w = no_engine(clients, rounds, repeats)
    added = w["ledger"] - w["plain"]
    results = [
        Result("scale_round_plain", f"plain round, no engine ({clients} clients)",
               w["plain"], "s"),
        Result("scale_round_ledger", "… with LedgerStrategy and signing_mod", w["ledger"], "s",
               w["plain"], "plain round, no engine", w["plain"] / w["ledger"]),
        Result("scale_added_per_round", "work the plugin adds per round (server + clients)",
               added * 1e3, "ms"),
        Result("scale_added_per_client", "… per client (train + evaluate)",
               added / clients * 1e3, "ms"),
        Result("scale_share_no_engine", "… as a share of the plain round's work",
               added / w["plain"] * 100, "%"),
    ]
    notes = [f"no engine: {repeats} run(s) of {rounds} rounds of each kind, median of rounds "
             f"2.. per run; plain {w['plain']:.2f} s, ledger {w['ledger']:.2f} s a round"]
    if engine:
        e = engine_round(clients, rounds)
        results.append(Result(
            "scale_share", "… as a share of the plain round on the simulation engine",
            added / e * 100, "%", None, None, None, "≤ 5%", None if quick else added <= 0.05 * e))
        notes.append(f"simulation engine: plain round {e:.2f} s ({clients} virtual clients, "
                     "Ray, rounds 2..)")
    report("scale", results, as_json=as_json, quick=quick,
           params={"clients": clients, "rounds": rounds, "repeats": repeats, "engine": engine,
                   "cpus": os.cpu_count()}, notes=notes)


if __name__ == "__main__":
    main()

"""A real Flower run on a verifiable ledger, then `flchain verify` and `flchain lineage`.

    python examples/federated_demo.py --out runs/demo

Six simulated SuperNodes (Flower's simulation engine: a ServerApp and ClientApps exchanging
Messages) train a small torch MLP on scikit-learn's bundled breast-cancer dataset, split
across them. The last client is adversarial and tries a different attack each round: it
replays an old update, alters its update after signing it, sends NaNs, and sends a boosted
(model-poisoning) update. The server's strategy is Flower's FedAvg wrapped in one line:

    strategy = LedgerStrategy(FedAvg(...), ledger=out / "ledger.db", policy=Policy(...))

and every ClientApp signs its updates with `signing_mod`. Every reply is hashed, checked
and committed to the SQLite ledger in `--out`, one batch per round, with a signed
checkpoint; the attacks are refused with their reason codes and the honest updates are
aggregated. The policy only allow-lists the clients' keys: the norm bound that refuses the
boosted update is the default one, 5 x the median of the round's update norms. The script
then verifies the ledger, prints the final model's lineage, and ends by writing the audit
report (`flchain report`: one self-contained HTML page) and printing its path.

With `--witness URL VKEY` (repeated) and `--quorum K`, every checkpoint must be cosigned by
K of those witnesses (`flchain witness serve`) before its model is announced, and every
client checks the cosignatures; fewer than K stops the run with one line saying which
witness did not cosign and why.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_breast_cancer

from flchain_plugin import entries as E
from flchain_plugin.blobs import BlobStore, default_root
from flchain_plugin.datasets import dataset_commitment, example_bytes
from flchain_plugin.flower import LedgerStrategy, Policy, client_verifier_keys, signing_mod
from flchain_plugin.flower.keys import ledger_key
from flchain_plugin.ledger import Ledger
from flchain_plugin.lineage import lineage
from flchain_plugin.quorum import QuorumError, Witnesses
from flchain_plugin.report import build_report
from flchain_plugin.report_html import render

SEED = 7
LOCAL_STEPS = 25
LR = 0.05
BOOST = 10.0  # model replacement: the update scaled by 10, refused by the default norm bound
ATTACKS = {2: "replay", 3: "alter after signing", 4: "NaN weights", 5: "boosted update"}


# -- the task: data, model, training -------------------------------------------------------


def dataset(partition: int, partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """This client's share of the standardised training split; partition -1 is the test set."""
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(SEED).permutation(len(x))
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    n_test = len(x) // 5
    mean, std = x[n_test:].mean(0), x[n_test:].std(0) + 1e-6
    x = (x - mean) / std
    if partition < 0:
        return x[:n_test], y[:n_test]
    xs, ys = x[n_test:], y[n_test:]
    return xs[partition::partitions], ys[partition::partitions]


def model() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return torch.nn.Sequential(torch.nn.Linear(30, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))


def train(net: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss = torch.tensor(0.0)
    for _ in range(LOCAL_STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        opt.step()
    return float(loss)


def evaluate(net: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    with torch.no_grad():
        out = net(torch.from_numpy(x))
        loss = float(torch.nn.functional.cross_entropy(out, torch.from_numpy(y)))
        acc = float((out.argmax(1).numpy() == y).mean())
    return loss, acc


def received(msg: Message, ctx: Context) -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    """The global model a client was sent, loaded, and the client's own partition."""
    torch.set_num_threads(1)
    pid, n = int(ctx.node_config["partition-id"]), int(ctx.node_config["num-partitions"])
    net = model()
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return (net, *dataset(pid, n))


# -- the ClientApp ---------------------------------------------------------------------------


def make_client_app(keys: Path, server_vkey: str, attacks: bool = True,
                    witness_keys: tuple[str, ...] = (), quorum: int | None = None) -> ClientApp:
    def commitment(ctx: Context) -> str:
        """The client's salted commitment to its data (the salt stays with the client)."""
        x, y = dataset(int(ctx.node_config["partition-id"]), int(ctx.node_config["num-partitions"]))
        salt_file = keys / f"salt-{ctx.node_config['partition-id']}.bin"
        if not salt_file.exists():
            keys.mkdir(parents=True, exist_ok=True)
            salt_file.write_bytes(os.urandom(32))
        return dataset_commitment(example_bytes(x, y), salt_file.read_bytes())

    signer = signing_mod(keys, server_key=server_vkey, dataset=commitment,
                         witness_keys=witness_keys, quorum=quorum)

    def adversary(msg: Message, ctx: Context, call_next: Any) -> Message:
        """The last client: a different attack each round, outside its signing mod."""
        pid, n = int(ctx.node_config["partition-id"]), int(ctx.node_config["num-partitions"])
        if not attacks or pid != n - 1 or msg.metadata.message_type != "train":
            return signer(msg, ctx, call_next)
        rnd = int(msg.content["config"]["server-round"])
        attack = ATTACKS.get(rnd)
        if attack == "replay":  # re-send (freshly signed) the update it sent in round 1
            def replayed(m: Message, c: Context) -> Message:
                return Message(RecordDict({"arrays": c.state["round-1"],
                                           "metrics": MetricRecord({"num-examples": 90})}),
                               reply_to=m)
            return signer(msg, ctx, replayed)
        reply = signer(msg, ctx, call_next)
        if reply.has_error():
            return reply
        arrays = reply.content["arrays"]
        if rnd == 1:
            ctx.state["round-1"] = arrays
        elif attack == "alter after signing":
            sd = arrays.to_torch_state_dict()
            sd["2.bias"] += 1.0
            reply.content["arrays"] = ArrayRecord(sd)
        return reply

    app = ClientApp(mods=[adversary])

    @app.train()
    def fit(msg: Message, ctx: Context) -> Message:
        net, x, y = received(msg, ctx)
        loss = train(net, x, y)
        sd = net.state_dict()
        rnd = int(msg.content["config"]["server-round"])
        pid, n = int(ctx.node_config["partition-id"]), int(ctx.node_config["num-partitions"])
        attacker = attacks and pid == n - 1
        if attacker and ATTACKS.get(rnd) == "NaN weights":
            sd["0.weight"][0, 0] = float("nan")
        if attacker and ATTACKS.get(rnd) == "boosted update":
            start = msg.content["arrays"].to_torch_state_dict()
            sd = {k: start[k] + BOOST * (v - start[k]) for k, v in sd.items()}
        return Message(RecordDict({"arrays": ArrayRecord(sd),
                                   "metrics": MetricRecord({"train_loss": loss,
                                                            "num-examples": len(x)})}),
                       reply_to=msg)

    @app.evaluate()
    def evaluate_local(msg: Message, ctx: Context) -> Message:
        net, x, y = received(msg, ctx)
        loss, acc = evaluate(net, x, y)
        return Message(RecordDict({"metrics": MetricRecord(
            {"eval_loss": loss, "eval_acc": acc, "num-examples": len(x)})}), reply_to=msg)

    return app


# -- the ServerApp ---------------------------------------------------------------------------


def make_server_app(ledger_path: Path, rounds: int, clients: int, allowed: list[str],
                    result: dict[str, Any], witnesses: tuple[tuple[str, str], ...] = (),
                    quorum: int | None = None) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.set_num_threads(1)
        x_test, y_test = dataset(-1, clients)
        strategy = LedgerStrategy(  # the one-line change
            FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_available_nodes=clients),
            ledger=ledger_path,
            policy=Policy(allowed_keys=frozenset(allowed)),  # default norm bound: 5 x median
            witnesses=list(witnesses) or None, quorum=quorum,
            keep_updates=True,  # every accepted update kept encrypted: the report replays it
        )

        marks: list[float] = []

        def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            marks.append(time.perf_counter())
            net = model()
            net.load_state_dict(arrays.to_torch_state_dict())
            loss, acc = evaluate(net, x_test, y_test)
            return MetricRecord({"test_loss": loss, "test_acc": acc})

        t0 = time.perf_counter()
        strategy.start(grid, ArrayRecord(model().state_dict()), num_rounds=rounds,
                       train_config=ConfigRecord({"lr": LR}),
                       evaluate_fn=strategy.evaluate_fn(central))
        result.update(run=strategy.run_id, model=strategy.global_model,
                      seconds=time.perf_counter() - t0,
                      round_seconds=[b - a for a, b in itertools.pairwise(marks)])

    return app


# -- running and reporting ---------------------------------------------------------------------


def run(out: Path, rounds: int, clients: int, quiet: bool = True,
        witnesses: tuple[tuple[str, str], ...] = (), quorum: int | None = None
        ) -> dict[str, Any]:
    """Run the federation; return the run id, final model digest and wall time."""
    out.mkdir(parents=True, exist_ok=True)
    ledger_path = out / "ledger.db"
    vkey = ledger_key(ledger_path).verifier_key
    keys = out / "keys"
    allowed = client_verifier_keys(keys, clients)
    result: dict[str, Any] = {}
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"logging_level": logging.ERROR, "log_to_driver": not quiet,
                             "include_dashboard": False}}
    try:
        run_simulation(server_app=make_server_app(ledger_path, rounds, clients, allowed, result,
                                                  witnesses, quorum),
                       client_app=make_client_app(keys, vkey, witness_keys=tuple(
                           k for _, k in witnesses), quorum=quorum),
                       num_supernodes=clients, backend_config=backend)
    except QuorumError as e:  # the documented policy: stop, never train unwitnessed
        raise SystemExit(f"flchain: the run stopped: {e}") from None
    if not result:
        raise SystemExit("the Flower run did not finish: see the log above")
    return result


def report(out: Path, result: dict[str, Any], console: Console) -> dict[str, Any]:
    """Print the rounds, `flchain verify` and `flchain lineage` of the final model."""
    ledger_path = out / "ledger.db"
    with Ledger(ledger_path, create=False) as led:
        rounds = Table(title=f"Flower run {result['run']}: what the ledger recorded per round")
        for col in ("round", "accepted updates", "refused (node: reason)", "model", "test acc"):
            rounds.add_column(col)
        by_round: dict[int, dict[str, Any]] = {}
        for le in led.iter_entries():
            e = le.entry
            if getattr(e, "run", None) != result["run"]:
                continue
            if isinstance(e, (E.Update, E.Rejected, E.Model, E.Evaluation)):
                r = by_round.setdefault(e.round, {"acc": [], "ref": [], "model": "", "eval": ""})
                if isinstance(e, E.Update):
                    r["acc"].append(e.node[-4:])
                elif isinstance(e, E.Rejected):
                    r["ref"].append(f"…{e.node[-4:]}: [red]{e.reason}[/red]")
                elif isinstance(e, E.Model):
                    r["model"] = e.model[7:19] + ("" if e.inputs else " (kept)")
                elif e.source == "central":
                    r["eval"] = f"{e.metrics.get('test_acc', 0):.3f}"
        for rnd in sorted(by_round):
            r = by_round[rnd]
            rounds.add_row(str(rnd), ", ".join("…" + a for a in r["acc"]) or "-",
                           "\n".join(r["ref"]) or "-", r["model"], r["eval"])
        console.print(rounds)

        console.rule("flchain verify")
        rep = led.verify()
        verify = Table(show_header=False)
        verify.add_row("ledger", str(ledger_path))
        verify.add_row("entries", str(rep.size))
        verify.add_row("tree heads (batches)", str(rep.heads))
        verify.add_row("root", rep.root.hex())
        verify.add_row("signed checkpoint", "stored" if led.latest_checkpoint() else "none")
        verify.add_row("result", "[green]OK[/green]" if rep.ok else f"[red]{rep.problem}[/red]")
        console.print(verify)

        console.rule(f"flchain lineage {result['model']}")
        lin = lineage(led, result["model"], blobs=BlobStore(default_root(ledger_path)))
        from flchain_plugin.cli.lineage import render_lineage

        render_lineage(lin, console)
        dot = out / "lineage.dot"
        dot.write_text(lin.to_dot())
        (out / "lineage.json").write_text(json.dumps(lin.to_json(), indent=2))
    console.print(f"\nsame from the shell:\n  flchain --ledger {ledger_path} verify\n"
                  f"  flchain --ledger {ledger_path} lineage {result['model']} [--json | --dot]"
                  f"\n(DOT graph written to {dot})")
    return {"ok": rep.ok, "entries": rep.size, "model": result["model"],
            "accepted": len(lin.accepted_updates()), "refused": len(lin.rejections()),
            "seconds": round(result["seconds"], 2),
            "round_seconds": [round(x, 3) for x in result["round_seconds"]]}


def audit_report(out: Path, console: Console) -> Path:
    """The whole story in one page: what `flchain report` writes, for the demo's ledger."""
    ledger_path = out / "ledger.db"
    with Ledger(ledger_path, create=False) as led:
        doc = build_report(led, blobs=BlobStore(default_root(ledger_path)),
                           path=str(ledger_path)).to_json()
    page = out / "report.html"
    page.write_text(render(doc), encoding="utf-8")
    console.rule("flchain report")
    console.print(f"same from the shell: flchain --ledger {ledger_path} report --out {page}")
    console.print(f"[bold]audit report (open it in a browser):[/bold] {page.resolve()}",
                  soft_wrap=True)
    return page


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="where the ledger goes")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--clients", type=int, default=6, help="SuperNodes (>= 5; the last attacks)")
    p.add_argument("--fresh", action="store_true", help="delete an existing ledger in --out first")
    p.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    p.add_argument("--json", action="store_true", help="print a JSON summary line at the end")
    p.add_argument("--witness", nargs=2, action="append", default=[], metavar=("URL", "VKEY"),
                   help="a witness that must cosign checkpoints (repeat for each)")
    p.add_argument("--quorum", type=int, help="witnesses that must cosign (default: majority)")
    args = p.parse_args(argv)
    if args.clients < 5:
        p.error("--clients must be at least 5")
    if args.witness or args.quorum is not None:
        try:  # the same checks LedgerStrategy makes, before anything starts
            Witnesses(tuple((u, k) for u, k in args.witness),
                      args.quorum or len(args.witness) // 2 + 1)
        except ValueError as e:
            p.error(f"--witness/--quorum: {e}")
    if not args.verbose:
        warnings.filterwarnings("ignore")
        logging.getLogger("flwr").setLevel(logging.ERROR)
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if args.fresh and args.out.exists():
        for f in ("ledger.db", "ledger.db-wal", "ledger.db-shm"):
            (args.out / f).unlink(missing_ok=True)
    console = Console()
    console.rule(f"Flower simulation: {args.clients} clients, {args.rounds} rounds "
                 f"(client {args.clients - 1} is adversarial)")
    result = run(args.out, args.rounds, args.clients, quiet=not args.verbose,
                 witnesses=tuple((u, k) for u, k in args.witness), quorum=args.quorum)
    summary = report(args.out, result, console)
    summary["report"] = str(audit_report(args.out, console).resolve())
    if args.json:
        print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Case study: five banks train a fraud detector; one of them poisons it.

    python examples/finance/banks.py --out runs/finance           # a few minutes
    python examples/finance/banks.py --out runs/finance --smoke   # fewer rounds

Five banks of different sizes hold generated card transactions (scikit-learn's
`make_classification`: 20 features, about 8% fraud) and train a small torch fraud
classifier with Flower; the server's FedAvg is wrapped in `LedgerStrategy`, every bank
signs its updates with a key named after it. One bank, `ember-bank`, is hostile: it trains
on its transactions with the fraud labels flipped to "legitimate" in every round (label
flipping: fraud of its kind should pass), and in round `--boost-round` it also scales its
update by 10 to replace the global model (boosting). The script shows what the ledger
recorded: the boosted update refused as `out_of_bounds` by the default norm bound, the
label-flipped updates accepted (they are as small as honest ones: no norm bound can see
them), the fraud recall of each round's model on the consortium's held-out test set, and
ends with the audit of the ledger.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Mapping
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
from sklearn.datasets import make_classification

from flchain_plugin import entries as E
from flchain_plugin.blobs import BlobStore, default_root
from flchain_plugin.commit import load_or_create_key
from flchain_plugin.contracts import (
    Contracts,
    Penalties,
    Quality,
    Quantity,
    Validation,
    balances,
    replay_credits,
)
from flchain_plugin.datasets import dataset_commitment, example_bytes
from flchain_plugin.flower import LedgerStrategy, Policy, signing_mod
from flchain_plugin.flower.keys import ledger_key
from flchain_plugin.ledger import Ledger
from flchain_plugin.notes import Signer

SEED = 5
# Bank name and its share of the transactions.
BANKS = (("aurora-bank", 0.28), ("bayside-credit", 0.24), ("crest-savings", 0.20),
         ("delta-trust", 0.16), ("ember-bank", 0.12))
POISONER = "ember-bank"
BOOST = 10.0  # model replacement: the update scaled by 10
TRANSACTIONS = 6000
LOCAL_STEPS, LR = 20, 0.1
FRAUD_WEIGHT = 4.0  # fraud is rare: the loss weighs it up, as a fraud team would


# -- the task -----------------------------------------------------------------------------


def transactions() -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    """Each bank's labelled transactions and the consortium's held-out set (half of it
    validates credits, half tests): one generated population (the same fraud patterns
    everywhere), split by bank size."""
    x, y = make_classification(n_samples=TRANSACTIONS, n_features=20, n_informative=8,
                               n_redundant=4, weights=[0.92, 0.08], class_sep=1.0,
                               flip_y=0.01, random_state=SEED)
    x, y = x.astype(np.float32), y.astype(np.int64)
    n_test = len(x) // 5
    test, pool = (x[:n_test], y[:n_test]), (x[n_test:], y[n_test:])
    cuts = np.cumsum([0] + [round(s * len(pool[0])) for _, s in BANKS])
    cuts[-1] = len(pool[0])
    banks = [(pool[0][a:b], pool[1][a:b]) for a, b in itertools.pairwise(cuts)]
    return banks, test


def model() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def train(net: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    weight = torch.tensor([1.0, FRAUD_WEIGHT])
    loss = torch.tensor(0.0)
    for _ in range(LOCAL_STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xt), yt, weight=weight)
        loss.backward()
        opt.step()
    return float(loss)


def loaded(arrays: Mapping[str, Any]) -> torch.nn.Module:
    net = model()
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()})
    return net


def held_out(part: str) -> tuple[np.ndarray, np.ndarray]:
    """The consortium's held-out transactions: "validation" (credits) or "test" (scores)."""
    x, y = transactions()[1]
    half = len(x) // 2
    return (x[:half], y[:half]) if part == "validation" else (x[half:], y[half:])


def minus_loss(arrays: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> float:
    """The credit metric (higher is better): minus the fraud-weighted loss on `data`."""
    with torch.no_grad():
        out = loaded(arrays)(torch.from_numpy(data["x"]))
        return -float(torch.nn.functional.cross_entropy(
            out, torch.from_numpy(data["y"]), weight=torch.tensor([1.0, FRAUD_WEIGHT])))


def validation() -> Validation:
    """The consortium's validation set and metric: what the quality rule values updates
    by. Its digest goes into the run entry; `flchain credits --replay --validation
    banks:validation` rebuilds it (run with PYTHONPATH=examples/finance)."""
    x, y = held_out("validation")
    return Validation({"x": x, "y": y}, minus_loss)


def contracts() -> Contracts:
    """Who helped, paid in tokens: 1,000 a round, 3 parts by quality (GTG-Shapley value of
    the update's reduction of the validation loss; nothing for making it worse), 1 part by
    examples; a refused update forfeits the next rounds' awards (the default penalties)."""
    return Contracts([(Quality(validation()), 3), (Quantity(), 1), Penalties()], budget=1000)


def scores(net: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Fraud recall (fraud caught), precision, and accuracy on labelled transactions."""
    with torch.no_grad():
        pred = net(torch.from_numpy(x)).argmax(1).numpy()
    caught = float(((pred == 1) & (y == 1)).sum())
    return {"fraud_recall": caught / max(1, int((y == 1).sum())),
            "fraud_precision": caught / max(1, int((pred == 1).sum())),
            "accuracy": float((pred == y).mean())}


# -- the federation -------------------------------------------------------------------------


def bank_key(keys: Path, bank: int) -> Signer:
    """A bank's signing key, named after it: its name is in every update it signs."""
    name = BANKS[bank][0]
    return load_or_create_key(keys / f"{name}.key", name)


def make_client_app(keys: Path, server_vkey: str, boost_round: int) -> ClientApp:
    def key(ctx: Context) -> Signer:
        return bank_key(keys, int(ctx.node_config["partition-id"]))

    def commitment(ctx: Context) -> str:
        """A salted commitment to the bank's transactions (the salt stays at the bank)."""
        pid = int(ctx.node_config["partition-id"])
        salt = keys / f"{BANKS[pid][0]}.salt"
        if not salt.exists():
            salt.write_bytes(os.urandom(32))
        return dataset_commitment(example_bytes(*transactions()[0][pid]), salt.read_bytes())

    app = ClientApp(mods=[signing_mod(key, server_key=server_vkey, dataset=commitment)])

    @app.train()
    def fit(msg: Message, ctx: Context) -> Message:
        torch.set_num_threads(1)
        pid = int(ctx.node_config["partition-id"])
        x, y = transactions()[0][pid]
        hostile = BANKS[pid][0] == POISONER
        if hostile:
            y = np.zeros_like(y)  # label flipping: every fraud taught as legitimate
        net = model()
        net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        loss = train(net, x, y)
        sd = net.state_dict()
        if hostile and int(msg.content["config"]["server-round"]) == boost_round:
            start = msg.content["arrays"].to_torch_state_dict()
            sd = {k: start[k] + BOOST * (v - start[k]) for k, v in sd.items()}
        return Message(RecordDict({"arrays": ArrayRecord(sd), "metrics": MetricRecord(
            {"num-examples": len(x), "train_loss": loss})}), reply_to=msg)

    return app


def make_server_app(ledger: Path, rounds: int, allowed: list[str],
                    result: dict[str, Any]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.set_num_threads(1)
        x, y = held_out("test")
        strategy = LedgerStrategy(
            FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=len(BANKS)),
            ledger=ledger, policy=Policy(allowed_keys=frozenset(allowed)),  # default norm bound
            contracts=contracts(),
            keep_updates=True,  # encrypted update blobs: the report replays every round
        )

        def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            net = model()
            net.load_state_dict(arrays.to_torch_state_dict())
            return MetricRecord(scores(net, x, y))

        strategy.start(grid, ArrayRecord(model().state_dict()), num_rounds=rounds,
                       train_config=ConfigRecord({"lr": LR}),
                       evaluate_fn=strategy.evaluate_fn(central))
        result.update(run=strategy.run_id, model=strategy.global_model)

    return app


def federate(out: Path, rounds: int, boost_round: int, verbose: bool) -> dict[str, Any]:
    """Run the Flower simulation; the run id and the final model's digest."""
    ledger = out / "ledger.db"
    keys = out / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    allowed = [bank_key(keys, i).verifier_key for i in range(len(BANKS))]
    result: dict[str, Any] = {}
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"logging_level": logging.ERROR, "log_to_driver": verbose,
                             "include_dashboard": False}}
    run_simulation(server_app=make_server_app(ledger, rounds, allowed, result),
                   client_app=make_client_app(keys, ledger_key(ledger).verifier_key, boost_round),
                   num_supernodes=len(BANKS), backend_config=backend)
    if not result:
        raise SystemExit("the Flower run did not finish: run again with --verbose")
    return result


# -- what the ledger shows ------------------------------------------------------------------


def partners(led: Ledger, run: str) -> dict[str, str]:
    """Flower node id -> bank, from the run's `member` entries: each node's registered key
    carries the name it signs under."""
    return {le.entry.node: le.entry.key.split("+", 1)[0]
            for le in led.iter_entries(type="member") if le.entry.run == run}


def ledger_view(led: Ledger, run: str) -> dict[int, dict[str, Any]]:
    """Per round: each bank accepted (its signed training loss, its credits by rule) or
    refused (reason), and the round model's scores on the test set, read from the ledger."""
    names = partners(led, run)
    rounds: dict[int, dict[str, Any]] = {}
    for le in led.iter_entries():
        e = le.entry
        if getattr(e, "run", None) != run or not hasattr(e, "round"):
            continue
        r = rounds.setdefault(e.round, {"banks": {}, "test": None})
        if isinstance(e, E.Update):
            r["banks"].setdefault(names.get(e.node, e.node), {"credits": {}}).update(
                accepted=True, loss=e.metrics["train_loss"])
        elif isinstance(e, E.Rejected):
            r["banks"].setdefault(names.get(e.node, e.node), {"credits": {}}).update(
                accepted=False, reason=e.reason, detail=e.detail)
        elif isinstance(e, E.Credit):
            got = r["banks"].setdefault(names.get(e.node, e.node), {"credits": {}})["credits"]
            got[e.rule] = got.get(e.rule, 0) + e.amount
        elif isinstance(e, E.Evaluation) and e.source == "central":
            r["test"] = dict(e.metrics)
    return dict(sorted(rounds.items()))


def show_rounds(view: dict[int, dict[str, Any]], console: Console) -> None:
    t = Table(title="What the ledger recorded per round: each bank's signed training loss "
                    "and credits (tokens), or its refusal; the model's scores on the test set")
    t.add_column("round")
    for name, _ in BANKS:
        t.add_column(name + (" (hostile)" if name == POISONER else ""))
    t.add_column("fraud recall / precision")
    for rnd, r in view.items():
        cells = []
        for name, _ in BANKS:
            b = r["banks"].get(name)
            if b is None:
                cells.append("-")
            elif b["accepted"]:
                cells.append(f"{b['loss']:.3f} · {sum(b['credits'].values())} tok")
            else:
                cells.append(f"[red]refused: {b['reason']}[/red]")
        s = r["test"]
        t.add_row(str(rnd), *cells,
                  "-" if s is None else f"{s['fraud_recall']:.3f} / {s['fraud_precision']:.3f}")
    console.print(t)
    for rnd, r in view.items():
        for name, b in r["banks"].items():
            if b.get("accepted") is False:
                console.print(f"round {rnd}, {name} refused: {b['reason']}: {b['detail']}",
                              markup=False)


def credit_totals(led: Ledger, run: str, view: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Each bank's tokens over the run, by rule, and the ledger's `balances`."""
    names = partners(led, run)
    by_rule: dict[str, dict[str, int]] = {name: {} for name, _ in BANKS}
    for r in view.values():
        for name, b in r["banks"].items():
            for rule, amount in b["credits"].items():
                by_rule[name][rule] = by_rule[name].get(rule, 0) + amount
    return {"by_rule": by_rule,
            "balances": {names.get(node, node): v for node, v in balances(led, run).items()}}


def show_credits(totals: dict[str, Any], replayed: Any, console: Console) -> None:
    t = Table(title="Who helped: credits over the run (flchain_plugin.contracts.balances)")
    for col in ("bank", "quality (GTG-Shapley)", "quantity", "total"):
        t.add_column(col)
    for name, _ in BANKS:
        rules = totals["by_rule"][name]
        quality = sum(v for k, v in rules.items() if k.startswith("quality"))
        t.add_row(name, str(quality), str(rules.get("quantity", 0)),
                  str(totals["balances"].get(name, 0)))
    console.print(t)
    console.print(f"credits replayed from the ledger, the stored updates and the validation "
                  f"set: {replayed.rounds} rounds, {replayed.credits} credit entries, "
                  + ("[green]every award reproduced[/green]" if replayed.ok else
                     f"[red]{replayed.differences[0]}[/red]")
                  + "\nthe same from the shell: PYTHONPATH=examples/finance flchain --ledger "
                    "LEDGER credits --replay --validation banks:validation", highlight=False)


# -- the audit -------------------------------------------------------------------------------


def flchain(ledger: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flchain_plugin.cli", "--ledger", str(ledger),
                           *args], capture_output=True, text=True, check=False)


def audit(out: Path, run: str, final: str, console: Console) -> bool:
    """The auditor's view, as the `flchain` command prints it: the final model's lineage
    (node ids named by the banks' registered keys), then the audit report (`flchain
    report`, which verifies the whole ledger first and lists the credits)."""
    ledger = out / "ledger.db"
    with Ledger(ledger, create=False) as led:
        names = partners(led, run)
    console.print("nodes in this run (from its `member` entries): " + ", ".join(
        f"…{node[-6:]} = {name}" for node, name in sorted(names.items(), key=lambda kv: kv[1])))
    ok = True
    report = str(out / "report.html")
    for args in (("lineage", final), ("report", "--out", report, "--model", final)):
        console.rule("flchain " + " ".join(a[:19] for a in args))
        proc = flchain(ledger, *args)
        console.print(proc.stdout + proc.stderr, highlight=False, markup=False)
        ok = ok and proc.returncode == 0
    console.print(f"the audit report: {report}", highlight=False)
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/finance"))
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--boost-round", type=int, default=4, help="round of the boosted update")
    p.add_argument("--smoke", action="store_true", help="3 rounds, boosted in round 2")
    p.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    p.add_argument("--json", action="store_true", help="print a JSON summary line at the end")
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds, args.boost_round = 3, 2
    if args.rounds < 1 or args.boost_round < 1:
        p.error("--rounds and --boost-round must be at least 1")
    if (args.out / "ledger.db").exists():
        p.error(f"{args.out} already holds a ledger: give a new --out")
    if not args.verbose:
        warnings.filterwarnings("ignore")
        logging.getLogger("flwr").setLevel(logging.ERROR)
    console = Console(width=shutil.get_terminal_size((120, 40)).columns)
    console.rule(f"{len(BANKS)} banks, {args.rounds} rounds; {POISONER} flips its fraud labels"
                 f" and boosts its update in round {args.boost_round}")
    result = federate(args.out, args.rounds, args.boost_round, args.verbose)
    with Ledger(args.out / "ledger.db", create=False) as led:
        view = ledger_view(led, result["run"])
        totals = credit_totals(led, result["run"], view)
        replayed = replay_credits(led, BlobStore(default_root(args.out / "ledger.db")),
                                  validation=validation())
    show_rounds(view, console)
    show_credits(totals, replayed, console)
    ok = replayed.ok and audit(args.out, result["run"], result["model"], console)
    if args.json:
        print(json.dumps({"ok": ok, "report": str(args.out / "report.html"),
                          "run": result["run"], "model": result["model"],
                          "rounds": view, "credits": totals, "replay": replayed.to_json()}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Case study: four hospitals train a breast-cancer classifier; one hospital's data drifts.

    python examples/healthcare/hospitals.py --out runs/healthcare          # a few minutes
    python examples/healthcare/hospitals.py --out runs/healthcare --smoke  # fewer rounds

Four hospitals of different sizes hold shares of scikit-learn's breast-cancer data (569
biopsies, 30 features) and train a small torch classifier with Flower; the server's
FedAvg is wrapped in `LedgerStrategy`, every hospital signs its updates with a key named
after it (`signing_mod`). From round `--drift-from` on, the smallest hospital's new
scanner reports the size features (radius, perimeter, area) 60% larger than before: a
covariate drift nobody announced. The script shows what the ledger recorded about it
(each hospital's signed metrics, its update norm, refusals by the default norm bound, or
none), then registers the final model in MLflow through the `flchain+sqlite://` store
on the same ledger, loads it back verified against the ledger with the log's key pinned,
and ends with the audit of the ledger.
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
from flchain_plugin.commit import load_or_create_key
from flchain_plugin.datasets import dataset_commitment, example_bytes
from flchain_plugin.digest import model_digest
from flchain_plugin.flower import LedgerStrategy, Policy, signing_mod
from flchain_plugin.flower.keys import ledger_key
from flchain_plugin.ledger import Ledger
from flchain_plugin.notes import Signer

SEED = 11
# Hospital name and its share of the training pool: different sizes, as in a real network.
HOSPITALS = (("st-anne", 0.40), ("riverside", 0.27), ("northgate", 0.18), ("lakeview", 0.15))
DRIFTING = "lakeview"
SIZE_FEATURES = [0, 2, 3, 20, 22, 23]  # mean and worst radius, perimeter, area
DRIFT_SCALE = 1.6  # the new scanner's calibration error on the size features
LOCAL_STEPS, LR = 20, 0.05
MODEL_NAME = "breast-cancer-triage"


# -- the task -----------------------------------------------------------------------------


def cohorts() -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray],
                       tuple[np.ndarray, np.ndarray]]:
    """Each hospital's raw records, a held-out external validation cohort, and the
    standardisation (mean, std) agreed once from the pool: a preprocessing contract that a
    drifted scanner silently breaks."""
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(SEED).permutation(len(x))
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    n_test = len(x) // 5
    test, pool = (x[:n_test], y[:n_test]), (x[n_test:], y[n_test:])
    cuts = np.cumsum([0] + [round(s * len(pool[0])) for _, s in HOSPITALS])
    cuts[-1] = len(pool[0])
    shares = [(pool[0][a:b], pool[1][a:b]) for a, b in itertools.pairwise(cuts)]
    return shares, test, (pool[0].mean(0), pool[0].std(0) + 1e-6)


def records(hospital: int, server_round: int, drift_from: int) -> tuple[np.ndarray, np.ndarray]:
    """What `hospital` holds in `server_round`, standardised by the agreed contract."""
    shares, _, (mean, std) = cohorts()
    x, y = shares[hospital]
    if HOSPITALS[hospital][0] == DRIFTING and server_round >= drift_from:
        x = x.copy()
        x[:, SIZE_FEATURES] *= DRIFT_SCALE
    return (x - mean) / std, y


def external_cohort() -> tuple[np.ndarray, np.ndarray]:
    _, (x, y), (mean, std) = cohorts()
    return (x - mean) / std, y


def model() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def accuracy(net: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((net(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


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


# -- the federation -------------------------------------------------------------------------


def hospital_key(keys: Path, hospital: int) -> Signer:
    """A hospital's signing key, named after it: its name is in every update it signs."""
    name = HOSPITALS[hospital][0]
    return load_or_create_key(keys / f"{name}.key", name)


def make_client_app(keys: Path, server_vkey: str, drift_from: int) -> ClientApp:
    def key(ctx: Context) -> Signer:
        return hospital_key(keys, int(ctx.node_config["partition-id"]))

    def commitment(ctx: Context) -> str:
        """A salted commitment to the hospital's records (taken once per run)."""
        pid = int(ctx.node_config["partition-id"])
        salt = keys / f"{HOSPITALS[pid][0]}.salt"
        if not salt.exists():
            salt.write_bytes(os.urandom(32))
        return dataset_commitment(example_bytes(*records(pid, 1, drift_from)), salt.read_bytes())

    app = ClientApp(mods=[signing_mod(key, server_key=server_vkey, dataset=commitment)])

    @app.train()
    def fit(msg: Message, ctx: Context) -> Message:
        torch.set_num_threads(1)
        pid = int(ctx.node_config["partition-id"])
        x, y = records(pid, int(msg.content["config"]["server-round"]), drift_from)
        net = model()
        net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        start = {k: v.clone() for k, v in net.state_dict().items()}
        before = accuracy(net, x, y)  # the global model on this hospital's own patients
        loss = train(net, x, y)
        norm = float(torch.sqrt(sum(((v - start[k]) ** 2).sum()
                                    for k, v in net.state_dict().items())))
        metrics = {"num-examples": len(x), "train_loss": loss, "local_acc_before": before,
                   "update_norm": norm}
        return Message(RecordDict({"arrays": ArrayRecord(net.state_dict()),
                                   "metrics": MetricRecord(metrics)}), reply_to=msg)

    return app


def make_server_app(ledger: Path, rounds: int, allowed: list[str],
                    result: dict[str, Any]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.set_num_threads(1)
        x, y = external_cohort()
        strategy = LedgerStrategy(
            FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=len(HOSPITALS)),
            ledger=ledger, policy=Policy(allowed_keys=frozenset(allowed)),  # default norm bound
            keep_updates=True,  # encrypted update blobs: the report replays every round
        )

        def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            net = model()
            net.load_state_dict(arrays.to_torch_state_dict())
            return MetricRecord({"external_acc": accuracy(net, x, y)})

        strategy.start(grid, ArrayRecord(model().state_dict()), num_rounds=rounds,
                       train_config=ConfigRecord({"lr": LR}),
                       evaluate_fn=strategy.evaluate_fn(central))
        result.update(run=strategy.run_id, model=strategy.global_model)

    return app


def federate(out: Path, rounds: int, drift_from: int, verbose: bool) -> dict[str, Any]:
    """Run the Flower simulation; the run id and the final model's digest."""
    ledger = out / "ledger.db"
    keys = out / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    allowed = [hospital_key(keys, i).verifier_key for i in range(len(HOSPITALS))]
    result: dict[str, Any] = {}
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"logging_level": logging.ERROR, "log_to_driver": verbose,
                             "include_dashboard": False}}
    run_simulation(server_app=make_server_app(ledger, rounds, allowed, result),
                   client_app=make_client_app(keys, ledger_key(ledger).verifier_key, drift_from),
                   num_supernodes=len(HOSPITALS), backend_config=backend)
    if not result:
        raise SystemExit("the Flower run did not finish: run again with --verbose")
    return result


# -- what the ledger shows ------------------------------------------------------------------


def partners(led: Ledger, run: str) -> dict[str, str]:
    """Flower node id -> hospital, from the run's `member` entries: each node's registered
    key carries the name it signs under."""
    return {le.entry.node: le.entry.key.split("+", 1)[0]
            for le in led.iter_entries(type="member") if le.entry.run == run}


def ledger_view(led: Ledger, run: str) -> dict[int, dict[str, Any]]:
    """Per round, per hospital: accepted (signed metrics) or refused (reason), and the
    external accuracy of the round's model, all read back from the ledger."""
    names = partners(led, run)
    rounds: dict[int, dict[str, Any]] = {}
    for le in led.iter_entries():
        e = le.entry
        if getattr(e, "run", None) != run or not hasattr(e, "round"):
            continue
        r = rounds.setdefault(e.round, {"hospitals": {}, "external_acc": None})
        if isinstance(e, E.Update):
            r["hospitals"][names[e.node]] = {
                "accepted": True, "norm": e.metrics["update_norm"],
                "acc_before": e.metrics["local_acc_before"], "loss": e.metrics["train_loss"]}
        elif isinstance(e, E.Rejected):
            r["hospitals"][names.get(e.node, e.node)] = {
                "accepted": False, "reason": e.reason, "detail": e.detail}
        elif isinstance(e, E.Evaluation) and e.source == "central":
            r["external_acc"] = e.metrics["external_acc"]
    return dict(sorted(rounds.items()))


def show_rounds(view: dict[int, dict[str, Any]], console: Console) -> None:
    t = Table(title="What the ledger recorded per round: each hospital's signed metrics "
                    "(accuracy of the global model on its own records before training / its "
                    "update's L2 norm over the round's median), refusals, external accuracy")
    t.add_column("round")
    for name, _ in HOSPITALS:
        t.add_column(name + (" (drifts)" if name == DRIFTING else ""))
    t.add_column("external acc")
    for rnd, r in view.items():
        norms = [h["norm"] for h in r["hospitals"].values() if h["accepted"]]
        median = float(np.median(norms)) if norms else 1.0
        cells = []
        for name, _ in HOSPITALS:
            h = r["hospitals"].get(name)
            if h is None:
                cells.append("-")
            elif h["accepted"]:
                cells.append(f"{h['acc_before']:.2f} / {h['norm'] / median:.2f}×")
            else:
                cells.append(f"[red]refused: {h['reason']}[/red]")
        acc = r["external_acc"]
        t.add_row(str(rnd), *cells, "-" if acc is None else f"{acc:.3f}")
    console.print(t)


# -- MLflow: register, then load verified ---------------------------------------------------


def register_and_load(out: Path, final: str, console: Console) -> dict[str, Any]:
    """Log the final global model (its weights from the blob store) to MLflow on the same
    ledger, register it, and load it back verified with the log's verifier key pinned."""
    import mlflow

    from flchain_plugin.mlflow import digest_tags, load_model, verify_model

    ledger = out / "ledger.db"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    mlflow.set_tracking_uri(f"flchain+sqlite:///{out.resolve()}/mlflow.db"
                            f"?flchain_ledger={ledger.resolve()}")
    exp = mlflow.get_experiment_by_name("healthcare")
    exp_id = exp.experiment_id if exp else mlflow.create_experiment(
        "healthcare", artifact_location=str((out / "mlartifacts").resolve()))
    net = model()
    weights = BlobStore(default_root(ledger)).get(final)  # re-digested on read
    net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    x, y = external_cohort()
    with mlflow.start_run(experiment_id=exp_id, run_name="federated-final"):
        mlflow.log_metric("external_acc", accuracy(net, x, y))
        info = mlflow.pytorch.log_model(net, name="model", tags=digest_tags(net),
                                        input_example=x[:2], pip_requirements=["torch"],
                                        serialization_format="pickle")
    version = mlflow.register_model(info.model_uri, MODEL_NAME).version
    uri = f"models:/{MODEL_NAME}/{version}"
    vkey = ledger_key(ledger).verifier_key  # a hospital would hold this, not read it here
    checked = verify_model(uri, verifier=vkey)  # which ledger entry vouches; nothing loaded
    loaded = load_model(uri, flavor="pytorch", verifier=vkey)  # raises on altered files
    same = model_digest(loaded.state_dict()) == final
    acc = accuracy(loaded, x, y)
    console.print(f"MLflow: registered [bold]{uri}[/bold]; loaded verified against ledger "
                  f"entry {checked.entry.index} (status {checked.status}, log key pinned); "
                  f"weights digest equals the Flower model: {same}; external accuracy of the "
                  f"loaded model {acc:.3f}")
    return {"uri": uri, "entry": checked.entry.index, "status": checked.status,
            "files": checked.files, "same_weights": same, "loaded_acc": acc}


# -- the audit -------------------------------------------------------------------------------


def flchain(ledger: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flchain_plugin.cli", "--ledger", str(ledger),
                           *args], capture_output=True, text=True, check=False)


def audit(out: Path, run: str, final: str, console: Console) -> bool:
    """The auditor's view, as the `flchain` command prints it: the final model's lineage
    (node ids named by the hospitals' registered keys), then the audit report
    (`flchain report`, which verifies the whole ledger first)."""
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
    p.add_argument("--out", type=Path, default=Path("runs/healthcare"))
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--drift-from", type=int, default=4, help="first round of the drift")
    p.add_argument("--smoke", action="store_true", help="3 rounds, drift from round 2")
    p.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    p.add_argument("--json", action="store_true", help="print a JSON summary line at the end")
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds, args.drift_from = 3, 2
    if args.rounds < 1 or args.drift_from < 1:
        p.error("--rounds and --drift-from must be at least 1")
    if (args.out / "ledger.db").exists():
        p.error(f"{args.out} already holds a ledger: give a new --out")
    if not args.verbose:
        warnings.filterwarnings("ignore")
        logging.getLogger("flwr").setLevel(logging.ERROR)
        logging.getLogger("mlflow").setLevel(logging.ERROR)
    console = Console(width=shutil.get_terminal_size((120, 40)).columns)
    console.rule(f"{len(HOSPITALS)} hospitals, {args.rounds} rounds; {DRIFTING}'s scanner "
                 f"drifts from round {args.drift_from}")
    result = federate(args.out, args.rounds, args.drift_from, args.verbose)
    with Ledger(args.out / "ledger.db", create=False) as led:
        view = ledger_view(led, result["run"])
    show_rounds(view, console)
    registered = register_and_load(args.out, result["model"], console)
    ok = audit(args.out, result["run"], result["model"], console)
    if args.json:
        print(json.dumps({"ok": ok, "report": str(args.out / "report.html"),
                          "run": result["run"], "model": result["model"],
                          "rounds": view, "mlflow": registered}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

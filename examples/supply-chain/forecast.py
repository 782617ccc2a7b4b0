"""Case study: supply-chain partners forecast demand; every served prediction is traceable.

    python examples/supply-chain/forecast.py --out runs/supply-chain          # a few minutes
    python examples/supply-chain/forecast.py --out runs/supply-chain --smoke  # fewer rounds
    python examples/supply-chain/forecast.py --out runs/supply-chain --trace 3

Four partners (a distribution centre and three retailers) each hold three years of their
own weekly demand, generated: a level, a trend, a yearly season with its own amplitude
and phase, promotions and noise. With Flower and `LedgerStrategy` they train one small
torch forecaster (next week's demand, relative to the partner's recent level, from the
last 8 weeks, the same weeks a year earlier and the week of the year; the last 12 weeks are
held out as the backtest), every partner signing its updates with a key named after it.
The final model is logged and registered in MLflow through the `flchain+sqlite://` store
on the same ledger. A serving step loads the registered version verified against
the ledger (log key pinned), forecasts next week for each partner, and appends every
prediction to `predictions.jsonl` with the MLflow version, the version's files digest and
the weights digest of the model that served it. `--trace ID` then walks from one logged
prediction to the MLflow version, the Flower round that made its weights and the partners
whose signed updates went into it; the run ends with the audit of the ledger.
"""

from __future__ import annotations

import argparse
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

from flchain_plugin.blobs import BlobStore, default_root
from flchain_plugin.commit import load_or_create_key
from flchain_plugin.datasets import dataset_commitment, example_bytes
from flchain_plugin.digest import model_digest
from flchain_plugin.flower import LedgerStrategy, Policy, signing_mod
from flchain_plugin.flower.keys import ledger_key
from flchain_plugin.ledger import Ledger
from flchain_plugin.lineage import lineage
from flchain_plugin.notes import Signer

SEED = 3
# Partner, weekly base demand (units), yearly amplitude (share of base), season phase (weeks).
PARTNERS = (("north-dc", 4000.0, 0.35, 0), ("harbor-retail", 900.0, 0.50, 6),
            ("valley-grocers", 1500.0, 0.20, 20), ("summit-outlet", 600.0, 0.60, 30))
WEEKS, LAGS = 156, 8
FIRST_WEEK = 52 + LAGS  # the first week with a year of history behind its features
HOLDOUT = 12  # the last 12 weeks of every partner: never trained on, the backtest
LOCAL_STEPS, LR = 50, 0.1
MODEL_NAME = "demand-forecaster"
PREDICTIONS = "predictions.jsonl"


# -- the task -----------------------------------------------------------------------------


def demand(partner: int) -> np.ndarray:
    """Three years of one partner's weekly demand (units), generated per partner."""
    _, base, amplitude, phase = PARTNERS[partner]
    rng = np.random.default_rng(SEED + partner)
    t = np.arange(WEEKS)
    season = 1 + amplitude * np.sin(2 * np.pi * (t - phase) / 52)
    promos = 1 + 0.3 * (rng.random(WEEKS) < 0.06)
    trend = 1 + 0.002 * t
    return base * season * trend * promos * rng.normal(1.0, 0.05, WEEKS)


def level(series: np.ndarray, week: int) -> float:
    """The partner's recent level: its mean demand over the LAGS weeks before `week`."""
    return float(series[week - LAGS:week].mean())


def features(series: np.ndarray, week: int) -> np.ndarray:
    """The inputs for forecasting week `week`: the last LAGS weeks over the recent level,
    the same three weeks a year earlier over that year's level (the partner's own season),
    and the week of the year. Relative, so partners of any size share one model."""
    lags = series[week - LAGS:week] / level(series, week)
    last_year = series[week - 53:week - 50] / level(series, week - 52)
    angle = 2 * np.pi * (week % 52) / 52
    return np.concatenate([lags, last_year, [np.sin(angle), np.cos(angle)]]).astype(np.float32)


def examples(partner: int) -> tuple[np.ndarray, np.ndarray]:
    """A partner's training pairs: features of each week -> its demand over its level."""
    s = demand(partner)
    weeks = range(FIRST_WEEK, WEEKS - HOLDOUT)  # the last HOLDOUT weeks stay out: backtest
    x = np.stack([features(s, w) for w in weeks])
    y = np.array([s[w] / level(s, w) for w in weeks], dtype=np.float32)
    return x, y[:, None]


def model() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return torch.nn.Sequential(torch.nn.Linear(LAGS + 5, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 1))


def train(net: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss = torch.tensor(0.0)
    for _ in range(LOCAL_STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(xt), yt)
        loss.backward()
        opt.step()
    return float(loss)


def mape(net: torch.nn.Module, partner: int, weeks: range) -> float:
    """Mean absolute percentage error of one-week-ahead forecasts over `weeks`."""
    s = demand(partner)
    with torch.no_grad():
        x = torch.from_numpy(np.stack([features(s, w) for w in weeks]))
        pred = net(x).numpy()[:, 0] * np.array([level(s, w) for w in weeks])
    actual = s[list(weeks)]
    return float(np.mean(np.abs(pred - actual) / actual))


def naive_mape(weeks: range) -> float:
    """The baseline a planner has without a model: next week sells what this week sold."""
    errors = []
    for p in range(len(PARTNERS)):
        s = demand(p)
        errors += [abs(s[w - 1] - s[w]) / s[w] for w in weeks]
    return float(np.mean(errors))


BACKTEST = range(WEEKS - HOLDOUT, WEEKS)


# -- the federation -------------------------------------------------------------------------


def partner_key(keys: Path, partner: int) -> Signer:
    """A partner's signing key, named after it: its name is in every update it signs."""
    name = PARTNERS[partner][0]
    return load_or_create_key(keys / f"{name}.key", name)


def make_client_app(keys: Path, server_vkey: str) -> ClientApp:
    def key(ctx: Context) -> Signer:
        return partner_key(keys, int(ctx.node_config["partition-id"]))

    def commitment(ctx: Context) -> str:
        """A salted commitment to the partner's demand history (the salt stays with it)."""
        pid = int(ctx.node_config["partition-id"])
        salt = keys / f"{PARTNERS[pid][0]}.salt"
        if not salt.exists():
            salt.write_bytes(os.urandom(32))
        return dataset_commitment(example_bytes(*examples(pid)), salt.read_bytes())

    app = ClientApp(mods=[signing_mod(key, server_key=server_vkey, dataset=commitment)])

    @app.train()
    def fit(msg: Message, ctx: Context) -> Message:
        torch.set_num_threads(1)
        x, y = examples(int(ctx.node_config["partition-id"]))
        net = model()
        net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        loss = train(net, x, y)
        return Message(RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics":
                                   MetricRecord({"num-examples": len(x), "train_mse": loss})}),
                       reply_to=msg)

    return app


def make_server_app(ledger: Path, rounds: int, allowed: list[str],
                    result: dict[str, Any]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.set_num_threads(1)
        strategy = LedgerStrategy(
            FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=len(PARTNERS)),
            ledger=ledger, policy=Policy(allowed_keys=frozenset(allowed)),
            keep_updates=True,  # encrypted update blobs: the report replays every round
        )

        def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            """Backtest on the held-out last 12 weeks of every partner (the server holds no
            data: in this simulation the generator stands in for a shared holdout)."""
            net = model()
            net.load_state_dict(arrays.to_torch_state_dict())
            return MetricRecord({"backtest_mape": float(np.mean(
                [mape(net, p, BACKTEST) for p in range(len(PARTNERS))]))})

        strategy.start(grid, ArrayRecord(model().state_dict()), num_rounds=rounds,
                       train_config=ConfigRecord({"lr": LR}),
                       evaluate_fn=strategy.evaluate_fn(central))
        result.update(run=strategy.run_id, model=strategy.global_model)

    return app


def federate(out: Path, rounds: int, verbose: bool) -> dict[str, Any]:
    """Run the Flower simulation; the run id and the final model's digest."""
    ledger = out / "ledger.db"
    keys = out / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    allowed = [partner_key(keys, i).verifier_key for i in range(len(PARTNERS))]
    result: dict[str, Any] = {}
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"logging_level": logging.ERROR, "log_to_driver": verbose,
                             "include_dashboard": False}}
    run_simulation(server_app=make_server_app(ledger, rounds, allowed, result),
                   client_app=make_client_app(keys, ledger_key(ledger).verifier_key),
                   num_supernodes=len(PARTNERS), backend_config=backend)
    if not result:
        raise SystemExit("the Flower run did not finish: run again with --verbose")
    return result


# -- MLflow: register; serve with a prediction log -------------------------------------------


def use_mlflow(out: Path) -> str:
    """Point MLflow at the `flchain+sqlite` store whose ledger is the federation's."""
    import mlflow

    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    mlflow.set_tracking_uri(f"flchain+sqlite:///{out.resolve()}/mlflow.db"
                            f"?flchain_ledger={(out / 'ledger.db').resolve()}")
    exp = mlflow.get_experiment_by_name("supply-chain")
    return exp.experiment_id if exp else mlflow.create_experiment(
        "supply-chain", artifact_location=str((out / "mlartifacts").resolve()))


def register(out: Path, final: str) -> str:
    """Log the federation's final model (weights from the blob store) and register it."""
    import mlflow

    from flchain_plugin.mlflow import digest_tags

    exp_id = use_mlflow(out)
    net = model()
    weights = BlobStore(default_root(out / "ledger.db")).get(final)  # re-digested on read
    net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    with mlflow.start_run(experiment_id=exp_id, run_name="federated-forecaster"):
        info = mlflow.pytorch.log_model(net, name="model", tags=digest_tags(net),
                                        input_example=features(demand(0), WEEKS)[None],
                                        pip_requirements=["torch"],
                                        serialization_format="pickle")
    version = mlflow.register_model(info.model_uri, MODEL_NAME).version
    return f"models:/{MODEL_NAME}/{version}"


def serve(out: Path, uri: str, console: Console) -> list[dict[str, Any]]:
    """Load `uri` verified (log key pinned) and forecast next week for every partner; each
    forecast is appended to the prediction log with what identifies the model that made it."""
    from flchain_plugin.mlflow import load_model, verify_model

    use_mlflow(out)
    vkey = ledger_key(out / "ledger.db").verifier_key  # a partner would hold this
    checked = verify_model(uri, verifier=vkey)  # the version's ledger entry, nothing loaded
    net = load_model(uri, flavor="pytorch", verifier=vkey)  # refuses altered files
    weights = model_digest(net.state_dict())  # the weights that actually serve
    log = out / PREDICTIONS
    start = sum(1 for _ in log.open()) if log.exists() else 0
    served = []
    with log.open("a") as f, torch.no_grad():
        for p, (name, *_) in enumerate(PARTNERS):
            s = demand(p)
            forecast = float(net(torch.from_numpy(features(s, WEEKS))[None])[0, 0]) * level(
                s, WEEKS)
            rec = {"id": start + len(served), "partner": name, "week": WEEKS,
                   "forecast": round(forecast, 1), "model_uri": uri,
                   "mlflow_files": checked.files, "mlflow_entry": checked.entry.index,
                   "model": weights}
            f.write(json.dumps(rec) + "\n")
            served.append(rec)
            console.print(f"prediction {rec['id']}: {name} week {WEEKS}: {rec['forecast']:,.0f}"
                          f" units, by {uri} (weights {weights[:19]}…)")
    return served


def backtests(out: Path, run: str) -> dict[int, float]:
    """Each round's backtest error, as the ledger's central `evaluation` entries hold it."""
    with Ledger(out / "ledger.db", create=False) as led:
        return {le.entry.round: le.entry.metrics["backtest_mape"]
                for le in led.iter_entries(type="evaluation")
                if le.entry.run == run and le.entry.source == "central"}


# -- tracing a prediction ---------------------------------------------------------------------


def trace(out: Path, prediction: int) -> dict[str, Any]:
    """From one logged prediction to the MLflow version that made it, the Flower round that
    made its weights, and the partners whose signed updates were aggregated into them."""
    recs = [json.loads(line) for line in (out / PREDICTIONS).read_text().splitlines()]
    rec = next((r for r in recs if r["id"] == prediction), None)
    if rec is None:
        raise SystemExit(f"no prediction {prediction} in {out / PREDICTIONS} "
                         f"(ids 0-{len(recs) - 1})")
    with Ledger(out / "ledger.db", create=False) as led:
        lin = lineage(led, rec["model"])
        version = led.get(rec["mlflow_entry"]).entry
        names = {le.entry.node: le.entry.key.split("+", 1)[0]
                 for le in led.iter_entries(type="member")}
    made = lin.versions[0].producer
    return {"prediction": rec, "lineage_ok": lin.ok,
            "mlflow": {"name": version.name, "version": version.version, "files": version.files,
                       "weights": version.model, "entry": rec["mlflow_entry"]},
            "round": None if made is None else {"run": made.run, "round": made.round,
                                                "entry": made.index},
            "partners": sorted({names.get(u.node, u.node) for u in lin.accepted_updates()}),
            "final_round_partners": [] if made is None else
            [names.get(u.node, u.node) for u in made.updates],
            "updates": len(lin.accepted_updates()), "rounds": len(lin.versions) - 1}


def show_trace(t: dict[str, Any], console: Console) -> None:
    rec, m = t["prediction"], t["mlflow"]
    console.print(f"prediction {rec['id']} ({rec['partner']}, week {rec['week']}: "
                  f"{rec['forecast']:,.0f} units)\n"
                  f"  ← {rec['model_uri']}: MLflow version {m['version']} of {m['name']}, "
                  f"ledger entry {m['entry']}, files {m['files'][:19]}…\n"
                  f"  ← weights {rec['model']}\n"
                  f"  ← Flower run {t['round']['run']} round {t['round']['round']} (entry "
                  f"{t['round']['entry']}), {t['rounds']} rounds back to the initial model\n"
                  f"  ← {t['updates']} signed updates from: {', '.join(t['partners'])}; "
                  f"lineage {'consistent' if t['lineage_ok'] else 'HAS PROBLEMS'}",
                  highlight=False)


# -- the audit -------------------------------------------------------------------------------


def flchain(ledger: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flchain_plugin.cli", "--ledger", str(ledger),
                           *args], capture_output=True, text=True, check=False)


def audit(out: Path, final: str, console: Console) -> bool:
    """The auditor's view, as the `flchain` command prints it: the final model's lineage,
    then the audit report (`flchain report`, which verifies the whole ledger first)."""
    ledger = out / "ledger.db"
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
    p.add_argument("--out", type=Path, default=Path("runs/supply-chain"))
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--smoke", action="store_true", help="3 rounds")
    p.add_argument("--trace", type=int, metavar="ID",
                   help="only trace prediction ID of an earlier run in --out")
    p.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    p.add_argument("--json", action="store_true", help="print a JSON summary line at the end")
    args = p.parse_args(argv)
    console = Console(width=shutil.get_terminal_size((120, 40)).columns)
    if args.trace is not None:
        if not (args.out / PREDICTIONS).exists():
            p.error(f"no {PREDICTIONS} in {args.out}: run without --trace first")
        t = trace(args.out, args.trace)
        if args.json:
            print(json.dumps(t))
        else:
            show_trace(t, console)
        return 0 if t["lineage_ok"] else 1
    if args.smoke:
        args.rounds = 3
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if (args.out / "ledger.db").exists():
        p.error(f"{args.out} already holds a ledger: give a new --out")
    if not args.verbose:
        warnings.filterwarnings("ignore")
        logging.getLogger("flwr").setLevel(logging.ERROR)
        logging.getLogger("mlflow").setLevel(logging.ERROR)
    console.rule(f"{len(PARTNERS)} partners forecast demand, {args.rounds} rounds")
    result = federate(args.out, args.rounds, args.verbose)
    errors = backtests(args.out, result["run"])
    console.print("backtest MAPE per round (ledger `evaluation` entries): " + ", ".join(
        f"{r}: {e:.1%}" for r, e in sorted(errors.items())) +
        f"; naive (last week's demand): {naive_mape(BACKTEST):.1%}", highlight=False)
    uri = register(args.out, result["model"])
    served = serve(args.out, uri, console)
    console.rule("tracing every served prediction")
    traces = [trace(args.out, rec["id"]) for rec in served]
    for t in traces:
        show_trace(t, console)
    ok = audit(args.out, result["model"], console) and all(t["lineage_ok"] for t in traces)
    if args.json:
        print(json.dumps({"ok": ok, "report": str(args.out / "report.html"),
                          "run": result["run"], "model": result["model"],
                          "model_uri": uri, "backtest_mape": errors,
                          "naive_mape": naive_mape(BACKTEST), "traces": traces}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

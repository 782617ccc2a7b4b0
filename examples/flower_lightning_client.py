"""A Flower ClientApp that trains with Lightning: lineage from each client's data to the
global model, with no ledger code in the training loop.

    python examples/flower_lightning_client.py --out runs/flower-lightning

Each simulated SuperNode trains a small LightningModule on its share of scikit-learn's
breast-cancer data. Its Trainer carries

    LedgerCallback(None, parent=<digest of the global model received>, salt=<client's file>)

which commits the client's training data (salted: the salt file never leaves the client)
and, after the fit, gives `summary.update`, the model digest of the trained weights, and
`summary.dataset`, the commitment. `signing_mod` (outermost mod) checks the global model
against the server's signed log before training, then signs the client statement
{run, round, node, parent, update, num_examples, metrics, dataset, nonce}; its `update` is
the digest of the reply's arrays, which the example checks is the callback's digest, and
its `dataset` is the callback's commitment. The server's `LedgerStrategy` records each
signed update with that commitment and the global model as its parent, so the ledger holds
dataset -> update -> aggregated model for every round. The script then re-derives each
client's commitment from its data and salt and finds it in the ledger.

A client may also pass its own ledger (`LedgerCallback("client.db", parent=...)`) to record
its local checkpoints; the server never needs it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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
from flchain_plugin.flower import LedgerStrategy, Policy, client_verifier_keys, signing_mod
from flchain_plugin.flower.arrays import arrayrecord_digest
from flchain_plugin.flower.keys import ledger_key
from flchain_plugin.ledger import Ledger

SEED = 7
STATE = "lightning"  # ctx.state record where the train function leaves the commitment


def dataset(partition: int, partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """This client's share of the standardised breast-cancer data."""
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(SEED).permutation(len(x))
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return x[partition::partitions], y[partition::partitions]


def module() -> Any:
    import lightning.pytorch as L

    class Classifier(L.LightningModule):
        def __init__(self, lr: float = 0.05):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(),
                                           torch.nn.Linear(16, 2))

        def training_step(self, batch: Any, i: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(SEED)
    return Classifier()


def salt_file(base: Path, partition: int) -> Path:
    return base / f"client-{partition}.salt"


def trained_dataset(ctx: Context) -> str | None:
    """For signing_mod: the commitment the client's LedgerCallback produced this run."""
    rec = ctx.state.config_records.get(STATE)
    value = rec.get("dataset") if rec is not None else None
    return value if isinstance(value, str) else None


def make_client_app(keys: Path, server_vkey: str, work: Path) -> ClientApp:
    app = ClientApp(mods=[signing_mod(keys, server_key=server_vkey, dataset=trained_dataset)])

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        import lightning.pytorch as L
        from torch.utils.data import DataLoader, TensorDataset

        from flchain_plugin.lightning import LedgerCallback

        torch.set_num_threads(1)
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.ERROR)
        pid, n = int(ctx.node_config["partition-id"]), int(ctx.node_config["num-partitions"])
        received = msg.content["arrays"]
        net = module()
        net.load_state_dict(received.to_torch_state_dict())
        # signing_mod has already checked `received` against the signed log.
        ledger_cb = LedgerCallback(None, parent=arrayrecord_digest(received),
                                   salt=salt_file(work, pid), owner=f"client-{pid}",
                                   progress=False)
        x, y = dataset(pid, n)
        loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                            batch_size=32, shuffle=True)
        trainer = L.Trainer(max_epochs=int(msg.content["config"].get("epochs", 1)),
                            callbacks=[ledger_cb], accelerator="cpu", logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=str(work / str(pid)))
        trainer.fit(net, loader)
        summary = ledger_cb.summary
        assert summary is not None
        arrays = ArrayRecord(net.state_dict())
        if arrayrecord_digest(arrays) != summary.update:  # what signing_mod will sign
            raise RuntimeError("the reply's arrays are not the weights the callback digested")
        ctx.state[STATE] = ConfigRecord({"dataset": summary.dataset or ""})
        metrics = {"train_loss": float(trainer.callback_metrics["train_loss"]),
                   "num-examples": summary.num_examples or len(x)}
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}),
                       reply_to=msg)

    return app


def make_server_app(ledger_path: Path, rounds: int, clients: int, allowed: list[str],
                    result: dict[str, Any]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.set_num_threads(1)
        strategy = LedgerStrategy(
            FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=clients),
            ledger=ledger_path,
            policy=Policy(allowed_keys=frozenset(allowed), require_dataset=True),
        )
        strategy.start(grid, ArrayRecord(module().state_dict()), num_rounds=rounds,
                       train_config=ConfigRecord({"epochs": 1}))
        result.update(run=strategy.run_id, model=strategy.global_model)

    return app


def run(out: Path, rounds: int, clients: int, quiet: bool = True) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    ledger_path = out / "ledger.db"
    vkey = ledger_key(ledger_path).verifier_key
    keys, work = out / "keys", out / "clients"
    work.mkdir(exist_ok=True)
    allowed = client_verifier_keys(keys, clients)
    result: dict[str, Any] = {}
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"logging_level": logging.ERROR, "log_to_driver": not quiet,
                             "include_dashboard": False}}
    run_simulation(server_app=make_server_app(ledger_path, rounds, clients, allowed, result),
                   client_app=make_client_app(keys, vkey, work), num_supernodes=clients,
                   backend_config=backend)
    if not result:
        raise SystemExit("the Flower run did not finish: see the log above")
    return result


def check(out: Path, result: dict[str, Any], clients: int) -> dict[str, Any]:
    """Find every client's recomputed commitment in the ledger's signed updates."""
    from flchain_plugin.lightning import commit_dataset, load_salt

    expected = {}
    for pid in range(clients):
        x, y = dataset(pid, clients)
        rows = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
        salt = load_salt(salt_file(out / "clients", pid), create=False)
        expected[commit_dataset("train", rows, salt, progress=False).digest] = pid
    with Ledger(out / "ledger.db", create=False) as led:
        updates = [e.entry for e in led.iter_entries(type="update")
                   if getattr(e.entry, "run", None) == result["run"]]
        models = {e.entry.round: e.entry for e in led.iter_entries(type="model")
                  if getattr(e.entry, "run", None) == result["run"]}
        rows_out = []
        for u in updates:
            assert isinstance(u, E.Update)
            m = models.get(u.round)
            rows_out.append({
                "round": u.round, "client": expected.get(u.dataset or ""),
                "dataset": u.dataset, "parent": u.parent, "update": u.update,
                "signed": u.signature is not None,
                "parent_is_global_model": m is not None and m.parent == u.parent,
            })
        ok = led.verify().ok
    return {"ok": ok and bool(rows_out) and all(r["client"] is not None and r["signed"]
                                                 and r["parent_is_global_model"]
                                                 for r in rows_out),
            "verify": ok, "model": result["model"], "updates": rows_out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/flower-lightning"))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    p.add_argument("--json", action="store_true", help="print one JSON summary line")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.clients < 1:
        p.error("--rounds and --clients must be at least 1")
    if not args.verbose:
        warnings.filterwarnings("ignore")
        logging.getLogger("flwr").setLevel(logging.ERROR)
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    result = run(args.out, args.rounds, args.clients, quiet=not args.verbose)
    summary = check(args.out, result, args.clients)
    if args.json:
        print(json.dumps(summary))
    else:
        table = Table(title="signed updates: data commitment -> update -> global model")
        for col in ("round", "client", "dataset (salted)", "parent (global model)", "update",
                    "signed", "parent = round's model"):
            table.add_column(col)
        for r in summary["updates"]:
            table.add_row(str(r["round"]), str(r["client"]), r["dataset"][7:19],
                          r["parent"][7:19], r["update"][7:19], str(r["signed"]),
                          str(r["parent_is_global_model"]))
        console = Console()
        console = console if console.is_terminal else Console(width=140)
        console.print(table)
        console.print(f"ledger verifies: {summary['verify']}; final model {summary['model']}")
        console.print(f"  flchain --ledger {args.out / 'ledger.db'} lineage {summary['model']}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

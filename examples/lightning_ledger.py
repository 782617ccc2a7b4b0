"""A Lightning run whose every checkpoint is in a verifiable ledger; a tampered resume refused.

    python examples/lightning_ledger.py --out runs/lightning [--package pytorch_lightning]

Trains a small classifier on scikit-learn's breast-cancer data with

    Trainer(callbacks=[LedgerCallback(out / "ledger.db"), ModelCheckpoint(...)])

The callback commits the training and validation data (salted; the salt file stays in
`--out`), then records each checkpoint save as one ledger batch: file digest, weights
digest, epoch, step, monitored score, hyper-parameters digest, datasets and parent, each
batch with a checkpoint (signed tree head) signed by `ledger.db.key`. The script then
resumes from `last.ckpt` with the log's verifier key pinned (verified before it is read),
flips one byte of a checkpoint and shows that resuming from it stops before `torch.load`,
and prints the lineage of the final checkpoint back to the dataset commitments.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from sklearn.datasets import load_breast_cancer
from torch.utils.data import DataLoader, TensorDataset

from flchain_plugin.cli.lightning import check, render
from flchain_plugin.commit import key_path
from flchain_plugin.ledger import Ledger
from flchain_plugin.lightning import LedgerCallback, UnverifiedCheckpointError
from flchain_plugin.notes import load_private_key


def loaders() -> tuple[DataLoader, DataLoader]:
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return (DataLoader(TensorDataset(xt[100:], yt[100:]), batch_size=64, shuffle=True),
            DataLoader(TensorDataset(xt[:100], yt[:100]), batch_size=100))


def module(L: Any) -> Any:
    class Classifier(L.LightningModule):
        def __init__(self, lr: float = 0.05, hidden: int = 16):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(30, hidden), torch.nn.ReLU(),
                                           torch.nn.Linear(hidden, 2))

        def training_step(self, batch: Any, i: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def validation_step(self, batch: Any, i: int) -> None:
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    return Classifier()


def fit(L: Any, out: Path, epochs: int, ckpt_path: str | None = None,
        verifier_key: str | None = None) -> Any:
    mc = L.callbacks.ModelCheckpoint(dirpath=out / "checkpoints", monitor="val_loss",
                                     save_top_k=2, save_last=True)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(out),
                        callbacks=[LedgerCallback(out / "ledger.db", verifier_key=verifier_key),
                                   mc])
    trainer.fit(module(L), *loaders(), ckpt_path=ckpt_path)
    return mc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/lightning"))
    p.add_argument("--package", choices=["lightning.pytorch", "pytorch_lightning"],
                   default="lightning.pytorch", help="which Lightning package's Trainer")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print one JSON summary line")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    L = importlib.import_module(args.package)
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "pytorch_lightning", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    mc = fit(L, out, args.epochs)
    last = Path(mc.last_model_path)
    # The writer's verifier key, as an auditor would be given it (`flchain keygen` prints
    # one); the resume refuses a ledger whose newest checkpoint another key signed.
    vkey = load_private_key(key_path(out / "ledger.db")).verifier_key
    mc = fit(L, out, args.epochs + 2, ckpt_path=str(last), verifier_key=vkey)  # verified

    bad = out / "tampered.ckpt"
    raw = bytearray(Path(mc.last_model_path).read_bytes())
    raw[len(raw) // 2] ^= 1
    bad.write_bytes(raw)
    try:
        fit(L, out, args.epochs + 4, ckpt_path=str(bad))
        refused = None
    except UnverifiedCheckpointError as e:
        refused = e.reason

    with Ledger(out / "ledger.db") as led:  # what `flchain lightning verify` does
        doc = check(led, Path(mc.last_model_path))
        ok = led.verify().ok
        summary = {"ok": ok and doc["ok"] and refused is not None, "verify": ok,
                   "entries": led.size, "refused_tampered": refused, "verifier_key": vkey,
                   "signed_size": led.checkpoint_sizes(1)[-1],
                   "lineage": doc.get("chain", []), "datasets": doc.get("datasets", [])}
    if args.json:
        print(json.dumps(summary))
        return 0 if summary["ok"] else 1
    console = Console()
    render(doc, console if console.is_terminal else Console(width=140))
    console.print(f"ledger verifies: {ok}; {summary['entries']} entries, signed to size "
                  f"{summary['signed_size']} by {vkey}")
    console.print(f"tampered checkpoint refused before loading: {refused}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""The ServerApp: FedAvg wrapped in `LedgerStrategy`, configured from the run config.

The same app runs on Flower's simulation engine (`flwr run .`) and on a deployment
(`flwr run . <connection>`); only the run config changes (`-c 'ledger="postgresql://..."'`).
Each round is one ledger batch with a signed checkpoint; the central evaluation is logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from flchain_plugin.flower import LedgerStrategy, MedianNormBound, Policy

from .task import data_path, dataset, evaluate, model

log = logging.getLogger("flchain.flower")

TEST_EXAMPLES = 1000

app = ServerApp()


def _path_or_url(cfg: dict[str, Any], key: str) -> str | Path | None:
    """A run-config location: None when empty, a database URL as is, else a path."""
    value = str(cfg[key])
    if not value:
        return None
    if "://" in value:
        return value
    return data_path(value, cfg["data-dir"])


def norm_bound(value: object) -> float | MedianNormBound | None:
    """`policy-max-update-norm`: "median", "none" or a number."""
    text = str(value).strip().lower()
    if text == "median":
        return MedianNormBound()
    if text == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"policy-max-update-norm: want \"median\", \"none\" or a number, "
                         f"got {value!r}") from None


def policy(cfg: dict[str, Any]) -> Policy:
    """The Policy the run config asks for (recorded in the run's `run` entry)."""
    keys_file = _path_or_url(cfg, "policy-allowed-keys")
    allowed = None
    if keys_file is not None:
        lines = Path(keys_file).read_text(encoding="utf-8").splitlines()
        allowed = frozenset(k.strip() for k in lines if k.strip() and not k.startswith("#"))
    max_examples = int(cfg["policy-max-examples"])
    return Policy(require_signatures=bool(cfg["policy-require-signatures"]),
                  allowed_keys=allowed,
                  max_update_norm=norm_bound(cfg["policy-max-update-norm"]),
                  max_examples=max_examples or None)


def strategy(cfg: dict[str, Any]) -> LedgerStrategy:
    """FedAvg in LedgerStrategy, from the run config (see pyproject.toml)."""
    nodes = int(cfg["min-nodes"])
    blobs = str(cfg["blobs"])
    witnesses = [w.strip() for w in str(cfg["witnesses"]).split(";") if w.strip()]
    ledger = _path_or_url(cfg, "ledger")
    if ledger is None:
        raise ValueError("ledger: empty; give a SQLite file or a postgresql:// URL")
    return LedgerStrategy(
        FedAvg(fraction_train=float(cfg["fraction-train"]),
               fraction_evaluate=float(cfg["fraction-evaluate"]),
               min_available_nodes=nodes, min_train_nodes=nodes,
               min_evaluate_nodes=nodes if float(cfg["fraction-evaluate"]) > 0 else 0),
        ledger=ledger,
        policy=policy(cfg),
        signer=_path_or_url(cfg, "ledger-key"),
        blobs=False if blobs == "none" else _path_or_url(cfg, "blobs"),
        witnesses=witnesses or None,
        quorum=int(cfg["quorum"]) or None,
    )


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = dict(context.run_config)
    torch.set_num_threads(1)
    ledger_strategy = strategy(cfg)
    x_test, y_test = dataset(-1, TEST_EXAMPLES)

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        net = model()
        net.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(net, x_test, y_test)
        return MetricRecord({"test_loss": loss, "test_acc": acc})

    ledger_strategy.start(grid, ArrayRecord(model().state_dict()),
                          num_rounds=int(cfg["num-server-rounds"]),
                          timeout=float(cfg["round-timeout"]),
                          train_config=ConfigRecord({"lr": float(cfg["lr"])}),
                          evaluate_fn=ledger_strategy.evaluate_fn(central))
    log.warning("flchain: run %s finished: model %s, ledger %s (%d entries), checkpoint "
                "key %s", ledger_strategy.run_id, ledger_strategy.global_model,
                ledger_strategy.ledger.origin, ledger_strategy.ledger.size,
                ledger_strategy.verifier_key)

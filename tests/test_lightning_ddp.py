"""LedgerCallback under DDP on CPU: two processes on gloo, real `ddp` and `ddp_spawn`.

Every rank runs every hook; only global rank 0 saves, so only it may write, and every rank
reads the resume file itself, so every rank must refuse an unverified one (a rank that went
on alone would hang or crash its peer).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from flchain_plugin.digest import file_digest
from flchain_plugin.ledger import Ledger
from flchain_plugin.lightning import checkpoint_lineage

pytestmark = [pytest.mark.lightning, pytest.mark.timeout(240)]

SCRIPT = textwrap.dedent('''
    import json, logging, os, sys, warnings
    from pathlib import Path

    import lightning.pytorch as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from flchain_plugin.lightning import LedgerCallback

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch, i):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def validation_step(self, batch, i):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y), sync_dist=True)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def on_fit_end(self):  # runs in each worker, also under ddp_spawn
            cb = next(c for c in self.trainer.callbacks if isinstance(c, LedgerCallback))
            report({"rank": self.trainer.global_rank, "recorded": len(cb.recorded),
                    "commitments": len(cb.commitments)})

    def report(result):  # one file per process: ranks share stdout and interleave
        out = Path(sys.argv[1]) / "results"
        out.mkdir(exist_ok=True)
        (out / f"{os.getpid()}.json").write_text(json.dumps(result))

    def main():
        root, strategy, resume = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
        warnings.filterwarnings("ignore")
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        torch.manual_seed(0)
        X, Y = torch.randn(64, 4), torch.randn(64, 1)
        train = DataLoader(TensorDataset(X, Y), batch_size=8)
        val = DataLoader(TensorDataset(X[:16], Y[:16]), batch_size=8)
        mc = L.callbacks.ModelCheckpoint(dirpath=root / "ckpt", monitor="val_loss",
                                         save_top_k=-1, save_last=True)
        t = L.Trainer(strategy=strategy, accelerator="cpu", devices=2, max_epochs=2,
                      callbacks=[LedgerCallback(str(root / "ledger.db"), progress=False), mc],
                      default_root_dir=str(root), logger=False, enable_progress_bar=False,
                      enable_model_summary=False)
        try:
            t.fit(Tiny(), train, val, ckpt_path=None if resume == "-" else resume)
        except Exception as e:
            report({"rank": os.environ.get("LOCAL_RANK", "main"), "error": type(e).__name__,
                    "text": str(e)})

    if __name__ == "__main__":
        main()
''')


def run(tmp_path: Path, strategy: str, resume: str = "-") -> list[dict[str, Any]]:
    script = tmp_path / "ddp_fit.py"
    script.write_text(SCRIPT)
    shutil.rmtree(tmp_path / "results", ignore_errors=True)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), strategy, resume],
                          capture_output=True, text=True, timeout=200, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_only_rank_zero_writes_and_nothing_twice(tmp_path: Path, strategy: str) -> None:
    results = sorted(run(tmp_path, strategy), key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1]
    zero, one = results
    assert zero["recorded"] > 0 and zero["commitments"] == 2
    assert one["recorded"] == 0 and one["commitments"] == 0

    ledger = Ledger(tmp_path / "ledger.db")
    entries = list(ledger.iter_entries())
    assert len({e.data for e in entries}) == len(entries)  # no duplicates
    assert [e.entry.TYPE for e in entries[:2]] == ["dataset", "dataset"]
    files = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    recorded = {e.entry.file for e in entries if e.entry.TYPE == "checkpoint"}
    assert {file_digest(f) for f in files} <= recorded
    assert all(e.entry.name.startswith("ckpt/") for e in entries[2:])  # no .temp.ckpt
    assert ledger.verify().ok
    lin = checkpoint_lineage(ledger, file_digest(tmp_path / "ckpt" / "last.ckpt"))
    assert [d.index for d in lin.datasets] == [0, 1]


def test_every_rank_refuses_an_unrecorded_checkpoint(tmp_path: Path) -> None:
    import lightning.pytorch as L
    import torch

    class Tiny(L.LightningModule):  # the script's module, trained once without a ledger
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, i: int) -> torch.Tensor:
            return torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
    t = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False,
                  default_root_dir=str(tmp_path))
    t.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=8))
    unrecorded = tmp_path / "unrecorded.ckpt"
    t.save_checkpoint(unrecorded)

    results = sorted(run(tmp_path, "ddp", str(unrecorded)), key=lambda r: str(r["rank"]))
    assert [r["rank"] for r in results] == ["0", "1"]  # both processes stopped, none hung
    for r in results:
        assert r["error"] == "UnverifiedCheckpointError", r
        assert file_digest(unrecorded) in r["text"]
    assert not any(e.entry.TYPE == "checkpoint"
                   for e in Ledger(tmp_path / "ledger.db").iter_entries())

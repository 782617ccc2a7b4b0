"""`flchain lightning verify`: the resume check outside a Trainer, with and without Lightning."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader, TensorDataset

from flchain_plugin.cli.lightning import lightning
from flchain_plugin.digest import file_digest
from flchain_plugin.ledger import Ledger
from flchain_plugin.lightning import LedgerCallback

pytestmark = [pytest.mark.lightning, pytest.mark.timeout(120)]


def test_verify_names_recorded_and_unrecorded_files(tmp_path: Path) -> None:
    import lightning.pytorch as L

    warnings.filterwarnings("ignore", module=r"lightning\..*")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(3, 1)

        def training_step(self, batch: tuple[torch.Tensor, ...], i: int) -> torch.Tensor:
            return torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    ledger = tmp_path / "ledger.db"
    t = L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False,
                  enable_model_summary=False, default_root_dir=str(tmp_path),
                  callbacks=[LedgerCallback(ledger, progress=False)])
    t.fit(Tiny(), DataLoader(TensorDataset(torch.randn(8, 3), torch.randn(8, 1)), batch_size=4))
    good = next((tmp_path / "checkpoints").glob("*.ckpt"))
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(good.read_bytes() + b"\0")

    with Ledger(ledger) as led:
        before = led.head()
    run = CliRunner().invoke(lightning, ["verify", "--ledger", str(ledger), str(good), str(bad),
                                         "--json"])
    assert run.exit_code == 1, run.output
    doc = json.loads(run.stdout)
    assert run.stderr.count("\n") == 1 and "1 of 2 checkpoint files do not verify" in run.stderr
    first, second = doc["checkpoints"]
    assert doc["ok"] is False and first["ok"] is True and second["ok"] is False
    assert first["file"] == file_digest(good) and first["chain"][0]["step"] == 4
    assert [d["name"] for d in first["datasets"]] == ["train"]
    assert second["file"] == file_digest(bad) and "not in the ledger" in second["problem"]

    ok = CliRunner().invoke(lightning, ["verify", "--ledger", str(ledger), str(good)])
    assert ok.exit_code == 0 and "verified" in ok.output
    missing = CliRunner().invoke(lightning, ["verify", "--ledger", str(tmp_path / "no.db"),
                                             str(good)])
    assert missing.exit_code == 2 and "no ledger" in missing.output
    assert not (tmp_path / "no.db").exists(), "verify must not create a ledger"
    with Ledger(ledger) as led:
        assert led.head() == before, "verify must not write to the ledger"

    # Pinning the log's key: the writer's key verifies, another key named after the log
    # (a re-signed history) does not, and a key that is no key is a one-line usage error.
    from flchain_plugin.commit import key_path
    from flchain_plugin.notes import generate_key, load_private_key

    writer = load_private_key(key_path(ledger)).verifier_key
    pinned = CliRunner().invoke(lightning, ["verify", "--ledger", str(ledger), str(good),
                                            "--key-verifier", writer, "--json"])
    assert pinned.exit_code == 0, pinned.output
    assert json.loads(pinned.stdout)["checkpoints"][0]["verifier"] == writer
    with Ledger(ledger) as led:
        other = generate_key(led.origin).verifier_key
    forged = CliRunner().invoke(lightning, ["verify", "--ledger", str(ledger), str(good)],
                                env={"FLCHAIN_LOG_VERIFIER": other})
    assert forged.exit_code == 1 and "not signed by the pinned log key" in forged.stderr
    junk = CliRunner().invoke(lightning, ["verify", "--ledger", str(ledger), str(good),
                                          "--key-verifier", "not a key"])
    assert junk.exit_code == 2 and junk.stderr.count("\n") == 1, junk.output
    assert "--key-verifier" in junk.stderr and "Traceback" not in junk.output


def test_cli_and_dataset_helpers_need_no_lightning(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "for m in ('lightning', 'pytorch_lightning', 'torch'): sys.modules[m] = None\n"
        "from flchain_plugin.lightning import Manifest, checkpoint_lineage\n"
        "from flchain_plugin.cli.lightning import lightning\n"
        "try:\n"
        "    from flchain_plugin.lightning import LedgerCallback\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "flchain-plugin[lightning]" in proc.stdout

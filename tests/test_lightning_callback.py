"""LedgerCallback with real Trainers of both Lightning packages, on CPU, with a tiny model.

Every save is one ledger batch naming the file, the weights, progress, score, hyper-
parameters, the datasets and the parent; resuming verifies the file and its lineage before
anything is read by torch.load, and a modified or unrecorded file stops the fit there.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from flchain_plugin import entries as E
from flchain_plugin.datasets import dataset_commitment, example_bytes
from flchain_plugin.digest import file_digest, model_digest
from flchain_plugin.ledger import Ledger
from flchain_plugin.lightning import (
    SALT_FILE,
    CheckpointLineageError,
    LedgerCallback,
    UnverifiedCheckpointError,
    checkpoint_lineage,
    hparams_digest,
    load_salt,
)

pytestmark = [pytest.mark.lightning, pytest.mark.timeout(120)]

PACKAGES = ["lightning.pytorch", "pytorch_lightning"]


@pytest.fixture(autouse=True)
def _quiet() -> None:
    for name in ("lightning.pytorch", "pytorch_lightning", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(lightning|pytorch_lightning)\..*")


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)


def loaders() -> tuple[DataLoader, DataLoader]:
    X, Y = data()
    return (DataLoader(TensorDataset(X, Y), batch_size=16),
            DataLoader(TensorDataset(X[:16], Y[:16]), batch_size=16))


def module_class(L: Any) -> type:
    class Tiny(L.LightningModule):
        def __init__(self, lr: float = 0.05, width: int = 8):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.ReLU(),
                                           torch.nn.Linear(width, 1))
            self.loads = 0

        def training_step(self, batch: Any, i: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def validation_step(self, batch: Any, i: int) -> None:
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

        def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            self.loads += 1  # runs right after torch.load returned

    return Tiny


def trainer(L: Any, root: Path, callbacks: list[Any], epochs: int, **kw: Any) -> Any:
    return L.Trainer(max_epochs=epochs, callbacks=callbacks, default_root_dir=str(root),
                     logger=False, enable_progress_bar=False, enable_model_summary=False,
                     accelerator="cpu", devices=1, **kw)


def fit(L: Any, root: Path, ledger: Ledger, epochs: int = 3, ckpt_path: str | None = None,
        **cb: Any) -> tuple[Any, Any, Any, Any]:
    torch.manual_seed(0)
    model = module_class(L)()
    callback = LedgerCallback(ledger, progress=False, **cb)
    mc = L.callbacks.ModelCheckpoint(dirpath=root / "ckpt", monitor="val_loss", save_top_k=-1,
                                     save_last=True)
    t = trainer(L, root, [callback, mc], epochs)
    t.fit(model, *loaders(), ckpt_path=ckpt_path)
    return t, model, callback, mc


def checkpoints(ledger: Ledger) -> list[Any]:
    return list(ledger.iter_entries(type="checkpoint"))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_save_is_one_batch_with_lineage_to_the_datasets(tmp_path: Path,
                                                              package: str) -> None:
    L = importlib.import_module(package)
    ledger = Ledger(tmp_path / "ledger.db")
    t, model, cb, _ = fit(L, tmp_path, ledger, epochs=3)
    t.save_checkpoint(tmp_path / "manual.ckpt")  # after fit: still recorded

    # Fit start: one batch with the salted train and val commitments.
    first = [e.entry for e in ledger.iter_entries(0, 2)]
    assert [(d.TYPE, d.name, d.examples) for d in first] == [("dataset", "train", 64),
                                                             ("dataset", "val", 16)]
    salt = load_salt(tmp_path / SALT_FILE, create=False)
    X, Y = data()
    assert first[0].dataset == dataset_commitment(example_bytes(X.numpy(), Y.numpy()), salt)
    assert salt.hex().encode() not in (tmp_path / "ledger.db").read_bytes()

    # Every file on disk is recorded with its digest, weights, progress, score, hparams.
    files = [*sorted((tmp_path / "ckpt").glob("*.ckpt")), tmp_path / "manual.ckpt"]
    assert len(files) == 5  # three epochs, last, manual
    by_file = {e.entry.file: e for e in checkpoints(ledger)}
    for f in files:
        ck = torch.load(f, weights_only=True)
        got = by_file[file_digest(f)].entry
        assert got.model == model_digest(ck["state_dict"])
        assert (got.epoch, got.step) == (ck["epoch"], ck["global_step"])
        assert got.hparams == hparams_digest(ck["hyper_parameters"]) is not None
        assert got.datasets == [first[0].dataset, first[1].dataset]
        assert got.monitor == "val_loss" and isinstance(got.score, float)
        if f.name.startswith("epoch="):
            assert got.name == f"ckpt/{f.name}"
            state = next(v for k, v in ck["callbacks"].items() if k.startswith("ModelCheckpoint"))
            assert got.score == pytest.approx(float(state["current_score"]))

    # The bytes are Lightning's own: its TorchCheckpointIO writes the same file, no temp left.
    from lightning.fabric.plugins.io import TorchCheckpointIO

    TorchCheckpointIO().save_checkpoint(torch.load(files[0], weights_only=True),
                                        tmp_path / "plain.ckpt")
    assert file_digest(tmp_path / "plain.ckpt") == file_digest(files[0])
    assert (tmp_path / "plain.ckpt").stat().st_mode == files[0].stat().st_mode
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted(
        f.name for f in files[:-1])

    # One batch per save: after the dataset batch, every tree head adds exactly one entry.
    sizes = [h.size for h in ledger.heads()]
    assert sizes == list(range(2, ledger.size + 1))
    assert len({e.data for e in ledger.iter_entries()}) == ledger.size  # no duplicates
    assert ledger.verify().ok

    # Parents: each step continues from the weights saved at the step before.
    chain = [e.entry for e in checkpoints(ledger)]
    steps = sorted({c.step for c in chain})
    assert chain[0].parent is None
    for c in chain:
        earlier = [p for p in chain if p.step < c.step]
        if earlier:
            assert c.parent == max(earlier, key=lambda p: p.step).model

    lin = checkpoint_lineage(ledger, file_digest(tmp_path / "manual.ckpt"))
    assert [e.entry.step for e in lin.chain] == sorted(steps, reverse=True)
    assert lin.chain[-1].entry.parent is None and lin.origin is None
    assert [d.index for d in lin.datasets] == [0, 1]

    assert cb.summary is not None
    assert cb.summary.update == model_digest(model.state_dict()) == chain[-1].model
    assert cb.summary.dataset == first[0].dataset and cb.summary.num_examples == 64
    assert cb.summary.parent is None


@pytest.mark.parametrize("package", PACKAGES)
def test_resume_from_a_recorded_checkpoint_continues_its_lineage(tmp_path: Path,
                                                                 package: str) -> None:
    L = importlib.import_module(package)
    ledger = Ledger(tmp_path / "ledger.db")
    _, _, _, mc = fit(L, tmp_path, ledger, epochs=2)
    last = Path(mc.last_model_path)
    resumed = ledger.find(file_digest(last), type="checkpoint")[0]
    before = ledger.size

    t, model, cb, _ = fit(L, tmp_path, ledger, epochs=4, ckpt_path=str(last))
    assert model.loads == 1 and t.current_epoch == 4
    assert cb.resumed is not None and cb.resumed.chain[0].index == resumed.index
    new = [e for e in checkpoints(ledger) if e.index >= before]
    assert new and new[0].entry.parent == resumed.entry.model
    assert not [e for e in ledger.iter_entries(before, type="dataset")]  # same data, same salt
    lin = checkpoint_lineage(ledger, new[-1].entry.file)
    assert resumed.index in [e.index for e in lin.chain] and lin.chain[-1].entry.parent is None
    assert ledger.verify().ok


def tamper(src: Path, dst: Path) -> Path:
    raw = bytearray(src.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    dst.write_bytes(raw)
    return dst


@pytest.mark.parametrize("package", PACKAGES)
def test_modified_or_unrecorded_checkpoint_stops_the_fit_before_loading(tmp_path: Path,
                                                                        package: str) -> None:
    L = importlib.import_module(package)
    ledger = Ledger(tmp_path / "ledger.db")
    _, _, _, mc = fit(L, tmp_path, ledger, epochs=1)
    bad = tamper(Path(mc.last_model_path), tmp_path / "modified.ckpt")
    with pytest.raises(Exception) as direct:  # what torch.load itself would have said
        torch.load(bad, weights_only=True)
    assert not isinstance(direct.value, UnverifiedCheckpointError)

    # A checkpoint of the same kind from a run the ledger never saw.
    torch.manual_seed(1)
    other = trainer(L, tmp_path / "other", [], 1)
    other.fit(module_class(L)(), *loaders())
    unrecorded = tmp_path / "other" / "unrecorded.ckpt"
    other.save_checkpoint(unrecorded)

    size = ledger.size
    for path in (bad, unrecorded):
        torch.manual_seed(0)
        model = module_class(L)()
        weights = model_digest(model.state_dict())
        t = trainer(L, tmp_path, [LedgerCallback(ledger, progress=False)], 3)
        with pytest.raises(UnverifiedCheckpointError) as err:
            t.fit(model, *loaders(), ckpt_path=str(path))
        assert err.value.digest == file_digest(path) and "not in the ledger" in err.value.reason
        assert "on_unverified='warn'" in str(err.value)
        # torch.load never returned: no load hook ran, no weight or step changed.
        assert model.loads == 0 and t.global_step == 0
        assert model_digest(model.state_dict()) == weights
        with pytest.raises(UnverifiedCheckpointError):
            t.validate(model, loaders()[1], ckpt_path=str(path))
        assert model.loads == 0
    assert ledger.size == size


def test_unrecorded_checkpoint_loads_with_a_warning_when_asked(tmp_path: Path) -> None:
    import lightning.pytorch as L

    torch.manual_seed(1)
    other = trainer(L, tmp_path / "other", [], 1)
    other.fit(module_class(L)(), *loaders())
    other.save_checkpoint(tmp_path / "unrecorded.ckpt")
    loaded = torch.load(tmp_path / "unrecorded.ckpt", weights_only=True)["state_dict"]

    ledger = Ledger(tmp_path / "ledger.db")
    with pytest.warns(UserWarning, match="unverified checkpoint"):
        _, model, cb, _ = fit(L, tmp_path, ledger, epochs=2, on_unverified="warn",
                              ckpt_path=str(tmp_path / "unrecorded.ckpt"))
    assert model.loads == 1 and cb.resumed is None
    first = checkpoints(ledger)[0].entry
    assert first.parent == model_digest(loaded)  # honest: it names what it came from...
    with pytest.raises(CheckpointLineageError, match=r"parent model .* is not recorded"):
        checkpoint_lineage(ledger, first.file)  # ...which the ledger cannot vouch for


def test_parent_is_a_recorded_global_model_or_the_resume_is_refused(tmp_path: Path) -> None:
    import pytorch_lightning as L

    ledger = Ledger(tmp_path / "ledger.db")
    torch.manual_seed(0)
    start = model_digest(module_class(L)().state_dict())
    ledger.append([E.Model(run="fl", round=3, model=start, parent=None, inputs=[],
                           aggregator="FedAvg")])
    _, _, cb, mc = fit(L, tmp_path / "a", ledger, epochs=1, parent=start)
    assert cb.summary is not None and cb.summary.parent == start
    lin = checkpoint_lineage(ledger, file_digest(mc.last_model_path))
    assert lin.origin is not None and lin.origin.index == 0

    stranger = "sha256:" + "ab" * 32  # a global model this ledger never recorded
    _, _, _, mc2 = fit(L, tmp_path / "b", ledger, epochs=1, parent=stranger)
    model = module_class(L)()
    t = trainer(L, tmp_path / "b", [LedgerCallback(ledger, progress=False)], 2)
    with pytest.raises(UnverifiedCheckpointError, match=f"parent model {stranger}"):
        t.fit(model, *loaders(), ckpt_path=mc2.last_model_path)
    assert model.loads == 0


def test_async_checkpoint_io_saves_are_recorded(tmp_path: Path) -> None:
    import lightning.pytorch as L
    from lightning.pytorch.plugins.io import AsyncCheckpointIO

    ledger = Ledger(tmp_path / "ledger.db")
    torch.manual_seed(0)
    mc = L.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1,
                                     monitor="val_loss")
    t = trainer(L, tmp_path, [LedgerCallback(ledger, progress=False), mc], 3,
                plugins=[AsyncCheckpointIO()])
    t.fit(module_class(L)(), *loaders())
    files = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    assert len(files) == 3
    recorded = {e.entry.file for e in checkpoints(ledger)}
    assert {file_digest(f) for f in files} == recorded


@pytest.mark.parametrize("package", PACKAGES)
def test_one_class_serves_both_trainers_even_alone(tmp_path: Path, package: str) -> None:
    L = importlib.import_module(package)
    cb = LedgerCallback(tmp_path / "ledger.db", progress=False, datasets={})
    assert isinstance(cb, L.Callback)
    t = trainer(L, tmp_path, cb, 1)  # a lone callback, not in a list
    t.fit(module_class(L)(), *loaders())
    ledger = Ledger(tmp_path / "ledger.db")
    assert [e.entry.TYPE for e in ledger.iter_entries()] == ["checkpoint"]  # default saver
    assert checkpoints(ledger)[0].entry.datasets == []

    clone = pickle.loads(pickle.dumps(LedgerCallback(ledger)))  # as ddp_spawn sends it
    assert clone.ledger is not None and clone.ledger.size == ledger.size


def test_arguments_are_checked_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for kwargs, name in (({"parent": "sha256:xyz"}, "parent"),
                         ({"on_unverified": "ignore"}, "on_unverified"),
                         ({"salt": b"short"}, "salt"),
                         ({"datasets": ["train"]}, "datasets"),
                         ({"owner": ""}, "owner"),
                         ({"item_bytes": 3}, "item_bytes"),
                         ({"signer": 3}, "signer"),
                         ({"verifier_key": "log+0000+AAAA"}, "verifier_key"),
                         ({"verifier_key": 3}, "verifier_key")):
        with pytest.raises(ValueError, match=rf"^{name}:"):
            LedgerCallback(tmp_path / "l.db", **kwargs)
    with pytest.raises(ValueError, match=r"^ledger:"):
        LedgerCallback(42)  # type: ignore[arg-type]
    monkeypatch.setenv("FLCHAIN_LOG_VERIFIER", "not a key")
    with pytest.raises(ValueError, match=r"^FLCHAIN_LOG_VERIFIER:"):
        LedgerCallback(tmp_path / "l.db")


def test_streamed_resume_loads_the_private_copy_it_verified(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Above READ_ONCE_MAX (forced to 0 here) the file is streamed into a 0600 private copy
    while hashed, and that copy, not the original, is what torch.load reads."""
    import flchain_plugin.lightning.checkpoint_io as cio

    L = importlib.import_module(PACKAGES[0])
    ledger = Ledger(tmp_path / "ledger.db")
    _, _, _, mc = fit(L, tmp_path, ledger, epochs=2)
    last = Path(mc.last_model_path)
    monkeypatch.setattr(cio, "READ_ONCE_MAX", 0)
    seen: list[tuple[str, int]] = []
    real = cio._private_copy

    @contextlib.contextmanager
    def spy(path: str):  # type: ignore[no-untyped-def]
        with real(path) as (copy, digest):
            seen.append((copy, os.stat(copy).st_mode & 0o777))
            yield copy, digest

    monkeypatch.setattr(cio, "_private_copy", spy)
    t, model, cb, _ = fit(L, tmp_path, ledger, epochs=3, ckpt_path=str(last))
    assert model.loads == 1 and t.current_epoch == 3 and cb.resumed is not None
    assert seen and seen[0][1] == 0o600 and not os.path.exists(seen[0][0])

    bad = tamper(last, tmp_path / "modified.ckpt")
    torch.manual_seed(0)
    model = module_class(L)()
    t = trainer(L, tmp_path, [LedgerCallback(ledger, progress=False)], 3)
    with pytest.raises(UnverifiedCheckpointError):
        t.fit(model, *loaders(), ckpt_path=str(bad))
    assert model.loads == 0

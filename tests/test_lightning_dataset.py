"""Dataset commitments for Lightning: example bytes, manifests, salts, an untouched RNG."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from flchain_plugin.datasets import DatasetError, dataset_commitment, example_bytes
from flchain_plugin.digest import model_digest
from flchain_plugin.ledger import Ledger
from flchain_plugin.lightning import (
    LedgerCallback,
    Manifest,
    ManifestFile,
    commit_dataset,
    item_bytes,
    load_salt,
)

pytestmark = [pytest.mark.lightning, pytest.mark.timeout(120)]

SALT = bytes(range(32))


class Rows(Dataset):
    """A plain map-style dataset (not a TensorDataset): takes the generic, per-item path."""

    def __init__(self, rows: list[Any]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Any:
        return self.rows[i]


def test_rows_of_tensors_give_the_bytes_of_example_bytes() -> None:
    X = torch.randn(10, 3, 2)
    y = torch.arange(10)
    want = list(example_bytes(X.numpy(), y.numpy()))
    assert [item_bytes((X[i], y[i])) for i in range(10)] == want
    # Python ints are int64 and numpy rows equal tensor rows: a Flower client holding numpy
    # arrays commits the same dataset as a Lightning one holding tensors.
    assert [item_bytes((X[i].numpy(), int(y[i]))) for i in range(10)] == want
    fast = commit_dataset("train", TensorDataset(X, y), SALT, progress=False)
    slow = commit_dataset("train", Rows([(X[i], int(y[i])) for i in range(10)]), SALT,
                          progress=True)
    assert fast == slow
    assert fast.digest == dataset_commitment(want, SALT) and fast.examples == 10
    other = commit_dataset("train", TensorDataset(X, y), bytes(32), progress=False)
    assert other.digest != fast.digest  # the salt is what hides the data


def test_structured_examples_are_unambiguous() -> None:
    samples = [
        {"image": np.zeros((2, 2), np.uint8), "label": "cat"},
        {"image": np.zeros((2, 2), np.uint8), "label": "dog"},
        ("a", b"bytes", None, 1.5, True),
        (("a", "b"), "c"),
        ("a", ("b", "c")),
        [np.float32(1.0)],
        [np.float64(1.0)],
        torch.tensor([1.0], dtype=torch.bfloat16),
    ]
    encoded = [item_bytes(s) for s in samples]
    assert len(set(encoded)) == len(samples)
    assert [item_bytes(s) for s in samples] == encoded  # deterministic
    with pytest.raises(DatasetError, match="item_bytes="):
        item_bytes(object())
    with pytest.raises(DatasetError, match="string keys"):
        item_bytes({1: 2})


def test_custom_item_bytes_and_unsized_datasets(tmp_path: Path) -> None:
    rows = Rows([{"id": i} for i in range(5)])
    got = commit_dataset("t", rows, SALT, item_bytes=lambda r: str(r["id"]).encode(),
                         progress=False)
    assert got.digest == dataset_commitment([str(i).encode() for i in range(5)], SALT)

    class Stream(IterableDataset):
        def __iter__(self) -> Any:
            yield from range(3)

    with pytest.raises(DatasetError, match="Manifest"):
        commit_dataset("stream", Stream(), SALT, progress=False)
    with pytest.raises(DatasetError, match="empty"):
        commit_dataset("none", Rows([]), SALT, progress=False)


def test_manifest_from_files_equals_sha256sum_output(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    for name, body in (("b.bin", b"bbb"), ("a.txt", b"a"), ("sub/c.bin", b"\x00" * 1000)):
        (root / name).write_bytes(body)
    from_files = Manifest.from_files(root)
    assert [f.path for f in from_files.files] == ["a.txt", "b.bin", "sub/c.bin"]
    lines = [f"{hashlib.sha256((root / p).read_bytes()).hexdigest()}  {p}"
             for p in ("sub/c.bin", "a.txt", "b.bin")]
    (tmp_path / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    from_sums = Manifest.from_sha256sum(tmp_path / "SHA256SUMS")
    assert from_sums == from_files
    a = commit_dataset("files", from_files, SALT, progress=False)
    assert a == commit_dataset("files", from_sums, SALT, progress=False)
    assert a.examples == 3

    (tmp_path / "bad").write_text("nothex  a.txt\n")
    with pytest.raises(DatasetError, match="bad:1"):
        Manifest.from_sha256sum(tmp_path / "bad")
    with pytest.raises(DatasetError, match="twice"):
        Manifest((ManifestFile("a", "sha256:" + "0" * 64), ManifestFile("a", "sha256:" + "1" * 64)))


def test_salt_file_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "owner" / "data.salt"
    with pytest.raises(DatasetError, match="no salt file"):
        load_salt(path, create=False)
    salt = load_salt(path)
    assert len(salt) == 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_salt(path) == salt
    path.write_text("not hex")
    with pytest.raises(DatasetError, match="not a salt file"):
        load_salt(path)


def test_committing_leaves_the_global_rng_alone() -> None:
    class Noisy(Dataset):  # a random transform, as augmentations are
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> Any:
            return torch.rand(2) + i

    torch.manual_seed(3)
    np.random.seed(3)
    commit_dataset("noisy", Noisy(), SALT, progress=False)
    after = (torch.rand(4), np.random.rand(2))
    torch.manual_seed(3)
    np.random.seed(3)
    assert torch.equal(after[0], torch.rand(4)) and np.array_equal(after[1], np.random.rand(2))


def _train(tmp_path: Path, callbacks: list[Any]) -> str:
    import lightning.pytorch as L

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning\..*")

    class Drop(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.5),
                                           torch.nn.Linear(16, 1))

        def training_step(self, batch: Any, i: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    L.seed_everything(7, verbose=False)
    X, Y = torch.randn(48, 4), torch.randn(48, 1)
    model = Drop()
    t = L.Trainer(max_epochs=2, callbacks=callbacks, default_root_dir=str(tmp_path),
                  logger=False, enable_progress_bar=False, enable_model_summary=False,
                  enable_checkpointing=False, accelerator="cpu")
    t.fit(model, DataLoader(TensorDataset(X, Y), batch_size=8, shuffle=True))
    return model_digest(model.state_dict())


def test_training_is_the_same_with_and_without_the_callback(tmp_path: Path) -> None:
    """Shuffling and dropout draw from the global RNG; committing must not move it."""
    plain = _train(tmp_path / "plain", [])
    ledger = Ledger(tmp_path / "ledger.db")
    cb = LedgerCallback(ledger, progress=False)
    assert _train(tmp_path / "cb", [cb]) == plain
    assert [e.entry.TYPE for e in ledger.iter_entries()] == ["dataset"]
    assert cb.summary is not None and cb.summary.update == plain


def test_given_datasets_are_committed_instead_of_the_loaders(tmp_path: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "x").write_bytes(b"x")
    precomputed = "sha256:" + "cd" * 32
    ledger = Ledger(tmp_path / "ledger.db")
    cb = LedgerCallback(ledger, salt=tmp_path / "owner.salt", owner="hospital-a",
                        datasets={"images": Manifest.from_files(root), "labels": precomputed})
    got = cb.commit(cb.datasets or {})
    assert [c.name for c in got] == ["images", "labels"] and got[1].digest == precomputed
    recorded = [e.entry for e in ledger.iter_entries(type="dataset")]
    assert [(d.name, d.owner, d.examples) for d in recorded] == [("images", "hospital-a", 1),
                                                                 ("labels", "hospital-a", None)]
    assert (tmp_path / "owner.salt").exists()
    cb.commit(cb.datasets or {})  # the same commitments again: nothing new recorded
    assert ledger.size == 2

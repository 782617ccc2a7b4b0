"""LedgerCallback: every checkpoint of a Lightning run in the ledger, every resume verified.

One class serves both `lightning.pytorch` and `pytorch_lightning`: it has the Callback base
of each package that is installed, because a Trainer accepts a lone callback only of its
own package's class (and ddp_spawn pickles callbacks by their module-level name).

- `setup` (the last hook before a `ckpt_path` is read) wraps the strategy's CheckpointIO,
  which then sees every save with its path and every resume load before `torch.load`.
- `on_train_start` (the first hook where the fit's DataLoaders exist) commits the training
  and validation datasets, salted, as one batch of `dataset` entries.
- Each save is one batch of one `checkpoint` entry, committed with a signed checkpoint
  (tree head) of that batch, as Flower rounds are. Only global rank 0 saves, so only it
  writes; every rank verifies the resume file it reads itself, so all ranks stop together.
- A resume pins the log's verifier key (`verifier_key=`, FLCHAIN_LOG_VERIFIER, or the key
  this process signs with) and checks the lineage in the tree that key signed; then it
  checks that the weights it loaded are the ones the file's entry records.
"""

from __future__ import annotations

import atexit
import importlib
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import entries as E
from ..canonical import json_value
from ..commit import commit, key_path, ledger_path, log_signer
from ..datasets import SCHEME, DatasetError
from ..digest import json_digest, model_digest, parse_digest
from ..ledger import Ledger
from ..notes import Signer, Verifier
from ..pinning import VERIFIER_ENV, configured_verifier
from . import checkpoint_io
from .dataset import Commitment, ItemBytes, commit_dataset, load_salt, loader_datasets
from .lineage import (
    CheckpointLineage,
    CheckpointLineageError,
    UnverifiedCheckpointError,
    checkpoint_lineage,
)

SALT_FILE = "flchain-dataset.salt"
_UNSHARDED = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")

DatasetSource = Any
"""A map-style dataset, a `Manifest`, or a precomputed commitment digest (`sha256:...`)."""


@dataclass(frozen=True)
class FitSummary:
    """What a fit produced: in a Flower client, `update` and `dataset` are what
    `signing_mod` signs (`parent` is the global model it trained from)."""

    parent: str | None
    update: str
    dataset: str | None
    datasets: tuple[Commitment, ...]
    num_examples: int | None
    checkpoints: tuple[str, ...] = field(default_factory=tuple)


def hparams_digest(hparams: Mapping[str, Any] | None) -> str | None:
    """SHA-256 of the hyper-parameters' canonical JSON, or None when there are none."""
    if not hparams:
        return None
    return json_digest(json_value(dict(hparams)))


def _score(trainer: Any, checkpoint: Mapping[str, Any]) -> tuple[str | None, float | None]:
    cb = getattr(trainer, "checkpoint_callback", None)
    monitor = getattr(cb, "monitor", None)
    if not monitor:
        return None, None
    value = getattr(trainer, "callback_metrics", {}).get(monitor)
    try:
        score = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return monitor, None
    return monitor, score if math.isfinite(score) else None


def _destroy_process_group() -> None:
    try:
        from lightning.fabric.utilities.distributed import _destroy_dist_connection
    except ImportError:
        from lightning_fabric.utilities.distributed import _destroy_dist_connection
    _destroy_dist_connection()


class LedgerLogic:
    """The callback's behaviour, independent of which Lightning package calls it."""

    def __init__(
        self,
        ledger: Ledger | str | os.PathLike[str] | None,
        *,
        parent: str | None = None,
        datasets: Mapping[str, DatasetSource] | None = None,
        salt: bytes | str | os.PathLike[str] | None = None,
        owner: str = "local",
        on_unverified: Literal["raise", "warn"] = "raise",
        item_bytes: ItemBytes | None = None,
        progress: bool = True,
        signer: Signer | str | os.PathLike[str] | None = None,
        verifier_key: Verifier | str | None = None,
    ):
        if ledger is not None and not isinstance(ledger, (Ledger, str, os.PathLike)):
            raise ValueError(f"ledger: want a Ledger, a path or None, got {type(ledger).__name__}")
        if parent is not None:
            try:
                parse_digest(parent)
            except ValueError as e:
                raise ValueError(f"parent: {e}") from None
        if on_unverified not in ("raise", "warn"):
            raise ValueError(f"on_unverified: want 'raise' or 'warn', got {on_unverified!r}")
        if datasets is not None and not isinstance(datasets, Mapping):
            raise ValueError("datasets: want a dict of name -> dataset, Manifest or digest")
        if isinstance(salt, (bytes, bytearray)) and len(salt) < 16:
            raise ValueError("salt: want at least 16 random bytes (datasets.new_salt())")
        if not isinstance(owner, str) or not owner:
            raise ValueError("owner: want a non-empty string naming the data owner")
        if item_bytes is not None and not callable(item_bytes):
            raise ValueError("item_bytes: want a function example -> bytes")
        if signer is not None and not isinstance(signer, (Signer, str, os.PathLike)):
            raise ValueError(f"signer: want a notes.Signer or a key file path, got {signer!r}")
        # PinError (a ValueError) names the argument or variable the key came from.
        self.verifier = configured_verifier(verifier_key, "verifier_key")
        self._ledger = ledger if isinstance(ledger, Ledger) else None
        self._ledger_path = (
            None if ledger is None or isinstance(ledger, Ledger) else os.fspath(ledger)
        )
        self.parent = parent
        self.datasets = dict(datasets) if datasets is not None else None
        self.salt = salt
        self.owner = owner
        self.on_unverified = on_unverified
        self.item_bytes = item_bytes
        self.progress = progress
        self._signer_arg = signer
        self._signer: Signer | None = None
        self._trainer: Any = None
        self._tip: str | None = parent  # model digest the next step continues from
        self._tip_step = -1
        self._step_parent: str | None = parent
        self._fit_start: str | None = parent
        self.commitments: tuple[Commitment, ...] = ()
        self.recorded: list[str] = []  # file digests recorded in this fit
        self.resumed: CheckpointLineage | None = None
        self.summary: FitSummary | None = None

    # -- pickling (ddp_spawn sends callbacks to its workers) ---------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._ledger is not None:
            path = getattr(self._ledger.store, "path", None)
            if path is None:
                raise TypeError("this ledger's store cannot be sent to another process")
            state["_ledger"], state["_ledger_path"] = None, os.fspath(path)
        state["_trainer"] = None
        state["_signer"] = None  # private keys stay in this process; reloaded from the file
        if isinstance(self._signer_arg, Signer):
            raise TypeError("a Signer object cannot be sent to another process: pass "
                            "LedgerCallback(signer=<key file>) instead")
        return state

    @property
    def ledger(self) -> Ledger | None:
        if self._ledger is None and self._ledger_path is not None:
            self._ledger = Ledger(self._ledger_path)
        return self._ledger

    def _signing_key(self, ledger: Ledger) -> Signer:
        """The key that signs this ledger's checkpoints (`<ledger file>.key` by default)."""
        if self._signer is None:
            self._signer = log_signer(ledger, self._signer_arg)
        return self._signer

    def _commit(self, batch: list[E.Entry]) -> None:
        led = self.ledger
        assert led is not None
        commit(led, batch, signer=self._signing_key(led))

    def pinned_key(self, ledger: Ledger) -> Verifier:
        """The log key a resume trusts: the configured one, else the key this process signs
        with. A process that holds neither is not the writer, so it must be told."""
        if self.verifier is not None:
            return self.verifier
        path = ledger_path(ledger)
        if self._signer_arg is not None or self._signer is not None or path is None or (
            key_path(path).exists()
        ):
            return self._signing_key(ledger).verifier
        raise CheckpointLineageError(
            f"no log key is pinned and this process does not hold {key_path(path)}: pass "
            f"LedgerCallback(verifier_key='<name>+<id>+<key>') or set {VERIFIER_ENV} to the "
            "verifier key of the ledger's writer (`flchain keygen` prints it)"
        )

    # -- hooks -------------------------------------------------------------------------

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._trainer = trainer
        strategy = trainer.strategy
        if type(strategy).__name__ in _UNSHARDED:
            warnings.warn(
                f"LedgerCallback: {type(strategy).__name__} saves and loads sharded checkpoints "
                "without a CheckpointIO; they are neither recorded nor verified",
                stacklevel=2,
            )
        checkpoint_io.install(strategy, self)
        led = self.ledger
        if led is not None and self.verifier is not None and trainer.is_global_zero:
            own = self._signing_key(led).verifier
            if own != self.verifier:
                raise ValueError(
                    f"verifier_key: the pinned key {self.verifier.vkey} is not the key this "
                    f"callback signs the ledger with ({own.vkey}); its own saves would not "
                    "verify on resume. Pass the writer's signer= or its verifier key."
                )
        if stage == "fit":
            self._tip_step = -1
            self._fit_start = self._tip
            self.recorded = []
            self.summary = None
        if getattr(trainer, "world_size", 1) > 1:
            # Lightning tears down only NCCL process groups; a live gloo group at exit can
            # abort the process after a successful fit.
            atexit.unregister(_destroy_process_group)
            atexit.register(_destroy_process_group)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        sources = self.datasets
        if sources is None:
            sources = {}
            train = loader_datasets(trainer.train_dataloader)
            val = loader_datasets(trainer.val_dataloaders)
            for prefix, found in (("train", train), ("val", val)):
                for i, ds in enumerate(found):
                    sources[prefix if len(found) == 1 else f"{prefix}{i}"] = ds
        self.commitments = self.commit(sources, trainer)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        train = next((c for c in self.commitments if c.name.startswith("train")), None)
        self.summary = FitSummary(
            parent=self._fit_start,
            update=model_digest(pl_module.state_dict()),
            dataset=train.digest if train else None,
            datasets=self.commitments,
            num_examples=train.examples if train else None,
            checkpoints=tuple(self.recorded),
        )

    # -- datasets ----------------------------------------------------------------------

    def _salt(self, trainer: Any) -> bytes:
        if isinstance(self.salt, (bytes, bytearray)):
            return bytes(self.salt)
        path = self.salt or Path(getattr(trainer, "default_root_dir", ".") or ".") / SALT_FILE
        return load_salt(path)

    def commit(self, sources: Mapping[str, DatasetSource], trainer: Any = None) -> tuple[
        Commitment, ...
    ]:
        """Commit the datasets and record each new commitment (one batch)."""
        if not sources:
            return ()
        needs_salt = any(not isinstance(s, str) for s in sources.values())
        salt = self._salt(trainer) if needs_salt else b""
        out = []
        for name, src in sources.items():
            try:
                out.append(commit_dataset(name, src, salt, item_bytes=self.item_bytes,
                                          progress=self.progress))
            except (DatasetError, ValueError) as e:
                raise DatasetError(f"LedgerCallback: dataset {name!r}: {e}") from e
        led = self.ledger
        if led is not None:
            new = [
                E.Dataset(dataset=c.digest, owner=self.owner, scheme=SCHEME, examples=c.examples,
                          name=c.name)
                for c in out
                if not led.find(c.digest, type="dataset")
            ]
            if new:
                self._commit(new)
        return tuple(out)

    # -- the CheckpointIO wrapper's questions ------------------------------------------

    def wants_record(self, checkpoint: Mapping[str, Any]) -> bool:
        # ddp_spawn hands its results back in a bare state_dict file: not a checkpoint
        if self.ledger is None or "pytorch-lightning_version" not in checkpoint:
            return False
        if "state_dict" not in checkpoint:
            return False
        return self._trainer is None or bool(self._trainer.is_global_zero)

    def record_save(self, checkpoint: Mapping[str, Any], path: str, file: str, model: str) -> None:
        led = self.ledger
        assert led is not None
        step = int(checkpoint.get("global_step", 0))
        if step > self._tip_step:  # top-k, last and manual saves of one step share a parent
            self._step_parent, self._tip_step = self._tip, step
        monitor, score = _score(self._trainer, checkpoint)
        entry = E.TrainingCheckpoint(
            file=file,
            model=model,
            epoch=int(checkpoint.get("epoch", 0)),
            step=step,
            name=self._name(path),
            parent=self._step_parent,
            monitor=monitor,
            score=score,
            hparams=hparams_digest(checkpoint.get("hyper_parameters")),
            datasets=[c.digest for c in self.commitments],
        )
        if not any(c.entry.file == file for c in led.find(file, type="checkpoint")):  # type: ignore[attr-defined]
            self._commit([entry])
        self._tip = model
        if file not in self.recorded:
            self.recorded.append(file)

    def _name(self, path: str) -> str:
        root = getattr(self._trainer, "default_root_dir", None)
        if root:
            try:
                return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
            except ValueError:
                pass
        return Path(path).name

    def should_verify(self, path: str) -> bool:
        want = getattr(self._trainer, "ckpt_path", None)
        return want is not None and os.fspath(want) == path

    def verify_load(self, path: str, file: str) -> None:
        led = self.ledger
        self.resumed = None
        try:
            if led is None:
                raise CheckpointLineageError("LedgerCallback has no ledger to check it against")
            try:
                pin = self.pinned_key(led)
            except CheckpointLineageError:
                checkpoint_lineage(led, file)  # a file never recorded says so first
                raise
            self.resumed = checkpoint_lineage(led, file, verifier=pin)
        except CheckpointLineageError as e:
            self._unverified(path, file, str(e))

    def _unverified(self, path: str, file: str, reason: str) -> None:
        if self.on_unverified == "raise":
            raise UnverifiedCheckpointError(path, file, reason) from None
        warnings.warn(f"LedgerCallback: loading unverified checkpoint {path} ({file}): {reason}",
                      stacklevel=3)

    def loaded(self, path: str, checkpoint: Mapping[str, Any]) -> None:
        """The weights torch.load returned must be the ones the file's entry records (the
        file digest vouches for the bytes, the model digest for the weights the lineage
        names); then they are the next save's parent. Runs before Lightning restores them."""
        model = model_digest(checkpoint["state_dict"]) if "state_dict" in checkpoint else None
        if self.resumed is not None and model != self.resumed.entry.model:
            recorded = self.resumed
            self.resumed = None
            self._unverified(
                path, recorded.file,
                f"its weights digest {model} is not the model digest {recorded.entry.model} "
                f"its ledger entry {recorded.chain[0].index} records",
            )
        self._tip = self._step_parent = self._fit_start = model
        self._tip_step = -1


def _callback_bases() -> tuple[type, ...]:
    bases = []
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            bases.append(importlib.import_module(name).Callback)
        except ImportError:
            continue
    if not bases:
        raise ImportError(
            "flchain_plugin.lightning needs Lightning: pip install 'flchain-plugin[lightning]' "
            "(lightning or pytorch-lightning)"
        )
    return tuple(bases)


class LedgerCallback(LedgerLogic, *_callback_bases()):  # type: ignore[misc]
    """Records every checkpoint of a Trainer in a ledger and refuses unverified resumes.

    `Trainer(callbacks=[LedgerCallback("ledger.db")])` in `lightning.pytorch` or
    `pytorch_lightning`. `parent`: the model digest the run starts from (a Flower global
    model); `datasets`: what to commit instead of the fit's loaders (name -> dataset,
    `Manifest` or commitment digest; `{}` for none); `salt`: bytes or the salt file the data
    owner keeps (default `<default_root_dir>/flchain-dataset.salt`, made on first use);
    `on_unverified="warn"` loads an unverified resume checkpoint with a warning.
    `signer`: the key that signs a checkpoint (tree head) per batch (a notes.Signer or key
    file; default `<ledger file>.key`, made on first use). `verifier_key`: the log's
    verifier key a resume pins (`<name>+<id>+<key>`; default the FLCHAIN_LOG_VERIFIER
    environment variable, else the key this process signs with); a ledger whose newest
    checkpoint another key signed is refused.
    After a fit, `summary` holds the update and dataset digests a Flower client signs.
    """

"""PyTorch Lightning integration: `LedgerCallback` for `lightning.pytorch` and
`pytorch_lightning` Trainers.

    trainer = Trainer(callbacks=[LedgerCallback("runs/ledger.db")])

Names are imported on first use, so `flchain_plugin.lightning.cli` (checkpoint lineage) and
the dataset helpers work without Lightning installed; `LedgerCallback` needs one of the
two packages.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..pinning import VERIFIER_ENV
    from .callback import SALT_FILE, FitSummary, LedgerCallback, hparams_digest
    from .dataset import Commitment, Manifest, ManifestFile, commit_dataset, item_bytes, load_salt
    from .lineage import (
        CheckpointLineage,
        CheckpointLineageError,
        UnverifiedCheckpointError,
        checkpoint_lineage,
    )

_NAMES = {
    "SALT_FILE": ".callback",
    "FitSummary": ".callback",
    "LedgerCallback": ".callback",
    "hparams_digest": ".callback",
    "Commitment": ".dataset",
    "Manifest": ".dataset",
    "ManifestFile": ".dataset",
    "commit_dataset": ".dataset",
    "item_bytes": ".dataset",
    "load_salt": ".dataset",
    "VERIFIER_ENV": "..pinning",
    "CheckpointLineage": ".lineage",
    "CheckpointLineageError": ".lineage",
    "UnverifiedCheckpointError": ".lineage",
    "checkpoint_lineage": ".lineage",
}

__all__ = [
    "SALT_FILE",
    "VERIFIER_ENV",
    "CheckpointLineage",
    "CheckpointLineageError",
    "Commitment",
    "FitSummary",
    "LedgerCallback",
    "Manifest",
    "ManifestFile",
    "UnverifiedCheckpointError",
    "checkpoint_lineage",
    "commit_dataset",
    "hparams_digest",
    "item_bytes",
    "load_salt",
]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""PyTorch Lightning integration: `LedgerCallback` for `lightning.pytorch` and
`pytorch_lightning` Trainers (needs one of them installed)."""

from .callback import SALT_FILE, FitSummary, LedgerCallback, hparams_digest
from .dataset import Commitment, Manifest, ManifestFile, commit_dataset, item_bytes, load_salt
from .lineage import (
    CheckpointLineage,
    CheckpointLineageError,
    UnverifiedCheckpointError,
    checkpoint_lineage,
)

__all__ = [
    "SALT_FILE",
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

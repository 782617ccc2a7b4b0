"""flchain-plugin: an RFC 9162 transparency log for federated and centralised training.

The core (ledger, digests, entries, signed checkpoints) needs no ML framework; the
integrations live in `flchain_plugin.flower`, `flchain_plugin.mlflow` and
`flchain_plugin.lightning` and import their framework themselves.

Top-level names load on first use, so importing a submodule (MLflow's plugin entry point,
say) never fails because of a dependency that submodule does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Checkpoint": "checkpoint",
    "verify_checkpoint": "checkpoint",
    "RawTensor": "digest",
    "directory_digest": "digest",
    "file_digest": "digest",
    "model_digest": "digest",
    "EntryError": "entries",
    "Ledger": "ledger",
    "TreeHead": "ledger",
    "VerifyReport": "ledger",
    "Signer": "notes",
    "Verifier": "notes",
    "generate_key": "notes",
    "load_private_key": "notes",
}

__all__ = [
    "Checkpoint",
    "EntryError",
    "Ledger",
    "RawTensor",
    "Signer",
    "TreeHead",
    "Verifier",
    "VerifyReport",
    "directory_digest",
    "file_digest",
    "generate_key",
    "load_private_key",
    "model_digest",
    "verify_checkpoint",
]

if TYPE_CHECKING:
    from .checkpoint import Checkpoint, verify_checkpoint
    from .digest import RawTensor, directory_digest, file_digest, model_digest
    from .entries import EntryError
    from .ledger import Ledger, TreeHead, VerifyReport
    from .notes import Signer, Verifier, generate_key, load_private_key


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flchain_plugin' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

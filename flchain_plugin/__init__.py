"""flchain-plugin: an RFC 9162 transparency log for federated and centralised training.

The core (ledger, digests, entries, signed checkpoints) needs no ML framework; the
integrations live in `flchain_plugin.flower`, `flchain_plugin.mlflow` and
`flchain_plugin.lightning` and import their framework themselves.
"""

from .checkpoint import Checkpoint, verify_checkpoint
from .digest import RawTensor, directory_digest, file_digest, model_digest
from .entries import EntryError
from .ledger import Ledger, TreeHead, VerifyReport
from .notes import Signer, Verifier, generate_key, load_private_key

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
__version__ = "0.1.0"

"""MLflow integration: the `flchain+<db>` plugin flag and verify-before-load.

Set `MLFLOW_TRACKING_URI=flchain+sqlite:///mlflow.db` (or run `mlflow server
--backend-store-uri flchain+<db> --app-name flchain`) and every logged model and model
version is committed to the ledger, once each, with a signed checkpoint; `load_model`
refuses a model whose files differ, and with the log's verifier key pinned (`verifier=`
or FLCHAIN_LOG_VERIFIER) a ledger re-signed by any other key.

Names are imported lazily: MLflow imports this package while it registers its own stores,
so importing it must not import MLflow back.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "load_model": ".load",
    "verified": ".load",
    "verify_model": ".load",
    "open_view": ".load",
    "Verification": ".verify",
    "TamperedModelError": ".commitment",
    "UnknownModelError": ".commitment",
    "FileChange": ".commitment",
    "MismatchWarning": ".commitment",
    "DuplicateCommitmentWarning": ".commitment",
    "DuplicateCommitmentError": ".identity",
    "LedgerUnavailableError": ".view",
    "digest_tags": ".weights",
    "MODEL_DIGEST_TAG": ".weights",
    "PluginConfig": ".config",
    "parse_store_uri": ".config",
    "FlchainTrackingStore": ".store",
    "FlchainRegistryStore": ".registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

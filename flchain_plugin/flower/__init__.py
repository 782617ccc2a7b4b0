"""Flower integration: `LedgerStrategy` (server) and `signing_mod` (clients).

    strategy = LedgerStrategy(FedAvg(...), ledger="runs/ledger.db")   # the one-line change
    app = ClientApp(mods=[signing_mod("keys/", server_key=strategy.verifier_key)])

Names are imported lazily so `flchain_plugin.flower.cli` (lineage, rollback) works without
Flower installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .arrays import arrayrecord_digest
    from .keys import client_key, client_verifier_keys, ledger_key
    from .mod import SigningMod, signing_mod
    from .policy import MedianNormBound, Policy
    from .strategy import LedgerStrategy

_NAMES = {
    "LedgerStrategy": ".strategy",
    "signing_mod": ".mod",
    "SigningMod": ".mod",
    "Policy": ".policy",
    "MedianNormBound": ".policy",
    "arrayrecord_digest": ".arrays",
    "client_key": ".keys",
    "client_verifier_keys": ".keys",
    "ledger_key": ".keys",
}

__all__ = [
    "LedgerStrategy",
    "MedianNormBound",
    "Policy",
    "SigningMod",
    "arrayrecord_digest",
    "client_key",
    "client_verifier_keys",
    "ledger_key",
    "signing_mod",
]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

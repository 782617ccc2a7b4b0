"""Ed25519 keys for a Flower federation: the server's checkpoint key and the clients' keys.

In simulation, node ids change every run and node_config holds only `partition-id`, so a
client's key is the file `client-<partition-id>.key` in a key directory. In deployment a
SuperNode names its key file itself (`--node-config 'flchain-key="n0.key"'`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..commit import load_or_create_key, log_signer
from ..ledger import Ledger
from ..notes import Signer, generate_key

CLIENT_KEY_NAME = "client-{partition}"


def client_key_path(directory: str | os.PathLike[str], partition: int) -> Path:
    return Path(directory) / f"client-{int(partition)}.key"


def client_key(directory: str | os.PathLike[str], partition: int, *, create: bool = True,
               generate: Callable[[str], Signer] = generate_key) -> Signer:
    """The key of simulated client `partition` in `directory` (see module docstring),
    made by `generate` when missing (Ed25519 unless told)."""
    return load_or_create_key(client_key_path(directory, partition),
                              CLIENT_KEY_NAME.format(partition=int(partition)), create=create,
                              generate=generate)


def client_verifier_keys(directory: str | os.PathLike[str], partitions: int) -> list[str]:
    """Verifier keys of clients 0..partitions-1, created if missing: a Policy allow-list."""
    return [client_key(directory, p).verifier_key for p in range(partitions)]


def ledger_key(ledger_file: str | os.PathLike[str]) -> Signer:
    """The checkpoint key of the ledger file at `ledger_file` (both created if missing):
    what LedgerStrategy signs with, so `ledger_key(p).verifier_key` is what clients pin."""
    with Ledger(ledger_file) as led:
        return log_signer(led)

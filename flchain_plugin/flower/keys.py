"""Ed25519 keys for a Flower federation: the server's checkpoint key and the clients' keys.

In simulation, node ids change every run and node_config holds only `partition-id`, so a
client's key is the file `client-<partition-id>.key` in a key directory. In deployment a
SuperNode names its key file itself (`--node-config 'flchain-key="n0.key"'`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..notes import KeyFileError, Signer, generate_key, load_private_key, save_private_key

CLIENT_KEY_NAME = "client-{partition}"


def client_key_path(directory: str | os.PathLike[str], partition: int) -> Path:
    return Path(directory) / f"client-{int(partition)}.key"


def load_or_create_key(path: str | os.PathLike[str], name: str, *, create: bool = True) -> Signer:
    """The key in `path`, created (mode 0600, atomically) on first use when `create`.

    Several processes may race to create it: one file wins and every caller loads it.
    """
    path = Path(path)
    if path.exists():
        return load_private_key(path)
    if not create:
        raise KeyFileError(
            f"no key file {path}: create one with `flchain keygen {name} --out {path}`"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_private_key(generate_key(name), path, None)
    except KeyFileError:
        if not path.exists():
            raise
    return load_private_key(path)


def client_key(directory: str | os.PathLike[str], partition: int, *, create: bool = True) -> Signer:
    """The key of simulated client `partition` in `directory` (see module docstring)."""
    return load_or_create_key(client_key_path(directory, partition),
                              CLIENT_KEY_NAME.format(partition=int(partition)), create=create)


def client_verifier_keys(directory: str | os.PathLike[str], partitions: int) -> list[str]:
    """Verifier keys of clients 0..partitions-1, created if missing: a Policy allow-list."""
    return [client_key(directory, p).verifier_key for p in range(partitions)]


def server_key(path: str | os.PathLike[str], origin: str) -> Signer:
    """The ledger's checkpoint key at `path`, created if missing; named after `origin`."""
    signer = load_or_create_key(path, origin)
    if signer.name != origin:
        raise KeyFileError(
            f"key file {path} is named {signer.name!r}, but the ledger origin is {origin!r}: "
            "a checkpoint key must be named after its log"
        )
    return signer


def ledger_key_path(ledger_path: str | os.PathLike[str]) -> Path:
    """Where a ledger file's checkpoint key lives: `<ledger file>.key`."""
    return Path(os.fspath(ledger_path) + ".key")


def ledger_key(ledger_path: str | os.PathLike[str]) -> Signer:
    """The checkpoint key of the ledger file at `ledger_path` (both created if missing):
    what LedgerStrategy signs with, so `ledger_key(p).verifier_key` is what clients pin."""
    from ..ledger import Ledger

    with Ledger(ledger_path) as led:
        origin = led.origin
    return server_key(ledger_key_path(ledger_path), origin)

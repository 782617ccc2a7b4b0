"""Kept client updates: each encrypted under its own key, so erasing one is destroying a key.

`flchain audit replay` recomputes every round from the updates it aggregated, so those
updates must outlive the round; but they are derived from a client's data, and a client
may ask for them to be erased. Each update is therefore stored as one file encrypted with
AES-256-GCM under a fresh random key of its own (from `cryptography`), addressed by the
update's digest (the one its `update` entry and signed statement name):

    <root>/updates/sha256/<2 hex>/<64 hex>.enc   MAGIC || nonce(12) || ciphertext || tag(16)
    <root>/keys/sha256/<2 hex>/<64 hex>.key      the 32-byte key, nothing else

The plaintext is the blob store's tensor container (`blobs.pack_tensors`: the `.npy` bytes
exactly as the client sent them). The digest is the associated data, so a ciphertext moved
to another digest's name fails to decrypt; `get` re-digests the plaintext, so whoever holds
the keys cannot substitute other weights unnoticed either.

Erasure (crypto-shredding) destroys the key file (overwritten with zeros, fsynced, then
unlinked) and the ciphertext. Honestly: on ext4/xfs without data journalling the overwrite
reaches the key's blocks; copy-on-write filesystems (btrfs, ZFS), SSD wear levelling,
snapshots and backups may keep old blocks that no program can reach. Keeping `keys/` on
storage you control (a separate, encrypted volume, or its own directory via `keys=`) and
out of backups is what makes a destroyed key gone; the ciphertext may then linger anywhere.
"""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .blobs import (
    BlobError,
    address,
    addressed,
    default_root,
    fsync_dir,
    pack_tensors,
    unpack_tensors,
    write_atomic,
)
from .digest import DigestError, model_digest, parse_digest

MAGIC = b"flchain-update/v1\n"
NONCE_SIZE = 12
KEY_SIZE = 32


class VaultError(BlobError):
    """A kept update is missing, erased, damaged or cannot be stored."""


class UpdateVault:
    """Encrypted client updates under `root` (a blob store directory), keys under `keys`
    (default `<root>/keys`)."""

    def __init__(self, root: str | os.PathLike[str], keys: str | os.PathLike[str] | None = None):
        self.root = Path(root)
        self.keys = Path(keys) if keys is not None else self.root / "keys"

    @classmethod
    def beside(cls, ledger: Any) -> UpdateVault | None:
        """The vault in the blob store next to a file-backed Ledger (None without a file)."""
        path = getattr(getattr(ledger, "store", None), "path", None)
        return cls(default_root(path)) if path is not None else None

    def __repr__(self) -> str:
        return f"UpdateVault({str(self.root)!r})"

    def path(self, digest: str) -> Path:
        return address(self.root / "updates", digest, ".enc")

    def key_path(self, digest: str) -> Path:
        return address(self.keys, digest, ".key")

    def has(self, digest: str) -> bool:
        """Whether the update can still be read: its ciphertext and its key both exist."""
        return self.path(digest).is_file() and self.key_path(digest).is_file()

    def __iter__(self) -> Iterator[str]:
        """Digests of the kept (readable) updates."""
        return (d for d in addressed(self.root / "updates", ".enc")
                if self.key_path(d).is_file())

    def put(self, digest: str, tensors: Mapping[str, np.ndarray | bytes]) -> str:
        """Encrypt and store one update's tensors (`.npy` bytes or arrays) under `digest`,
        the digest its entry records. The key is written first: a crash leaves at worst a
        key without a ciphertext, never a ciphertext nobody can read. A kept digest is a
        no-op."""
        raw = parse_digest(digest)
        if not tensors:
            raise VaultError("refusing to keep an update with no tensors")
        if self.has(digest):
            return digest
        key = AESGCM.generate_key(bit_length=KEY_SIZE * 8)
        named = {str(k): v for k, v in tensors.items()}
        write_atomic(self.key_path(digest), lambda f: f.write(key))
        write_atomic(self.path(digest), lambda f: _seal(f, key, MAGIC + raw, named))
        return digest

    def get(self, digest: str, *, check: bool = True) -> dict[str, np.ndarray]:
        """The update's tensors, decrypted and (unless `check` is False) re-digested."""
        path, key_file = self.path(digest), self.key_path(digest)
        if not key_file.is_file():
            raise VaultError(f"update {digest} cannot be read: its key is not in {self.keys} "
                             "(erased, or never kept: see `flchain log --type erasure`)")
        try:
            key, data = key_file.read_bytes(), path.read_bytes()
        except OSError as e:
            raise VaultError(f"update {digest} cannot be read ({e.strerror or e}): it was "
                             "erased or never kept") from None
        head = len(MAGIC) + NONCE_SIZE
        if not data.startswith(MAGIC) or len(data) < head + 16 or len(key) != KEY_SIZE:
            raise VaultError(f"kept update {path} is damaged (not a {MAGIC[:-1].decode()} file "
                             "or a bad key); restore it from a backup")
        try:
            plain = AESGCM(key).decrypt(data[len(MAGIC):head], memoryview(data)[head:],
                                        MAGIC + parse_digest(digest))
            out = unpack_tensors(io.BytesIO(plain))
        except InvalidTag:
            raise VaultError(f"kept update {path} does not decrypt: it was altered or is not "
                             f"the update {digest}") from None
        except (KeyError, ValueError, zipfile.BadZipFile) as e:
            raise VaultError(f"kept update {path} is damaged ({e})") from None
        if check:
            try:
                got = model_digest(out)
            except DigestError as e:
                raise VaultError(f"kept update {path} is damaged: {e}") from None
            if got != digest:
                raise VaultError(f"kept update {path} holds {got}, not {digest}: it was "
                                 "altered before it was encrypted")
        return out

    def erase(self, digest: str) -> bool:
        """Destroy the update's key (overwritten, fsynced, unlinked), then its ciphertext.
        Returns whether anything was there to destroy."""
        found = False
        key_file = self.key_path(digest)
        if key_file.is_file():
            found = True
            _shred(key_file)
        path = self.path(digest)
        if path.is_file():
            found = True
            os.unlink(path)
            fsync_dir(path.parent)
        return found


class _Sealing:
    """A write-only file that AES-GCM-encrypts what passes through it: the container is
    encrypted as it is written, in one pass, with no plaintext copy of the update."""

    def __init__(self, f: IO[bytes], encryptor: Any) -> None:
        self.f, self.encryptor = f, encryptor

    def write(self, data: Any) -> int:
        self.f.write(self.encryptor.update(data))
        return len(data)

    def flush(self) -> None:
        self.f.flush()


def _seal(f: IO[bytes], key: bytes, aad: bytes, tensors: Mapping[str, Any]) -> None:
    """MAGIC || nonce || ciphertext || tag: what `AESGCM.encrypt` would give, streamed."""
    nonce = os.urandom(NONCE_SIZE)
    encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(aad)
    f.write(MAGIC)
    f.write(nonce)
    pack_tensors(_Sealing(f, encryptor), tensors)  # type: ignore[arg-type]
    f.write(encryptor.finalize())
    f.write(encryptor.tag)


def _shred(path: Path) -> None:
    """Overwrite a small file with zeros, fsync, unlink, fsync its directory (see the module
    docstring for what this does and does not reach)."""
    size = path.stat().st_size
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, b"\0" * size)
        os.fsync(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fsync_dir(path.parent)

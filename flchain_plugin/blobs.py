"""Off-chain model weights, addressed by model digest, beside the ledger.

The ledger holds digests only; the weights that rollback restarts from live here, one
uncompressed `.npz` file per model version (numpy, no pickles), named by the model digest
of its tensors. Writes are atomic (temporary file, fsync, rename), so a blob is either
absent or complete; reads re-digest the tensors, so a damaged or swapped file is refused.
Deleting a blob (erasure, e.g. on a data owner's request: `flchain_plugin.erasure`) records
an `erasure` entry and never touches the log, so verification keeps passing and lineage
shows the gap. Kept client updates live beside, encrypted (`flchain_plugin.vault`), in the
same tensor container (`pack_tensors`).
"""

from __future__ import annotations

import contextlib
import os
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from . import entries as E
from .digest import DigestError, model_digest, parse_digest


class BlobError(ValueError):
    """A blob is missing, damaged or cannot be stored; the message says what to do."""


def default_root(ledger_path: str | os.PathLike[str]) -> Path:
    """Where a ledger file's blobs live: `<ledger>.blobs/` next to it."""
    p = Path(ledger_path)
    return p.with_name(p.name + ".blobs")


class BlobStore:
    """Content-addressed model weights under `root` (`sha256/<2 hex>/<64 hex>.npz`)."""

    SUFFIX = ".npz"

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    @classmethod
    def beside(cls, ledger: Any) -> BlobStore | None:
        """The store next to a file-backed Ledger (None for ledgers without a file)."""
        path = getattr(getattr(ledger, "store", None), "path", None)
        return cls(default_root(path)) if path is not None else None

    def __repr__(self) -> str:
        return f"BlobStore({str(self.root)!r})"

    def path(self, digest: str) -> Path:
        return address(self.root, digest, self.SUFFIX)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, str) and self.has(digest)

    def __iter__(self) -> Iterator[str]:
        """Digests of stored blobs."""
        return addressed(self.root, self.SUFFIX)

    def put(self, arrays: Mapping[str, Any], digest: str | None = None) -> str:
        """Store named tensors (numpy arrays or array-likes); return their model digest.

        `digest`, when the caller already computed it, skips re-hashing. Storing a digest
        that is present is a no-op.
        """
        arrs = {str(k): np.asarray(v) for k, v in arrays.items()}
        if not arrs:
            raise BlobError("refusing to store a model with no tensors")
        for k, v in arrs.items():
            if v.dtype.hasobject:
                raise BlobError(f"tensor {k!r} holds Python objects; only numeric tensors store")
        if digest is None:
            digest = model_digest(arrs)
        final = self.path(digest)
        if final.is_file():
            return digest
        write_atomic(final, lambda f: pack_tensors(f, arrs))
        return digest

    def get(self, digest: str, *, check: bool = True) -> dict[str, np.ndarray]:
        """The tensors stored under `digest`, re-digested unless `check` is False."""
        path = self.path(digest)
        if not path.is_file():
            raise BlobError(
                f"no blob for {digest} in {self.root}: it was never stored here or was erased "
                "(see `flchain log --type erasure`)"
            )
        try:
            with open(path, "rb") as f:
                out = unpack_tensors(f)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            raise BlobError(f"blob {path} is damaged ({e}); restore it from a backup") from e
        if check:
            try:
                got = model_digest(out)
            except DigestError as e:
                raise BlobError(f"blob {path} is damaged: {e}") from e
            if got != digest:
                raise BlobError(f"blob {path} holds {got}, not {digest}: it was altered")
        return out

    def delete(self, digest: str, ledger: Any = None, reason: str = "erasure") -> E.Erasure:
        """Destroy a blob; with `ledger`, record the `erasure` entry in it.

        The log keeps every entry naming the digest, so it still verifies; only the weights
        are gone.
        """
        entry = E.Erasure(blob=digest, reason=reason)
        path = self.path(digest)
        if not path.is_file():
            raise BlobError(f"no blob for {digest} in {self.root}: nothing to erase")
        if ledger is not None:
            ledger.append([entry])
        os.unlink(path)
        fsync_dir(path.parent)
        return entry


def address(base: Path, digest: str, suffix: str) -> Path:
    """Where a content-addressed file lives: `<base>/sha256/<2 hex>/<64 hex><suffix>` (the
    blob store's layout, shared by the update vault's ciphertexts and keys)."""
    h = parse_digest(digest).hex()
    return base / "sha256" / h[:2] / (h + suffix)


def addressed(base: Path, suffix: str) -> Iterator[str]:
    """The digests of the files `address(base, ..., suffix)` names that exist, in order."""
    root = base / "sha256"
    if not root.is_dir():
        return
    for sub in sorted(root.iterdir()):
        for f in sorted(sub.glob("*" + suffix)):
            yield "sha256:" + f.name[: -len(suffix)]


def pack_tensors(f: IO[bytes], arrays: Mapping[str, np.ndarray | bytes]) -> None:
    """Write named tensors as a zip of `.npy` members (numpy's `.npz` layout), names in
    `names.txt` so any tensor name stores (e.g. "a/b"). A `bytes` value is taken to be
    `.npy` bytes already (what a Flower Array carries) and is written as it is."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for i, v in enumerate(arrays.values()):
            if isinstance(v, (bytes, bytearray, memoryview)):
                z.writestr(f"{i}.npy", bytes(v))
            else:
                with z.open(f"{i}.npy", "w", force_zip64=True) as m:
                    np.lib.format.write_array(m, v, allow_pickle=False)
        z.writestr("names.txt", "\n".join(_escape(k) for k in arrays))


def unpack_tensors(f: IO[bytes]) -> dict[str, np.ndarray]:
    """The tensors `pack_tensors` wrote (no pickles)."""
    with zipfile.ZipFile(f) as z:
        names = [_unescape(n) for n in z.read("names.txt").decode("utf-8").split("\n")]
        out = {}
        for i, name in enumerate(names):
            with z.open(f"{i}.npy") as m:
                out[name] = np.lib.format.read_array(m, allow_pickle=False)
    return out


def write_atomic(final: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file whole or not at all: temporary file, fsync, rename, fsync the dir."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(final.parent)


def _escape(name: str) -> str:
    return name.replace("\\", "\\\\").replace("\n", "\\n")


def _unescape(name: str) -> str:
    out, i = [], 0
    while i < len(name):
        c = name[i]
        if c == "\\" and i + 1 < len(name):
            out.append("\n" if name[i + 1] == "n" else name[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

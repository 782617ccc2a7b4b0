"""Dataset commitments for Lightning: examples to bytes, salts, manifests, progress.

The commitment itself is `flchain_plugin.datasets.dataset_commitment` (salted Merkle tree,
framework-free). This module decides what an example's bytes are, so the same data gives the
same commitment whether it comes from a `TensorDataset`, any map-style dataset or a Flower
client's numpy arrays (`datasets.example_bytes(X, y)` gives the same bytes as a dataset
yielding `(x, y)` rows). Reading a dataset must not change training, so examples are read by
index, never by iterating a DataLoader, and with the global RNG state restored afterwards.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..canonical import canonical_json
from ..datasets import DatasetError, dataset_commitment, example_bytes, new_salt
from ..digest import PREFIX, as_raw_tensor, file_digest, parse_digest

ItemBytes = Callable[[Any], bytes]
"""Turns one dataset example into bytes (deterministically)."""


def _array_bytes(value: Any) -> bytes:
    t = as_raw_tensor("example", value)
    header = canonical_json({"dtype": t.dtype, "shape": list(t.shape)})
    return header + b"\n" + bytes(t.data)


def _is_array(value: Any) -> bool:
    if isinstance(value, (bool, int, float, np.ndarray, np.generic)):
        return True
    return type(value).__module__.startswith("torch") and hasattr(value, "dtype")


def _encode(value: Any, out: list[bytes], top: bool) -> None:
    if isinstance(value, (bool, int, float)):
        value = np.asarray(value, dtype=np.int64 if type(value) is int else None)
    if _is_array(value):
        out.append(_array_bytes(value))
    elif isinstance(value, Mapping):
        keys = sorted(value, key=str)
        if not all(isinstance(k, str) for k in keys):
            raise DatasetError("a dict example needs string keys to be committed")
        out.append(canonical_json({"dict": keys}) + b"\n")
        for k in keys:
            _encode(value[k], out, False)
    elif isinstance(value, (tuple, list)):
        if not top:
            out.append(canonical_json({"list": len(value)}) + b"\n")
        for v in value:
            _encode(v, out, False)
    elif isinstance(value, str):
        out.append(canonical_json({"str": value}) + b"\n")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        out.append(canonical_json({"bytes": len(data)}) + b"\n" + data)
    elif value is None:
        out.append(b'{"none":null}\n')
    elif hasattr(value, "__array__"):  # e.g. a PIL image
        out.append(_array_bytes(np.asarray(value)))
    else:
        raise DatasetError(
            f"cannot turn a {type(value).__name__} example into bytes; pass "
            "item_bytes=<function example -> bytes> or a Manifest of the files"
        )


def item_bytes(example: Any) -> bytes:
    """Deterministic bytes of one example (tensors, arrays, numbers, str, nested tuples/dicts).

    A tensor or array is `{"dtype","shape"}` JSON, a newline and its raw little-endian bytes,
    as in `datasets.example_bytes`; a top-level tuple is its elements one after another, so a
    `(x, y)` row equals `example_bytes(X, y)` of the stacked arrays. Python ints count as
    int64, floats as float64.
    """
    out: list[bytes] = []
    _encode(example, out, True)
    return b"".join(out)


@dataclass(frozen=True)
class ManifestFile:
    """One file of a manifest: relative path and SHA-256 digest."""

    path: str
    digest: str

    def item(self) -> bytes:
        return canonical_json({"digest": self.digest, "path": self.path})


@dataclass(frozen=True)
class Manifest:
    """A dataset given as its files' digests, for data too large to re-read at each fit.

    The owner hashes the files once (`from_files`, or `sha256sum` output read by
    `from_sha256sum`); the commitment is then over (path, digest) pairs in path order.
    """

    files: tuple[ManifestFile, ...]

    def __post_init__(self) -> None:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise DatasetError("manifest: a path is listed twice")
        for f in self.files:
            parse_digest(f.digest)
        ordered = tuple(sorted(self.files, key=lambda f: f.path.encode("utf-8")))
        object.__setattr__(self, "files", ordered)

    def __len__(self) -> int:
        return len(self.files)

    def items(self) -> Iterator[bytes]:
        return (f.item() for f in self.files)

    @classmethod
    def from_files(cls, root: str | os.PathLike[str], pattern: str = "**/*") -> Manifest:
        """Hash every regular file under `root` matching `pattern` (reads each file once)."""
        base = Path(root)
        if not base.is_dir():
            raise DatasetError(f"manifest: {root} is not a directory")
        files = []
        for p in sorted(base.glob(pattern)):
            if stat.S_ISREG(os.lstat(p).st_mode):
                files.append(ManifestFile(p.relative_to(base).as_posix(), file_digest(p)))
        if not files:
            raise DatasetError(f"manifest: no files under {root} match {pattern!r}")
        return cls(tuple(files))

    @classmethod
    def from_sha256sum(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read `sha256sum` output (`<64 hex>  <path>` per line) without touching the data."""
        files = []
        for n, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            hexd, sep, name = line.partition(" ")
            name = name[1:] if name[:1] in (" ", "*") else name
            if not sep or not name or len(hexd) != 64:
                raise DatasetError(f"{path}:{n}: want '<64 hex>  <path>' as sha256sum writes")
            files.append(ManifestFile(name, PREFIX + hexd.lower()))
        if not files:
            raise DatasetError(f"{path}: the manifest lists no files")
        return cls(tuple(files))


def load_salt(path: str | os.PathLike[str], create: bool = True) -> bytes:
    """The data owner's salt kept in `path` (hex), made (mode 0600) on first use.

    Keep this file with the data and out of the ledger: it is what keeps the commitment from
    revealing the examples, and what lets the owner open one example later.
    """
    p = Path(path)
    if p.exists():
        text = p.read_text("ascii").strip()
        try:
            salt = bytes.fromhex(text)
        except ValueError:
            raise DatasetError(
                f"{p}: not a salt file (want hex); move it away to make a new one"
            ) from None
        if len(salt) < 16:
            raise DatasetError(f"{p}: salt is {len(salt)} bytes, want at least 16")
        return salt
    if not create:
        raise DatasetError(f"{p}: no salt file; the data owner keeps it beside the data")
    salt = new_salt()
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(salt.hex() + "\n")
    return salt


@contextlib.contextmanager
def _isolated_rng() -> Iterator[None]:
    try:
        from lightning.pytorch.utilities.seed import isolate_rng
    except ImportError:
        from pytorch_lightning.utilities.seed import isolate_rng
    with isolate_rng():
        yield


def _tensor_dataset_items(dataset: Any) -> Iterator[bytes] | None:
    """TensorDataset rows through `example_bytes` (same bytes, no per-row tensor indexing)."""
    try:
        from torch.utils.data import TensorDataset
    except ImportError:  # pragma: no cover - torch comes with Lightning
        return None
    if type(dataset) is not TensorDataset:
        return None
    arrays = []
    for t in dataset.tensors:
        try:
            arrays.append(t.detach().cpu().numpy())
        except TypeError:  # a dtype numpy lacks (bfloat16): take the generic path
            return None
    return example_bytes(*arrays)


def _dataset_items(dataset: Any, to_bytes: ItemBytes | None) -> tuple[int | None, Iterator[bytes]]:
    if isinstance(dataset, Manifest):
        return len(dataset), dataset.items()
    try:
        n = len(dataset)
    except TypeError:
        n = None
    if n is None or not hasattr(dataset, "__getitem__"):
        raise DatasetError(
            f"{type(dataset).__name__} has no len()/index access (an IterableDataset is consumed "
            "by reading it): give LedgerCallback(datasets={'train': Manifest(...)}), a "
            "precomputed commitment digest, or datasets={} to commit none"
        )
    if to_bytes is None and (fast := _tensor_dataset_items(dataset)) is not None:
        return n, fast
    encode = to_bytes or item_bytes
    return n, (encode(dataset[i]) for i in range(n))


@dataclass(frozen=True)
class Commitment:
    """A dataset commitment: the digest the ledger records and how many examples it covers."""

    name: str
    digest: str
    examples: int | None


class _Progress:
    """A rich progress bar that counts examples as they are hashed."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def wrap(self, name: str, total: int | None, items: Iterable[bytes]) -> Iterator[bytes]:
        if not self.enabled:
            yield from items
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("[bold]committing {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task(name, total=total)
            pending = 0
            for item in items:
                yield item
                pending += 1
                if pending == 1024:
                    bar.advance(task, pending)
                    pending = 0
            bar.advance(task, pending)


def commit_dataset(
    name: str,
    dataset: Any,
    salt: bytes,
    *,
    item_bytes: ItemBytes | None = None,
    progress: bool = True,
) -> Commitment:
    """Commit a map-style dataset or a Manifest, streaming, with the global RNG untouched."""
    if isinstance(dataset, str):
        parse_digest(dataset)
        return Commitment(name, dataset, None)
    with _isolated_rng():
        n, items = _dataset_items(dataset, item_bytes)
        digest = dataset_commitment(_Progress(progress).wrap(name, n, items), salt)
    return Commitment(name, digest, n)


def loader_datasets(loaders: Any) -> list[Any]:
    """The datasets behind a DataLoader or a (nested) list/dict of them, in order."""
    if loaders is None:
        return []
    if isinstance(loaders, Mapping):
        return [d for k in loaders for d in loader_datasets(loaders[k])]
    if isinstance(loaders, Sequence) and not hasattr(loaders, "dataset"):
        return [d for v in loaders for d in loader_datasets(v)]
    ds = getattr(loaders, "dataset", None)
    return [] if ds is None else [ds]


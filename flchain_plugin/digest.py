"""Content digests: models as tensors, saved models as files (formats v1).

A model digest is the identity of weights whatever container they came in (torch
state_dict, numpy arrays, raw bytes per tensor; Flower's ArrayRecord goes through
`RawTensor`), so Flower, MLflow and Lightning entries about the same weights agree.
Tensor memory is hashed in place; chunks are hashed on a thread pool because hashlib
releases the GIL.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import merkle
from .canonical import canonical_json

CHUNK_SIZE = 1 << 20
PARALLEL_MIN_BYTES = 4 * CHUNK_SIZE
"""Below this many tensor bytes the default digest hashes inline: starting a thread pool
costs more (about 0.3 ms) than hashing a few MiB gains, and federated clients digest
small models on every message."""
PREFIX = "sha256:"
_HEX = frozenset("0123456789abcdef")


class DigestError(ValueError):
    """A digest string, tensor or path cannot be digested; the message says which."""


def is_digest(value: object) -> bool:
    """Whether `value` is a digest string `sha256:<64 lowercase hex>`: the one check of
    the format, which entries, statements, policies and commands all call."""
    return (
        isinstance(value, str)
        and value.startswith(PREFIX)
        and len(value) == len(PREFIX) + 64
        and _HEX.issuperset(value[len(PREFIX) :])
    )


def parse_digest(text: str) -> bytes:
    """The 32 hash bytes of a digest string `sha256:<64 lowercase hex>`."""
    if not is_digest(text):
        raise DigestError(f"{text!r} is not a digest: want 'sha256:' + 64 lowercase hex")
    return bytes.fromhex(text[len(PREFIX) :])


def json_digest(value: Any) -> str:
    """The digest of `value`'s canonical JSON (RFC 8785): how a configuration, a policy or
    hyper-parameters are named in an entry without logging them."""
    return PREFIX + hashlib.sha256(canonical_json(value)).hexdigest()


def format_digest(raw: bytes) -> str:
    """`sha256:<hex>` for 32 hash bytes."""
    if len(raw) != 32:
        raise DigestError(f"hash has {len(raw)} bytes, want 32")
    return PREFIX + raw.hex()


@dataclass(frozen=True)
class RawTensor:
    """A tensor given as raw bytes: C order, little endian, `dtype` as numpy's `dtype.str`
    (`<f4`, `|u1`) or torch's name for dtypes numpy lacks (`torch.bfloat16`)."""

    dtype: str
    shape: tuple[int, ...]
    data: Any  # bytes-like: bytes, memoryview, buffer

    def __post_init__(self) -> None:
        if any(not isinstance(s, int) or s < 0 for s in self.shape):
            raise DigestError(f"shape {self.shape}: dimensions must be non-negative integers")

    def nbytes(self) -> int:
        return memoryview(self.data).nbytes


def _le_dtype_str(dtype: np.dtype) -> str:
    if dtype.hasobject:
        raise DigestError(f"dtype {dtype} holds Python objects; only numeric tensors digest")
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big"):
        dtype = dtype.newbyteorder("<")
    return dtype.str


def _from_numpy(name: str, arr: np.ndarray) -> RawTensor:
    dt = arr.dtype
    if dt.hasobject:
        raise DigestError(
            f"tensor {name!r}: dtype {dt} holds Python objects; only numeric tensors digest"
        )
    if dt.byteorder == ">" or (dt.byteorder == "=" and sys.byteorder == "big"):
        arr = arr.astype(dt.newbyteorder("<"))  # a copy is unavoidable here
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    data = memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else b""
    return RawTensor(_le_dtype_str(arr.dtype), tuple(int(s) for s in arr.shape), data)


def _from_torch(name: str, t: Any) -> RawTensor:
    import torch  # only reached when given a torch tensor, so torch is already imported

    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    shape = tuple(int(s) for s in t.shape)
    if t.numel() == 0:
        data: Any = b""
    else:
        data = memoryview(t.reshape(-1).view(torch.uint8).numpy())
    try:
        np_dtype = torch.empty((), dtype=t.dtype).numpy().dtype
        dtype = _le_dtype_str(np_dtype)
    except TypeError:  # bfloat16 and other dtypes numpy lacks
        dtype = str(t.dtype)
    return RawTensor(dtype, shape, data)


def as_raw_tensor(name: str, value: Any) -> RawTensor:
    """A view of one tensor's bytes in the digest's layout, copying only when it must
    (non-contiguous or big-endian input)."""
    if isinstance(value, RawTensor):
        return value
    if isinstance(value, np.ndarray) or np.isscalar(value):
        return _from_numpy(name, np.asarray(value))
    mod = type(value).__module__
    if mod.startswith("torch"):
        return _from_torch(name, value)
    raise DigestError(f"tensor {name!r}: cannot digest a {type(value).__name__}")


def named_tensors(model: Any) -> list[tuple[str, RawTensor]]:
    """(name, RawTensor) sorted by UTF-8 name. A sequence is named "0", "1", ... as Flower
    names the arrays of an ArrayRecord built from a list."""
    if isinstance(model, Mapping):
        for k in model:
            if not isinstance(k, str):
                raise DigestError(f"tensor name {k!r} is not a string")
        items = list(model.items())
    elif isinstance(model, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(model)]
    else:
        raise DigestError(
            f"cannot digest a {type(model).__name__}: give a state_dict, a dict or list of "
            "numpy arrays, or a dict of RawTensor"
        )
    items.sort(key=lambda kv: kv[0].encode("utf-8"))
    return [(k, as_raw_tensor(k, v)) for k, v in items]


def _chunks(tensors: Sequence[tuple[str, RawTensor]]) -> Iterator[tuple[bytes, Any]]:
    """(header, chunk view) per leaf, in digest order."""
    for name, t in tensors:
        view = memoryview(t.data).cast("B") if memoryview(t.data).nbytes else memoryview(b"")
        n = max(1, -(-view.nbytes // CHUNK_SIZE))
        shape = list(t.shape)
        for i in range(n):
            header = canonical_json(
                {"chunk": i, "chunks": n, "dtype": t.dtype, "name": name, "shape": shape}
            )
            yield b"\x00" + header + b"\n", view[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]


def _leaf(item: tuple[bytes, Any]) -> bytes:
    h = hashlib.sha256(item[0])
    h.update(item[1])
    return h.digest()


def model_digest(model: Any, threads: int | None = None) -> str:
    """The model digest of a state_dict, a dict/list of numpy arrays or of RawTensor.

    `threads`: chunk hashing threads (default: CPU count, at most 8, for models of at
    least PARALLEL_MIN_BYTES; 1 hashes inline).
    """
    tensors = named_tensors(model)
    items = list(_chunks(tensors))
    if threads is None:
        big = sum(memoryview(t.data).nbytes for _, t in tensors) >= PARALLEL_MIN_BYTES
        threads = min(8, os.cpu_count() or 1) if big else 1
    if threads <= 1 or len(items) < 2:
        leaves = [_leaf(it) for it in items]
    else:
        with ThreadPoolExecutor(threads) as pool:
            leaves = list(pool.map(_leaf, items, chunksize=max(1, len(items) // (threads * 4))))
    return format_digest(merkle.root(leaves))


READ_AHEAD_MIN = 4 << 20
"""From this size on, `file_digest` reads the next MiB on a second thread while it hashes
the current one: the copy out of the page cache then overlaps the hash (`bench_digest.py`,
200 MiB page-cached: 1.05× the time of hashing the bytes in memory, against 1.16× for
hashlib.file_digest)."""
READ_AHEAD_STEP = 1 << 20


def file_digest(path: str | os.PathLike[str]) -> str:
    """Plain SHA-256 of a file's bytes, streamed."""
    with open(path, "rb", buffering=0) as f:
        return _open_file_digest(f, os.fstat(f.fileno()).st_size)


def _open_file_digest(f: Any, size: int) -> str:
    if size < READ_AHEAD_MIN:
        return PREFIX + hashlib.file_digest(f, "sha256").hexdigest()
    return PREFIX + _read_ahead_sha256(f).hexdigest()


def _read_ahead_sha256(f: Any) -> Any:
    """SHA-256 of the rest of `f`, reading one buffer ahead on a second thread (hashlib and
    readinto release the GIL). A buffer is refilled only after it has been hashed."""
    h = hashlib.sha256()
    bufs = (bytearray(READ_AHEAD_STEP), bytearray(READ_AHEAD_STEP))
    with ThreadPoolExecutor(1, thread_name_prefix="flchain-read") as pool:
        i = 0
        pending = pool.submit(f.readinto, bufs[0])
        while n := pending.result():
            current, i = bufs[i], i ^ 1
            pending = pool.submit(f.readinto, bufs[i])
            h.update(memoryview(current)[:n])
    return h


@dataclass(frozen=True)
class FileDigest:
    """One file of a directory digest: its `/`-separated relative path, size, digest."""

    path: str
    size: int
    digest: str

    def leaf_data(self) -> bytes:
        return canonical_json({"digest": self.digest, "path": self.path, "size": self.size})


def regular_files(root: str | os.PathLike[str], exclude: Iterable[str] = ()) -> list[str]:
    """The `/`-separated relative paths of every regular file under `root`, sorted by
    UTF-8 bytes: the walk rule of the directory digest, in one place.

    Symlinks are refused, not followed; so is anything neither a file nor a directory.
    Directories themselves are not part of the digest (format v1): an empty directory adds
    nothing, and a verified copy (`copy_files`) recreates only the parents of its files.
    `exclude` lists relative paths to leave out (files a framework writes at load time).
    """
    base = os.fspath(root)
    if os.path.islink(base) or not os.path.isdir(base):
        raise DigestError(f"{root}: not a directory (symlinks are refused)")
    skip = set(exclude)
    out: list[str] = []
    todo = [(base, "")]  # a stack, not recursion: any depth of directories
    while todo:
        folder, prefix = todo.pop()
        with os.scandir(folder) as it:
            for e in it:  # DirEntry answers from the directory listing: no stat per file
                rel = prefix + e.name
                if e.is_symlink():
                    raise DigestError(f"{rel}: is a symlink; directory digests refuse links")
                if e.is_dir(follow_symlinks=False):
                    todo.append((e.path, rel + "/"))
                elif not e.is_file(follow_symlinks=False):
                    raise DigestError(f"{rel}: not a regular file")
                elif rel not in skip:
                    out.append(rel)
    out.sort(key=lambda p: p.encode("utf-8"))
    return out


def directory_files(root: str | os.PathLike[str], exclude: Iterable[str] = ()) -> list[FileDigest]:
    """Every regular file under `root` (see `regular_files`), hashed by streaming. Size and
    bytes come from one open file, never followed through a link swapped in meanwhile."""
    out = []
    base = os.fspath(root)
    for rel in regular_files(base, exclude):
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:  # O_NONBLOCK: a FIFO swapped in is refused below, not waited on
            fd = os.open(os.path.join(base, rel), flags)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise DigestError(f"{rel}: is a symlink; directory digests refuse links") from e
            raise
        with open(fd, "rb", buffering=0) as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise DigestError(f"{rel}: not a regular file")
            out.append(FileDigest(rel, st.st_size, _open_file_digest(f, st.st_size)))
    return out


COPY_STEP = 8 << 20
"""Bytes per kernel copy call of `copy_files`: large enough that the syscalls cost
nothing, small enough that hashing the first step overlaps copying the rest."""


_UNSUPPORTED = (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


def _kernel_copy(fin: int, fout: int, offset: int, count: int) -> int:
    """Copy up to `count` bytes at `offset` inside the kernel (no user-space buffer, GIL
    released); `sendfile` where `copy_file_range` cannot cross filesystems, and a plain
    read and write where neither works."""
    try:
        return os.copy_file_range(fin, fout, count, offset, offset)
    except OSError as e:
        if e.errno not in _UNSUPPORTED:
            raise
    try:
        os.lseek(fout, offset, os.SEEK_SET)
        return os.sendfile(fout, fin, offset, count)
    except OSError as e:
        if e.errno not in _UNSUPPORTED:
            raise
    data = os.pread(fin, count, offset)
    view, done = memoryview(data), 0
    while done < len(data):
        done += os.pwrite(fout, view[done:], offset + done)
    return len(data)


def _hash_range(h: Any, fd: int, start: int, end: int, buf: bytearray) -> None:
    view = memoryview(buf)
    while start < end:
        n = os.preadv(fd, [view[: min(len(buf), end - start)]], start)
        if n <= 0:
            raise OSError(f"copy shrank while being hashed at byte {start}")
        h.update(view[:n])
        start += n


def _copy_one(src: Path, dst: Path, hasher: ThreadPoolExecutor | None) -> tuple[int, str]:
    """Copy one file in the kernel and hash each copied step *from the copy*: on `hasher`
    while the next step is copied, inline for the last step (nothing left to overlap with,
    and a thread hand-off costs more than a small file's hash when the cores are busy)."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK_SIZE)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fin = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        total = os.fstat(fin).st_size
        fout = os.open(dst, flags, 0o600)
        try:
            size, pending = 0, None
            while True:
                n = _kernel_copy(fin, fout, size, COPY_STEP)
                if pending is not None:
                    pending.result()
                    pending = None
                if n <= 0:
                    break
                if hasher is None or size + n >= total:
                    _hash_range(h, fout, size, size + n, buf)
                else:
                    pending = hasher.submit(_hash_range, h, fout, size, size + n, buf)
                size += n
        finally:
            os.close(fout)
    finally:
        os.close(fin)
    return size, PREFIX + h.hexdigest()


def copy_files(
    root: str | os.PathLike[str], dest: str | os.PathLike[str], exclude: Iterable[str] = ()
) -> list[FileDigest]:
    """Copy every regular file under `root` into `dest` and return their digests, hashed
    from the very bytes written to the copy.

    The copy is made in the kernel and each step of it hashed (from the copy, in the page
    cache) on a second thread while the next step is copied, so verifying a copy costs
    about one SHA-256 pass, where copying and then hashing costs a copy plus a pass. The
    digests describe the copy, not the source, so a source changed during the copy cannot
    pass as verified.
    Only the files (and the directories that hold them) are created: nothing the digest
    leaves out reaches the copy. `dest` must exist; files are created 0600 and never
    overwritten.
    """
    out: list[FileDigest] = []
    paths = regular_files(root, exclude)
    big = any(os.lstat(Path(root, rel)).st_size > COPY_STEP for rel in paths)
    hasher = ThreadPoolExecutor(1, thread_name_prefix="flchain-hash") if big else None
    try:
        for rel in paths:
            target = Path(dest, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            size, digest = _copy_one(Path(root, rel), target, hasher)
            out.append(FileDigest(rel, size, digest))
    finally:
        if hasher is not None:
            hasher.shutdown()
    return out


def files_root(files: Sequence[FileDigest]) -> str:
    """The directory digest over already hashed files (sorted by path)."""
    return format_digest(merkle.root([merkle.leaf_hash(f.leaf_data()) for f in files]))


def directory_digest(root: str | os.PathLike[str], exclude: Iterable[str] = ()) -> str:
    """RFC 9162 tree hash over the directory's files, so one file's inclusion is provable."""
    return files_root(directory_files(root, exclude))

"""A CheckpointIO wrapper: the one place that sees every checkpoint file and its bytes.

`Callback.setup` is the last hook before Lightning reads a `ckpt_path`, and no callback hook
gets the path of a save, so the callback wraps whatever `strategy.checkpoint_io` is (the
setter takes any object with save/load/remove/teardown). Saves are recorded after the inner
save returns, with the weights hashed on a second thread while the file is written; a resume
load is hashed and verified before `torch.load` runs, from the same bytes it then loads.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from ..digest import PREFIX, file_digest, model_digest

# Above this size a resume load is streamed into a private copy while hashed, and that copy
# is loaded, rather than holding the bytes in memory twice over.
READ_ONCE_MAX = 2 << 30

_TORCH_IO_MODULES = ("lightning.fabric.plugins.io.torch_io", "lightning_fabric.plugins.io.torch_io")


class Recorder(Protocol):
    """What the wrapper asks of the callback."""

    def wants_record(self, checkpoint: Mapping[str, Any]) -> bool: ...

    def record_save(self, checkpoint: Mapping[str, Any], path: str, file: str, model: str) -> None:
        ...

    def should_verify(self, path: str) -> bool: ...

    def verify_load(self, path: str, file: str) -> None: ...

    def loaded(self, path: str, checkpoint: Mapping[str, Any]) -> None: ...


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _path_digest(path: str) -> str:
    if not _is_remote(path):
        return file_digest(path.removeprefix("file://"))
    import fsspec

    with fsspec.open(path, "rb") as f:
        return PREFIX + hashlib.file_digest(f, "sha256").hexdigest()  # type: ignore[arg-type]


@contextlib.contextmanager
def _private_copy(path: str) -> Iterator[tuple[str, str]]:
    """Copy `path` (local or any fsspec URL) into a 0600 temporary file, hashing the bytes
    on the way; yields (copy, digest). The loader then reads exactly the bytes verified:
    never the original again, which could change, nor a download cache."""
    fd, tmp = tempfile.mkstemp(prefix="flchain-ckpt-", suffix=".ckpt")
    try:
        h = hashlib.sha256()
        if _is_remote(path):
            import fsspec

            src: Any = fsspec.open(path, "rb").open()
        else:
            src = open(path.removeprefix("file://"), "rb")  # noqa: SIM115
        with src, os.fdopen(fd, "wb") as dst:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                dst.write(chunk)
        yield tmp, PREFIX + h.hexdigest()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _keep_storage(storage: Any, location: Any) -> Any:
    return storage


def _is_torch_io(io: Any) -> bool:
    """Lightning's own TorchCheckpointIO (not a subclass, which may save differently)."""
    return type(io).__name__ == "TorchCheckpointIO" and type(io).__module__ in _TORCH_IO_MODULES


def _sha256(data: memoryview) -> str:
    return PREFIX + hashlib.sha256(data).hexdigest()


def _save_hashing(checkpoint: dict[str, Any], path: str, pool: ThreadPoolExecutor) -> str:
    """What TorchCheckpointIO does (serialize in memory, write a temporary file, move it into
    place), with the bytes hashed on another thread while they are written."""
    import torch

    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    view = buf.getbuffer()
    try:
        digest = pool.submit(_sha256, view)
        directory, name = os.path.split(path)
        os.makedirs(directory or ".", exist_ok=True)
        tmp = os.path.join(directory, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            with os.fdopen(fd, "wb") as f:
                f.write(view)
                f.flush()
                os.fsync(f.fileno())  # the ledger commit is durable; so must the file be
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return digest.result()
    finally:
        view.release()


class LedgerCheckpointIO:
    """Wraps a strategy's CheckpointIO; delegates everything, records saves, checks resumes."""

    def __init__(self, checkpoint_io: Any, recorder: Recorder):
        if checkpoint_io is None or not hasattr(checkpoint_io, "save_checkpoint"):
            raise ValueError("checkpoint_io: want a CheckpointIO to wrap")
        self.checkpoint_io = checkpoint_io
        self.recorder = recorder

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, *args: Any, **kw: Any) -> None:
        inner = self.checkpoint_io
        if not self.recorder.wants_record(checkpoint):
            inner.save_checkpoint(checkpoint, path, *args, **kw)
            return
        spath = os.fspath(path)
        with ThreadPoolExecutor(2, thread_name_prefix="flchain-digest") as pool:
            weights = pool.submit(model_digest, checkpoint["state_dict"], 1)
            plain = not args and not {k: v for k, v in kw.items() if v is not None}
            if plain and _is_torch_io(inner) and not _is_remote(spath):
                file = _save_hashing(checkpoint, spath, pool)
            else:
                inner.save_checkpoint(checkpoint, path, *args, **kw)
                file = _path_digest(spath)
            model = weights.result()
        self.recorder.record_save(checkpoint, spath, file, model)

    def load_checkpoint(self, path: Any, *args: Any, **kw: Any) -> dict[str, Any]:
        inner = self.checkpoint_io
        spath = os.fspath(path)
        if not self.recorder.should_verify(spath):
            return inner.load_checkpoint(path, *args, **kw)
        read_once = (
            _is_torch_io(inner)
            and not _is_remote(spath)
            and os.path.isfile(spath)
            and os.path.getsize(spath) <= READ_ONCE_MAX
        )
        if not read_once:
            with _private_copy(spath) as (copy, digest):
                self.recorder.verify_load(spath, digest)
                checkpoint = inner.load_checkpoint(copy, *args, **kw)
        else:
            with open(spath, "rb") as f:
                data = f.read()
            self.recorder.verify_load(spath, PREFIX + hashlib.sha256(data).hexdigest())
            import torch

            map_location = kw.get("map_location", args[0] if args else _keep_storage)
            weights_only = kw.get("weights_only", args[1] if len(args) > 1 else None)
            checkpoint = torch.load(io.BytesIO(data), map_location=map_location,
                                    weights_only=weights_only)
            del data
        self.recorder.loaded(spath, checkpoint)
        return checkpoint

    def remove_checkpoint(self, path: Any) -> None:
        self.checkpoint_io.remove_checkpoint(path)

    def teardown(self) -> None:
        self.checkpoint_io.teardown()

    def __getattr__(self, name: str) -> Any:
        if name in ("checkpoint_io", "recorder"):  # not yet set (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.checkpoint_io, name)


def _is_wrapping(obj: Any) -> bool:
    return any(c.__name__ == "_WrappingCheckpointIO" for c in type(obj).__mro__)


def install(strategy: Any, recorder: Recorder) -> LedgerCheckpointIO:
    """Put a LedgerCheckpointIO around the strategy's CheckpointIO (once; later calls rebind).

    An AsyncCheckpointIO keeps its thread: the wrapper goes around its inner IO, so each file
    is hashed after it is written, on the saving thread.
    """
    current = strategy.checkpoint_io  # the getter makes the default TorchCheckpointIO
    if _is_wrapping(current):
        inner = current.checkpoint_io
        if isinstance(inner, LedgerCheckpointIO):
            inner.recorder = recorder
            return inner
        wrapper = LedgerCheckpointIO(inner, recorder)
        current._checkpoint_io = wrapper  # the public setter refuses to replace a set IO
        return wrapper
    if isinstance(current, LedgerCheckpointIO):
        current.recorder = recorder
        return current
    wrapper = LedgerCheckpointIO(current, recorder)
    strategy.checkpoint_io = wrapper
    return wrapper

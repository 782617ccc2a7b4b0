"""Flower ArrayRecords as tensors in place: the model digest without copying the weights.

An `Array` holds `np.save` bytes. Only the `.npy` header (a few hundred bytes) is parsed;
the tensor region is a memoryview of `Array.data`, which is what the digest hashes and the
finiteness and norm checks read. Copies happen only where the digest's layout demands them
(Fortran order, big endian). The same weights give the same digest as a torch state_dict
or numpy arrays (`flchain_plugin.digest.model_digest`).
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord
from numpy.lib import format as npy

from ..digest import DigestError, RawTensor, model_digest

_MAGIC = b"\x93NUMPY"
_DIM = rb"(?:0|[1-9][0-9]*)"
_HEADER = re.compile(
    rb"\{'descr': '([<>|=][biufc][1-9][0-9]?)', 'fortran_order': (True|False), "
    rb"'shape': \((|" + _DIM + rb",|" + _DIM + rb"(?:, " + _DIM + rb")+)\), \} *\n"
)
"""The header `np.save` writes for plain numeric arrays. Headers in this exact form are
read without `ast.literal_eval` (about 40 us an array, on every message); any other
header goes to numpy's own parser, which decides."""


class ArrayFormatError(DigestError):
    """An Array's bytes are not a numeric `.npy` payload; the message names the array."""


@dataclass(frozen=True)
class TensorView:
    """One array of an ArrayRecord, read in place: dtype, shape, layout, raw region."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    data: memoryview

    def numpy(self) -> np.ndarray:
        """A read-only ndarray over the received bytes (no copy)."""
        arr = np.frombuffer(self.data, dtype=self.dtype)
        return arr.reshape(self.shape, order="F" if self.fortran_order else "C")

    def raw(self) -> RawTensor:
        """The tensor in the digest's layout (C order, little endian), copying only if not."""
        dt = self.dtype
        if not self.fortran_order and dt.byteorder != ">":
            return RawTensor(dt.str, self.shape, self.data)
        arr = self.numpy()
        if dt.byteorder == ">":
            arr = arr.astype(dt.newbyteorder("<"))
        arr = np.ascontiguousarray(arr)
        return RawTensor(arr.dtype.str, self.shape, memoryview(arr.reshape(-1).view(np.uint8)))

    @property
    def signature(self) -> tuple[str, tuple[int, ...]]:
        """(little-endian dtype, shape): what must match the global model."""
        dt = self.dtype.newbyteorder("<") if self.dtype.byteorder == ">" else self.dtype
        return dt.str, self.shape


def tensor_view(name: str, data: bytes | memoryview) -> TensorView:
    """Parse the `.npy` header of one Array's bytes; the tensor bytes stay where they are."""
    view = memoryview(data).cast("B")
    if view.nbytes < 10 or view[:6] != _MAGIC:
        raise ArrayFormatError(f"array {name!r}: not .npy bytes (magic number missing)")
    major = view[6]
    if major == 1:
        start, hlen = 10, int.from_bytes(view[8:10], "little")
    elif major == 2:
        start, hlen = 12, int.from_bytes(view[8:12], "little")
    else:
        raise ArrayFormatError(f"array {name!r}: .npy format version {major} is not supported")
    offset = start + hlen
    if offset > view.nbytes or hlen > 65536:
        raise ArrayFormatError(f"array {name!r}: .npy header is truncated or oversized")
    layout = _plain_layout(bytes(view[start:offset]))
    if layout is None:
        layout = _layout(name, *_numpy_header(name, bytes(view[:offset]), major))
    elif isinstance(layout, str):
        raise ArrayFormatError(f"array {name!r}: {layout}")
    shape, fortran, dtype, want = layout
    if view.nbytes - offset != want:
        raise ArrayFormatError(
            f"array {name!r}: {view.nbytes - offset} data bytes, header {dtype.str}{shape} "
            f"needs {want}"
        )
    return TensorView(name, dtype, shape, fortran, view[offset:])


Layout = tuple[tuple[int, ...], bool, np.dtype, int]
"""(shape, fortran_order, dtype, data bytes) of a valid numeric `.npy` header."""


def _layout(name: str, shape: Any, fortran: bool, dtype: np.dtype) -> Layout:
    """The header's layout if it describes a plain numeric array, else ArrayFormatError."""
    why = _refusal(shape, dtype)
    if why is not None:
        raise ArrayFormatError(f"array {name!r}: {why}")
    count = 1
    for d in shape:
        count *= int(d)
    return tuple(int(d) for d in shape), bool(fortran), dtype, count * dtype.itemsize


def _refusal(shape: Any, dtype: np.dtype) -> str | None:
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        return f"dtype {dtype} is not a plain numeric dtype"
    if dtype.kind not in "biufc":
        return f"dtype {dtype} is not numeric"
    if any(int(d) < 0 for d in shape):
        return f"negative dimension in shape {shape}"
    return None


@functools.lru_cache(maxsize=1024)
def _plain_layout(text: bytes) -> Layout | str | None:
    """The layout of a header in `np.save`'s own form (a str: why it is refused), None for
    any other form. Memoized: every message of a run repeats the same few headers, and
    parsing them was a measurable part of signing_mod's cost (a pure function of the
    bytes, so remembering it changes no verdict)."""
    header = _plain_header(text)
    if header is None:
        return None
    shape, fortran, dtype = header
    try:
        return _layout("", shape, fortran, dtype)
    except ArrayFormatError:
        return _refusal(shape, dtype)


def _plain_header(text: bytes) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    """(shape, fortran_order, dtype) of a header in `np.save`'s own form, else None."""
    m = _HEADER.fullmatch(text)
    if m is None:
        return None
    try:
        dtype = np.dtype(m[1].decode("ascii"))
    except (TypeError, ValueError):
        return None
    shape = tuple(int(d) for d in m[3].split(b",") if d.strip())
    return shape, m[2] == b"True", dtype


def _numpy_header(name: str, head: bytes, major: int) -> tuple[Any, bool, np.dtype]:
    """numpy's parser, for every header `_plain_header` does not read."""
    buf = io.BytesIO(head)
    try:
        npy.read_magic(buf)
        reader = npy.read_array_header_1_0 if major == 1 else npy.read_array_header_2_0
        shape, fortran, dtype = reader(buf)
    except (ValueError, SyntaxError, TypeError) as e:
        raise ArrayFormatError(f"array {name!r}: bad .npy header: {e}") from None
    return shape, fortran, dtype


def record_views(record: ArrayRecord) -> dict[str, TensorView]:
    """Every Array of `record` as a TensorView (names as in the record)."""
    out: dict[str, TensorView] = {}
    for name, arr in record.items():
        if arr.stype != "numpy.ndarray":
            raise ArrayFormatError(
                f"array {name!r}: serialization {arr.stype!r} is not 'numpy.ndarray'"
            )
        out[name] = tensor_view(name, arr.data)
    return out


def views_digest(views: Mapping[str, TensorView], threads: int | None = None) -> str:
    """The model digest of already parsed views."""
    return model_digest({k: v.raw() for k, v in views.items()}, threads=threads)


def arrayrecord_digest(record: ArrayRecord, threads: int | None = None) -> str:
    """The model digest of an ArrayRecord, read in place.

    Equals `model_digest(state_dict)` of the torch state_dict or numpy arrays it was made
    from, so client and server name the same weights the same way.
    """
    return views_digest(record_views(record), threads=threads)


def record_to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """Read-only ndarrays over `record`'s bytes (e.g. to store or check a model)."""
    return {k: v.numpy() for k, v in record_views(record).items()}


def numpy_to_record(arrays: Mapping[str, Any]) -> ArrayRecord:
    """An ArrayRecord holding `arrays` under their names (e.g. a model loaded from blobs)."""
    from flwr.app import Array

    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})

"""The model digest of an MLflow model's weights, got without unpickling anything.

The model digest is what links an MLflow model to the Flower and Lightning entries of the
same weights. It comes from one of two places, and the entry says which:
- "tag": the logging process computed it from the in-memory model and passed it as the
  logged model's `flchain.model_digest` tag (see `digest_tags`). It is the logger's claim;
  `load_model(..., flavor="pytorch")` re-checks it once the files are verified.
- "safetensors": recomputed from `*.safetensors` files in the model directory; the format
  is a JSON header and raw little-endian bytes, so reading it executes nothing.
Pickled formats (`.pth`, `.pkl`, `.pt2`) are never opened here.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flchain_plugin.canonical import parse_json
from flchain_plugin.digest import DigestError, FileDigest, RawTensor, model_digest

MODEL_DIGEST_TAG = "flchain.model_digest"

_SAFETENSORS_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "torch.bfloat16",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "|i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "|u1", "BOOL": "|b1",
}
_HEADER_LIMIT = 100 * 1024 * 1024


def digest_tags(model: Any) -> dict[str, str]:
    """Tags to pass to `log_model(..., tags=...)` so the ledger links this logged model to
    the Flower/Lightning entries of the same weights. `model`: a torch module, a
    state_dict, or anything `model_digest` takes."""
    state = model.state_dict() if hasattr(model, "state_dict") else model
    return {MODEL_DIGEST_TAG: model_digest(state)}


def _safetensors(path: Path, mm: mmap.mmap, out: dict[str, RawTensor]) -> None:
    if len(mm) < 8:
        raise DigestError(f"{path.name}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", mm[:8])
    if n > min(_HEADER_LIMIT, len(mm) - 8):
        raise DigestError(f"{path.name}: safetensors header of {n} bytes is out of range")
    try:
        header = parse_json(bytes(mm[8 : 8 + n]))
    except ValueError as e:
        raise DigestError(f"{path.name}: safetensors header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise DigestError(f"{path.name}: safetensors header is not an object")
    data = memoryview(mm)[8 + n :]
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise DigestError(f"{path.name}: tensor {name!r} has an unreadable header") from None
        if not 0 <= begin <= end <= len(data):
            raise DigestError(f"{path.name}: tensor {name!r} lies outside the file")
        itemsize = 2 if dtype == "torch.bfloat16" else int(dtype[2:])
        if math.prod(shape) * itemsize != end - begin:
            raise DigestError(f"{path.name}: tensor {name!r} size does not match its shape")
        if name in out:
            raise DigestError(f"tensor {name!r} appears in two safetensors files")
        out[name] = RawTensor(dtype, shape, data[begin:end])


def safetensors_digest(root: str | os.PathLike[str], files: Sequence[FileDigest]) -> str | None:
    """Model digest over every tensor in the directory's `*.safetensors` files, or None."""
    paths = [Path(root, f.path) for f in files if f.path.endswith(".safetensors")]
    if not paths:
        return None
    tensors: dict[str, RawTensor] = {}
    maps: list[mmap.mmap] = []
    try:
        for p in paths:
            with open(p, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size == 0:
                    raise DigestError(f"{p.name}: empty safetensors file")
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            maps.append(mm)
            _safetensors(p, mm, tensors)
        return model_digest(tensors)
    finally:
        tensors.clear()
        for mm in maps:
            try:
                mm.close()
            except BufferError:  # a view is still alive; the map closes with it
                pass

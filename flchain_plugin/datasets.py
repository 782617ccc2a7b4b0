"""Salted dataset commitments: prove later what a client trained on, reveal nothing now.

A commitment is the RFC 9162 Merkle tree hash over one leaf per example, in order:

    k_i    = HMAC-SHA256(salt, b"flchain-dataset/v1" || u64be(i))
    leaf_i = SHA-256(0x00 || k_i || SHA-256(example_i))

The salt stays with the data owner, so the commitment reveals neither the examples nor
whether a guessed example is among them. Opening one example reveals only its per-leaf key
`k_i` and an inclusion proof, not the salt, so the other examples stay hidden. The ledger's
`dataset` entry records the commitment with `scheme=SCHEME`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import merkle
from .canonical import canonical_json
from .digest import format_digest, parse_digest

SCHEME = "flchain-dataset/v1"
SALT_SIZE = 32
MIN_SALT_SIZE = 16
_TAG = SCHEME.encode("ascii")


class DatasetError(ValueError):
    """A dataset cannot be committed or an opening does not verify; the message says why."""


def new_salt() -> bytes:
    """A fresh random salt (32 bytes). Keep it with the data; without it no one can open."""
    return secrets.token_bytes(SALT_SIZE)


def owner_salt(secret: bytes, dataset: str) -> bytes:
    """A dataset's salt derived from its owner's one secret: HMAC-SHA256(secret, tag ||
    name). The owner keeps a single secret instead of a salt per dataset, recommits the
    same data to the same commitment, and two owners' equal datasets stay unlinkable."""
    if not isinstance(dataset, str) or not dataset:
        raise DatasetError("dataset: want a non-empty name for the data set")
    key = _check_salt(secret)
    return hmac.new(key, b"flchain-dataset-salt/v1\0" + dataset.encode("utf-8"),
                    hashlib.sha256).digest()


def _check_salt(salt: bytes) -> bytes:
    if not isinstance(salt, (bytes, bytearray)) or len(salt) < MIN_SALT_SIZE:
        raise DatasetError(
            f"salt must be at least {MIN_SALT_SIZE} random bytes; make one with new_salt()"
        )
    return bytes(salt)


def leaf_key(salt: bytes, index: int) -> bytes:
    """The per-example key `k_i`: revealing it opens example `index` and no other."""
    return _leaf_key(_keyed(salt), index)


def _keyed(salt: bytes) -> hmac.HMAC:
    """HMAC keyed with the salt and fed the tag: copied per example, keyed once."""
    return hmac.new(_check_salt(salt), _TAG, hashlib.sha256)


def _leaf_key(keyed: hmac.HMAC, index: int) -> bytes:
    mac = keyed.copy()
    mac.update(index.to_bytes(8, "big"))
    return mac.digest()


def _leaf(key: bytes, item: bytes | memoryview) -> bytes:
    return merkle.leaf_hash(key + hashlib.sha256(item).digest())


def _leaves(items: Iterable[bytes | memoryview], salt: bytes) -> list[bytes]:
    keyed = _keyed(salt)
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, (bytes, bytearray, memoryview)):
            raise DatasetError(
                f"example {i} is a {type(item).__name__}, want bytes "
                "(use example_bytes(...) for numpy arrays)"
            )
        out.append(_leaf(_leaf_key(keyed, i), item))
    if not out:
        raise DatasetError("the dataset is empty: a commitment needs at least one example")
    return out


def dataset_commitment(items: Iterable[bytes | memoryview], salt: bytes) -> str:
    """The salted commitment (`sha256:...`) to `items`, one bytes object per example."""
    return format_digest(merkle.root(_leaves(items, salt)))


def example_bytes(*arrays: Any) -> Iterator[bytes]:
    """One bytes object per example from arrays aligned on their first axis (e.g. X, y).

    Each example's bytes are, per array, the canonical JSON header `{"dtype","shape"}`, a
    newline and the row's raw bytes (C order, little endian), so the same data gives the
    same bytes whatever container or byte order it came in.
    """
    if not arrays:
        raise DatasetError("example_bytes needs at least one array")
    arrs = []
    for a in arrays:
        arr = np.asarray(a)
        if arr.ndim == 0:
            raise DatasetError("example_bytes: arrays need a first (example) axis")
        if arr.dtype.hasobject:
            raise DatasetError(f"example_bytes: dtype {arr.dtype} holds Python objects")
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        arrs.append(arr)
    n = len(arrs[0])
    if any(len(a) != n for a in arrs):
        raise DatasetError(
            f"example_bytes: arrays have different lengths {[len(a) for a in arrs]}"
        )
    headers = [
        canonical_json({"dtype": a.dtype.str, "shape": list(a.shape[1:])}) + b"\n" for a in arrs
    ]
    pairs = list(zip(headers, arrs, strict=True))
    for i in range(n):
        yield b"".join(h + np.ascontiguousarray(a[i]).tobytes() for h, a in pairs)


@dataclass(frozen=True)
class DatasetOpening:
    """Proof that one example is in a committed dataset, without revealing the salt."""

    index: int
    size: int
    key: bytes
    proof: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "size": self.size,
            "key": self.key.hex(),
            "proof": [h.hex() for h in self.proof],
        }


def open_example(
    items: Sequence[bytes | memoryview], salt: bytes, index: int
) -> DatasetOpening:
    """The opening of example `index` of `items` committed with `salt`."""
    leaves = _leaves(items, salt)
    if not 0 <= index < len(leaves):
        raise DatasetError(f"example {index} is not in a dataset of {len(leaves)} examples")
    proof = merkle.inclusion_proof(leaves, index)
    return DatasetOpening(index, len(leaves), leaf_key(salt, index), tuple(proof))


def verify_example(commitment: str, item: bytes | memoryview, opening: DatasetOpening) -> None:
    """Raise DatasetError unless `item` is example `opening.index` of `commitment`."""
    root = parse_digest(commitment)
    try:
        merkle.verify_inclusion(
            opening.index, opening.size, _leaf(opening.key, item), opening.proof, root
        )
    except merkle.ProofError as e:
        raise DatasetError(
            f"example {opening.index} does not open commitment {commitment}: {e}"
        ) from e

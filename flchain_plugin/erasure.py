"""Erasure without breaking the log: destroy what is stored off-chain, record that it was.

The log keeps every entry naming the digest (so `verify` keeps passing and lineage shows
the gap); what goes is off-chain: a kept update's key and ciphertext (`vault`, crypto-
shredding) and any plain blob under that digest (`blobs`: model weights, or update arrays
another component stored in the clear). The `erasure` entry is committed first, then the
data destroyed: a crash in between leaves an entry whose data still exists, and running
the erasure again finishes the job without a second entry; the other order could lose
data with no record of why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import entries as E
from .blobs import BlobStore
from .commit import Committed, commit
from .notes import Signer
from .vault import UpdateVault


class ErasureError(ValueError):
    """The digest cannot be erased (unknown, nothing stored, already erased)."""


@dataclass(frozen=True)
class Erased:
    """What `erase` did: the entry (its index, or the earlier one if it existed), what it
    destroyed, and the commit (None when the entry was already logged)."""

    entry: E.Erasure
    index: int
    destroyed: tuple[str, ...]
    committed: Committed | None


def _stored(digest: str, blobs: BlobStore, vault: UpdateVault) -> list[str]:
    found = []
    if vault.path(digest).is_file() or vault.key_path(digest).is_file():
        found.append("update")
    if blobs.has(digest):
        found.append("weights")
    return found


def erase(ledger: Any, digest: str, blobs: BlobStore, *, vault: UpdateVault | None = None,
          reason: str = "erasure request", signer: Signer | None = None) -> Erased:
    """Record an `erasure` entry for `digest` and destroy what is stored under it."""
    E.check_digest(digest, "digest")
    vault = vault if vault is not None else UpdateVault(blobs.root)
    about = ledger.find(digest)
    if not about:
        raise ErasureError(f"{digest} is not recorded in this ledger: nothing of it to erase "
                           "(list updates with `flchain lineage --client NODE`)")
    earlier = next((le for le in about if isinstance(le.entry, E.Erasure)), None)
    stored = _stored(digest, blobs, vault)
    if not stored:
        if earlier is not None:
            raise ErasureError(f"{digest} was already erased (entry {earlier.index})")
        raise ErasureError(f"nothing is stored for {digest} in {blobs.root}: its weights "
                           "were never kept there; pass --blobs if they live elsewhere")
    done = None
    if earlier is None:
        entry = E.Erasure(blob=digest, reason=reason, kind="+".join(stored))
        done = commit(ledger, [entry], signer=signer)
        index = done.first
    else:
        entry, index = earlier.entry, earlier.index  # type: ignore[assignment]
    if "update" in stored:
        vault.erase(digest)
    if "weights" in stored:  # the entry is already logged: no second one from delete
        blobs.delete(digest)
    return Erased(entry, index, tuple(stored), done)

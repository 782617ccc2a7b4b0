"""Checkpoint lineage: is this checkpoint file recorded, and does its history verify?

A checkpoint entry names its `parent`, the model digest of the weights it continued from
(an earlier checkpoint's, or a recorded model such as a Flower global model), and its
`datasets` (salted commitments). The history is the core lineage walk
(`flchain_plugin.lineage.walk`), so Lightning, Flower and MLflow agree on which entry made
which weights; this module only adds what a resume needs: the file's own entry, inclusion
proofs and the dataset commitments. A checkpoint verifies when its file digest is
recorded, every entry on the way back is in the ledger's tree (inclusion proof) and
recorded before the entry that points to it, and the chain ends at a checkpoint without
parent or at another recorded model.

With a pinned verifier key, the tree is the one of the newest checkpoint (signed tree head)
that key signed, not whatever the file now holds: whoever can rewrite the ledger file can
re-sign it with the key beside it, but not with a key held elsewhere. Framework-free: it
reads only the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import entries as E
from ..ledger import Ledger, LoggedEntry
from ..lineage import walk
from ..merkle import ProofError
from ..notes import Verifier
from ..pinning import PinError, signed_tree


class CheckpointLineageError(ValueError):
    """A checkpoint's lineage does not verify; the message names the broken link."""


class UnverifiedCheckpointError(RuntimeError):
    """Refused to load a checkpoint whose lineage does not verify. Nothing was loaded."""

    def __init__(self, path: str, digest: str, reason: str):
        self.path = path
        self.digest = digest
        self.reason = reason
        super().__init__(
            f"refusing to load checkpoint {path} ({digest}): {reason}. Nothing was loaded. "
            "Resume from a checkpoint this ledger recorded (LedgerCallback records every "
            "save), or pass LedgerCallback(on_unverified='warn') to load it anyway."
        )


@dataclass(frozen=True)
class CheckpointLineage:
    """The verified history of a checkpoint file, newest first."""

    file: str
    chain: tuple[LoggedEntry, ...]  # checkpoint entries: the file's own, then its parents
    datasets: tuple[LoggedEntry, ...]  # dataset entries the chain trained on
    origin: LoggedEntry | None  # the recorded model the chain started from, if any
    size: int  # tree size the inclusion proofs were checked against
    verifier: str | None = None  # the pinned key that signed the tree of `size`, if any

    @property
    def entry(self) -> E.TrainingCheckpoint:
        e = self.chain[0].entry
        assert isinstance(e, E.TrainingCheckpoint)
        return e


def signed_size(ledger: Ledger, verifier: Verifier) -> int:
    """The size of the ledger's newest checkpoint signed by the pinned key, whose root must be
    this ledger's tree at that size (`pinning.signed_tree`)."""
    try:
        return signed_tree(ledger, verifier).size
    except PinError as e:
        raise CheckpointLineageError(str(e)) from None


def _prove(ledger: Ledger, item: LoggedEntry, size: int) -> None:
    if item.index >= size:
        raise CheckpointLineageError(
            f"entry {item.index} is not covered by the signed checkpoint of size {size}"
        )
    try:
        ledger.inclusion_proof(item.index, size).verify()
    except ProofError as e:
        raise CheckpointLineageError(f"entry {item.index} is not in the ledger's tree ({e})") from e


def _dataset(ledger: Ledger, digest: str, before: int, size: int) -> LoggedEntry:
    for d in ledger.find(digest, type="dataset"):
        if d.index < before:
            _prove(ledger, d, size)
            return d
    raise CheckpointLineageError(
        f"dataset commitment {digest} of checkpoint entry {before} is not recorded before it"
    )


def _is_save(le: LoggedEntry) -> bool:
    return isinstance(le.entry, E.TrainingCheckpoint)


def checkpoint_lineage(
    ledger: Ledger, file: str, *, verifier: Verifier | None = None
) -> CheckpointLineage:
    """The lineage of the checkpoint whose file digest is `file`, or CheckpointLineageError.

    `verifier`: the log's pinned key; the lineage must then lie in the tree of the newest
    checkpoint it signed (`signed_size`)."""
    size = signed_size(ledger, verifier) if verifier is not None else ledger.size
    found = [c for c in ledger.find(file, type="checkpoint") if c.entry.file == file]  # type: ignore[attr-defined]
    if not found:
        raise CheckpointLineageError(
            "its file digest is not in the ledger (never recorded, or modified)"
        )
    start = found[0]
    if start.index >= size:
        raise CheckpointLineageError(
            f"it is recorded at entry {start.index}, after the newest checkpoint the pinned "
            f"key signed (size {size}): the batch was never signed"
        )
    chain: list[LoggedEntry] = [start]
    origin: LoggedEntry | None = None
    parent = start.entry.parent  # type: ignore[attr-defined]
    if parent is not None:
        path = walk(ledger, parent, before=start.index, follow=_is_save)
        for link in path.links:
            if link.entry is None:
                child = chain[-1]
                raise CheckpointLineageError(
                    f"parent model {link.model} of checkpoint entry {child.index} "
                    f"({child.entry.name}) is not recorded before it"  # type: ignore[attr-defined]
                )
            if _is_save(link.entry):
                chain.append(link.entry)
            else:
                origin = link.entry
    datasets: dict[str, LoggedEntry] = {}
    for item in [*chain, *([origin] if origin else [])]:
        _prove(ledger, item, size)
    for item in chain:
        for d in item.entry.datasets:  # type: ignore[attr-defined]
            if d not in datasets:
                datasets[d] = _dataset(ledger, d, item.index, size)
    return CheckpointLineage(file, tuple(chain), tuple(datasets.values()), origin, size,
                             verifier.vkey if verifier is not None else None)

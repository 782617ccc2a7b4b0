"""Checkpoint lineage: is this checkpoint file recorded, and does its history verify?

A checkpoint entry names its `parent`, the model digest of the weights it continued from
(an earlier checkpoint's, or a recorded model such as a Flower global model), and its
`datasets` (salted commitments). Parents are model digests, not file digests, so the same
graph links Lightning, Flower and MLflow entries (`flchain_plugin.lineage` walks it too).
A checkpoint verifies when its file digest is recorded, every entry on the way back is in
the ledger's tree (inclusion proof against the current head) and recorded before the entry
that points to it, and the chain ends at a checkpoint without parent or at a recorded
model. Framework-free: it reads only the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import entries as E
from ..ledger import Ledger, LoggedEntry
from ..merkle import ProofError

# Entry types whose `model` digest is a recorded model a checkpoint may start from.
_MODEL_TYPES = ("model", "update", "run", "rollback", "mlflow")


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

    @property
    def entry(self) -> E.TrainingCheckpoint:
        e = self.chain[0].entry
        assert isinstance(e, E.TrainingCheckpoint)
        return e


def _prove(ledger: Ledger, item: LoggedEntry, size: int) -> None:
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


def checkpoint_lineage(ledger: Ledger, file: str) -> CheckpointLineage:
    """The lineage of the checkpoint whose file digest is `file`, or CheckpointLineageError."""
    size = ledger.size
    found = [c for c in ledger.find(file, type="checkpoint") if c.entry.file == file]  # type: ignore[attr-defined]
    if not found:
        raise CheckpointLineageError(
            "its file digest is not in the ledger (never recorded, or modified)"
        )
    chain: list[LoggedEntry] = []
    datasets: dict[str, LoggedEntry] = {}
    origin: LoggedEntry | None = None
    cur = found[0]
    while True:
        _prove(ledger, cur, size)
        chain.append(cur)
        ck = cur.entry
        assert isinstance(ck, E.TrainingCheckpoint)
        for d in ck.datasets:
            if d not in datasets:
                datasets[d] = _dataset(ledger, d, cur.index, size)
        if ck.parent is None:
            break
        earlier = [e for e in ledger.find(ck.parent) if e.index < cur.index
                   and getattr(e.entry, "model", None) == ck.parent]
        saves = [e for e in earlier if isinstance(e.entry, E.TrainingCheckpoint)]
        if saves:  # the latest save of those weights before this one
            cur = saves[-1]
            continue
        models = [e for e in earlier if e.entry.TYPE in _MODEL_TYPES]
        if not models:
            raise CheckpointLineageError(
                f"parent model {ck.parent} of checkpoint entry {cur.index} ({ck.name}) is "
                "not recorded before it"
            )
        origin = models[-1]
        _prove(ledger, origin, size)
        break
    return CheckpointLineage(file, tuple(chain), tuple(datasets.values()), origin, size)

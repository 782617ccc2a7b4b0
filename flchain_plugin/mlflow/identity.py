"""One commitment per identity: a logged model (its id) and a model version (its name and
number) are committed to the ledger once.

If a second entry for the same identity could be appended and "the latest wins", whoever
can reach the registry (or a second MLflow database sharing the ledger) could point a
version that others already checked at other files. So a commit is refused when its
identity is already in the ledger, and the check holds against concurrent writers
(server workers, several processes) without a lock of its own: the entry is appended with
`expect_size` equal to the size the ledger was searched up to, and when another writer
grew the log first (SizeConflict), only the entries it added are searched before the
retry. A ledger that holds two anyway (written by `flchain append`, or before this rule)
is reported at load, where the first one stands (`verify.verify_directory`).

Each batch is one entry followed by a signed checkpoint of exactly its tree head, as the
Flower ledger signs each round (`commit.log_signer`: the key at `<ledger file>.key`).
"""

from __future__ import annotations

from flchain_plugin import entries as E
from flchain_plugin.commit import Committed, commit, log_signer
from flchain_plugin.ledger import Ledger, LoggedEntry
from flchain_plugin.notes import Signer

from .view import MlflowQuery, scan_mlflow


class DuplicateCommitmentError(RuntimeError):
    """The ledger already commits this logged model or model version; `existing` is that
    first commitment, which stands."""

    def __init__(self, identity: MlflowQuery, existing: LoggedEntry):
        self.identity = identity
        self.existing = existing
        super().__init__(
            f"{describe_identity(identity)} is already committed in ledger entry "
            f"{existing.index}; the ledger keeps one commitment per identity"
        )


def identity_of(entry: E.Mlflow) -> MlflowQuery:
    """What an `mlflow` entry commits: a logged model by id, a version by name and number."""
    if entry.kind == "model_version":
        return MlflowQuery(kind="model_version", name=entry.name, version=entry.version)
    return MlflowQuery(kind="logged_model", model_id=entry.model_id)


def describe_identity(identity: MlflowQuery) -> str:
    if identity.kind == "model_version":
        return f"version {identity.version} of {identity.name!r}"
    return f"logged model {identity.model_id}"


def first_commitment(ledger: Ledger, identity: MlflowQuery, start: int = 0,
                     end: int | None = None) -> LoggedEntry | None:
    """The oldest commitment of `identity` in [start, end): the one that stands."""
    return next(scan_mlflow(ledger, identity, start, end), None)


def commit_once(ledger: Ledger, entry: E.Mlflow, signer: Signer | None = None) -> Committed:
    """Append `entry` unless its identity is already committed, with a signed checkpoint of
    the tree head it made. Raises DuplicateCommitmentError (the ledger is unchanged).

    The log is searched up to the size the append expects; if another writer got there
    first, only what it appended is searched before the retry (`commit`'s `admit`), so two
    writers racing on one identity cannot both commit it."""
    identity = identity_of(entry)

    def admit(start: int, end: int) -> None:
        existing = first_commitment(ledger, identity, start, end)
        if existing is not None:
            raise DuplicateCommitmentError(identity, existing)

    searched = ledger.size
    admit(0, searched)
    return commit(ledger, [entry], built_for=searched, signer=signer or log_signer(ledger),
                  admit=admit)

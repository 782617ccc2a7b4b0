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

A store keeps a `Commitments` index (identity -> first commitment), read once per entry
and extended as the log grows, so the n-th registration reads only what was appended since
the previous one instead of the whole log.

Each batch is one entry followed by a signed checkpoint of exactly its tree head, as the
Flower ledger signs each round (`commit.log_signer`: the key at `<ledger file>.key`).
"""

from __future__ import annotations

from flchain_plugin import entries as E
from flchain_plugin.commit import Committed, commit, log_signer
from flchain_plugin.ledger import Ledger, LoggedEntry
from flchain_plugin.notes import Signer

from .view import MlflowQuery

INDEX_BATCH = 4096
"""Entries decoded per read while the index catches up with the log."""

ENTRIES_KEPT = 1024
"""Decoded commitments an index keeps (the most recently found or committed), so the
registration of a model found a moment ago reads no entry row again."""


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


class Commitments:
    """Where each identity of one ledger was first committed.

    The log is append-only, so an index entry never goes stale: it is read once per entry
    and only extended (from `read` to the size asked for). A rewritten file is `verify`'s
    business, not this index's: the append still names the size it was checked up to."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.read = 0
        self._first: dict[MlflowQuery, int] = {}
        self._kept: dict[int, LoggedEntry] = {}  # index -> decoded, oldest use first

    def first(self, identity: MlflowQuery, end: int | None = None) -> LoggedEntry | None:
        """The oldest commitment of `identity` below `end` (default: the ledger's size)."""
        end = self.ledger.size if end is None else end
        while self.read < end:
            stop = min(end, self.read + INDEX_BATCH)
            for le in self.ledger.iter_entries(self.read, stop, type="mlflow"):
                self._first.setdefault(identity_of(le.entry), le.index)  # type: ignore[arg-type]
            self.read = stop
        index = self._first.get(identity)
        if index is None or index >= end:
            return None
        found = self._kept.pop(index, None) or self.ledger.get(index)
        self._keep(found)
        return found

    def committed(self, logged: LoggedEntry) -> None:
        """Index an entry this process just appended, when nothing was appended before it
        that the index has not read: the next search then reads no row for it."""
        if logged.index != self.read or not isinstance(logged.entry, E.Mlflow):
            return
        self._first.setdefault(identity_of(logged.entry), logged.index)
        self.read = logged.index + 1
        self._keep(logged)

    def _keep(self, logged: LoggedEntry) -> None:
        self._kept[logged.index] = logged
        if len(self._kept) > ENTRIES_KEPT:
            del self._kept[next(iter(self._kept))]


def commit_once(ledger: Ledger, entry: E.Mlflow, signer: Signer | None = None,
                commitments: Commitments | None = None) -> Committed:
    """Append `entry` unless its identity is already committed, with a signed checkpoint of
    the tree head it made. Raises DuplicateCommitmentError (the ledger is unchanged).

    The log is searched up to the size the append expects; if another writer got there
    first, what it appended is searched before the retry (`commit`'s `admit`), so two
    writers racing on one identity cannot both commit it. `commitments`: the store's index
    of this ledger (else one is read for this call)."""
    identity = identity_of(entry)
    index = Commitments(ledger) if commitments is None else commitments
    if index.ledger is not ledger:
        raise ValueError("commitments: an index of another ledger")

    def admit(start: int, end: int) -> None:
        existing = index.first(identity, end)
        if existing is not None:
            raise DuplicateCommitmentError(identity, existing)

    searched = ledger.size
    admit(0, searched)
    done = commit(ledger, [entry], built_for=searched, signer=signer or log_signer(ledger),
                  admit=admit)
    index.committed(LoggedEntry(done.first, done.entries[0].encode(), done.entries[0]))
    return done

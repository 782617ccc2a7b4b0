"""Checking a local copy of an MLflow model against the ledger, and its lineage.

A registered version must match the commitment of that name and version, and a logged
model the commitment of its id: each identity is committed once (`identity`); should a
ledger hold more, the first stands and the others are reported. Any other URI must match
some committed model. Deserializing is the caller's business and comes after.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flchain_plugin import entries as E
from flchain_plugin.digest import FileDigest, files_root
from flchain_plugin.ledger import LoggedEntry
from flchain_plugin.lineage import records, walk

from .commitment import (
    DuplicateCommitmentWarning,
    FileChange,
    TamperedModelError,
    UnknownModelError,
    describe,
    file_changes,
    manifest_files,
    model_files,
)
from .view import LedgerView, MlflowQuery

MAX_LINEAGE_UPDATES = 50
CLAIMED_BY_TAG = "claimed by tag, weights not re-hashed"
"""Why a weights link is unverified: its model digest is the logger's `flchain.model_digest`
tag, which anyone can set, not a digest the store re-hashed from safetensors weights."""


@dataclass(frozen=True)
class Target:
    """What a model URI names: a registered version, a logged model, or just files."""

    uri: str
    name: str | None = None
    version: str | None = None
    model_id: str | None = None

    @property
    def download_uri(self) -> str:
        """A URI that cannot move while we download (an alias or `latest` can)."""
        if self.name is not None and self.version is not None:
            return f"models:/{self.name}/{self.version}"
        if self.model_id is not None:
            return f"models:/{self.model_id}"
        return self.uri

    def query(self) -> MlflowQuery | None:
        if self.version is not None:
            return MlflowQuery(kind="model_version", name=self.name, version=self.version)
        if self.model_id is not None:
            return MlflowQuery(kind="logged_model", model_id=self.model_id)
        return None

    def __str__(self) -> str:
        if self.version is not None:
            return f"version {self.version} of {self.name!r}"
        if self.model_id is not None:
            return f"logged model {self.model_id}"
        return self.uri


@dataclass(frozen=True)
class LineageStep:
    """One ledger entry on the way from a model back to what it was made from."""

    relation: str
    index: int
    entry: dict[str, Any]
    verified: bool = True
    note: str | None = None


@dataclass(frozen=True)
class Verification:
    """A local copy that matched the ledger: where it is and which entry vouches for it."""

    target: Target
    path: str
    files: str
    entry: LoggedEntry
    ledger: str
    size: int
    root: str
    lineage: tuple[LineageStep, ...] = field(default=())

    @property
    def status(self) -> str:
        return getattr(self.entry.entry, "status", "ok")

    @property
    def unverified_links(self) -> tuple[LineageStep, ...]:
        return tuple(s for s in self.lineage if not s.verified)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "uri": self.target.uri,
            "target": str(self.target),
            "path": self.path,
            "files": self.files,
            "status": self.status,
            "entry": {"index": self.entry.index, **self.entry.entry.to_json()},
            "ledger": {"location": self.ledger, "size": self.size, "root": self.root},
            "lineage": [{"relation": s.relation, "index": s.index, **s.entry,
                         "verified": s.verified, **({"note": s.note} if s.note else {})}
                        for s in self.lineage],
            "unverified_links": [s.index for s in self.unverified_links],
        }


def verify_directory(
    path: str | os.PathLike[str],
    target: Target,
    view: LedgerView,
    *,
    strict: bool = True,
    files: Sequence[FileDigest] | None = None,
) -> Verification:
    """Hash the copy at `path` (unless `files`, its digests taken while it was written,
    are given) and find the ledger entry it must match; raise TamperedModelError (naming
    the files) or UnknownModelError otherwise."""
    if files is None:
        files = model_files(path)
    digest = files_root(files)
    query = target.query()
    if query is None:
        entry = _any_commitment(view, target, digest)
    else:
        entry = _the_commitment(view, target, query)
        _check_files(view, target, entry, files, digest)
        committed: Any = entry.entry
        if committed.status != "ok":
            msg = (f"{target} was registered although its files differed from its logged "
                   f"model (ledger entry {entry.index}, status {committed.status!r})")
            if strict:
                raise TamperedModelError(msg + "; refusing to load it in strict mode.")
    return Verification(
        target=target, path=os.fspath(path), files=digest, entry=entry,
        ledger=view.location, size=view.size, root=view.root_digest,
        lineage=tuple(lineage(view, entry)),
    )


def _any_commitment(view: LedgerView, target: Target, digest: str) -> LoggedEntry:
    """A plain URI names no identity: any committed model with these files will do."""
    found = [e for e in view.find(digest, type="mlflow") if e.entry.status == "ok"]  # type: ignore[attr-defined]
    if not found:
        raise UnknownModelError(
            f"{target.uri}: no model with files digest {digest} is in {view.coverage()}; "
            "it was not logged through the flchain plugin, or was changed"
        )
    return found[-1]


def _the_commitment(view: LedgerView, target: Target, query: MlflowQuery) -> LoggedEntry:
    """The one commitment of a version or logged model: the first, which stands. Later
    ones (which the plugin refuses to write) are reported, never preferred."""
    found = view.mlflow(query)
    if not found:
        raise UnknownModelError(
            f"{target}: {view.coverage()} has no commitment for it; it was not logged or "
            "registered through a flchain+<db> store"
        )
    if len(found) > 1:
        later = ", ".join(str(e.index) for e in found[1:])
        warnings.warn(
            f"flchain: the ledger holds {len(found)} commitments for {target} (entries "
            f"{found[0].index}, {later}); one commitment per identity: the first, entry "
            f"{found[0].index}, stands and the later ones are ignored",
            DuplicateCommitmentWarning, stacklevel=4,
        )
    return found[0]


def _check_files(view: LedgerView, target: Target, entry: LoggedEntry,
                 files: Sequence[FileDigest], digest: str) -> None:
    committed: Any = entry.entry
    if committed.files == digest:
        return
    expected = manifest_files(committed) or _logged_manifest(view, committed)
    changes: list[FileChange] = file_changes(expected, files) if expected else []
    named = describe(changes) if changes else f"files digest {digest}"
    raise TamperedModelError(
        f"{target}: the files copied for loading differ from ledger entry {entry.index} "
        f"({committed.files}): {named}. Refusing to load it.",
        changes,
    )


def _logged_manifest(view: LedgerView, version: Any) -> list[FileDigest] | None:
    """A version entry without a manifest: its logged model's, when the roots agree."""
    ref = version.detail.get("logged_model_entry")
    if not isinstance(ref, int) or not 0 <= ref < view.size:
        return None
    logged: Any = view.get(ref).entry
    return manifest_files(logged) if logged.files == version.files else None


def _summary(entry: E.Entry) -> dict[str, Any]:
    keep = ("type", "kind", "model_id", "name", "version", "run", "run_id", "round", "node",
            "model", "files", "file", "parent", "update", "params", "datasets", "parents",
            "status", "epoch", "step")
    doc = entry.to_json()
    return {k: doc[k] for k in keep if k in doc and doc[k] is not None}


def lineage(view: LedgerView, start: LoggedEntry) -> list[LineageStep]:
    """From a version or logged model back through its logged model and parent models, then
    through the entries that record the same weights (the core lineage's `records`) and
    their ancestors (its `walk`), down to the client updates a round aggregated.

    Links through the weights digest are marked unverified unless the store re-hashed that
    digest from safetensors files covered by the verified files digest."""
    steps = [LineageStep("self", start.index, _summary(start.entry))]
    seen = {start.index}

    def add(relation: str, e: LoggedEntry, note: str | None = None) -> None:
        if e.index not in seen:
            seen.add(e.index)
            steps.append(LineageStep(relation, e.index, _summary(e.entry), note is None, note))

    entry: Any = start.entry
    logged = None
    ref = entry.detail.get("logged_model_entry") if isinstance(entry, E.Mlflow) else None
    if isinstance(ref, int) and 0 <= ref < view.size:
        logged = view.get(ref)
        add("logged model", logged)
    for src in [start] + ([logged] if logged else []):
        for parent in getattr(src.entry, "parents", []):  # named by their files digest
            for e in records(view, parent):
                if e.entry.kind == "logged_model":  # type: ignore[attr-defined]
                    add("parent model", e)
    holder: Any = start.entry if entry.model else (logged.entry if logged else None)
    weights = holder.model if holder is not None else None
    if not weights:
        return steps
    note = None if holder.detail.get("model_from") == "safetensors" else CLAIMED_BY_TAG
    same = [e for e in records(view, weights) if not isinstance(e.entry, E.Mlflow)]
    ancestors = [link.entry for link in walk(view, weights).links[1:] if link.entry]
    for relation, found in (("same weights", same), ("ancestor", ancestors)):
        for e in found:
            add(f"{relation} ({e.entry.TYPE})", e, note)
            for i in getattr(e.entry, "inputs", [])[:MAX_LINEAGE_UPDATES]:
                if 0 <= i < view.size:
                    add("aggregated update", view.get(i), note)
    return steps

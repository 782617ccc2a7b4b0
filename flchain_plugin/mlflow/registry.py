"""The model registry store behind `flchain+<db>`: a version is created only after its
files, re-hashed from storage, match what the ledger committed for its logged model.

Strict (default): a changed, added or removed file, or a model the ledger never saw,
refuses the version and the error names the files. Permissive: the version is created,
recorded as a mismatch, and a warning names the files. The `flchain.*` tags are passed
inside the `create_model_version` call, so they cost no extra writes. If the ledger
append fails after the version was created, the version is deleted again; so it is when
the ledger already commits that name and version (`identity`: one commitment each).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mlflow.entities.model_registry import ModelVersionTag
from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    INVALID_STATE,
    RESOURCE_CONFLICT,
)
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.store.model_registry.sqlalchemy_workspace_store import WorkspaceAwareSqlAlchemyStore

from flchain_plugin import entries as E
from flchain_plugin.digest import DigestError, FileDigest, files_root, parse_digest
from flchain_plugin.ledger import Ledger, LoggedEntry

from .artifacts import local_directory
from .commitment import (
    MismatchWarning,
    describe,
    file_changes,
    files_detail,
    manifest_files,
    model_files,
)
from .config import PluginConfig, parse_store_uri
from .identity import Commitments, DuplicateCommitmentError, commit_once
from .store import FILES_TAG, STATUS_TAG, PluginLedger
from .view import MlflowQuery


def model_id_from_source(source: str) -> str | None:
    """`m-...` from a `models:/m-...` source (MLflow's logged-model URI)."""
    parts = urlsplit(source)
    if parts.scheme != "models":
        return None
    head = (parts.netloc or parts.path.lstrip("/")).split("/")[0]
    return head if head.startswith("m-") else None


def _first_logged(ledger: Ledger, digest: str) -> LoggedEntry | None:
    """The oldest logged-model commitment with these files.

    Reads the digest index oldest first and stops at the first hit: version entries carry
    the same files digest, so a model registered many times has many later entries."""
    for i in ledger.store.find(parse_digest(digest)):
        got = ledger.get(i)
        e = got.entry
        if isinstance(e, E.Mlflow) and e.kind == "logged_model" and e.files == digest:
            return got
    return None


def committed_logged_model(
    commitments: Commitments, model_id: str | None, files: str
) -> tuple[LoggedEntry | None, LoggedEntry | None]:
    """(the commitment these files match, the commitment of `model_id`).

    With a model id, only its commitment counts (the first, which stands: a logged model
    is committed once), whatever other logged models hold the same files; without one (a
    plain source), any logged model with these files does, found through the digest
    index in a read or two."""
    if model_id is None:
        match = _first_logged(commitments.ledger, files)
        return match, match
    own = commitments.first(MlflowQuery(kind="logged_model", model_id=model_id))
    matches = own is not None and own.entry.files == files  # type: ignore[attr-defined]
    return (own if matches else None), own


LOCATIONS_KEPT = 1024
"""Logged models whose storage location a registry store remembers (see `_location`)."""


class LedgerRegistryMixin(PluginLedger):
    """Adds the ledger check and record to a SqlAlchemy registry store (mixed in first)."""

    _tracking_uri: str | None
    _locations: dict[str, tuple[str, str | None]]

    def _open_ledger(self, config: PluginConfig, tracking_uri: str | None) -> None:
        self._open_plugin_ledger(config)
        self._tracking_uri = tracking_uri
        self._locations = {}

    def _tracking_store(self) -> Any:
        from mlflow.tracking._tracking_service.utils import _get_store

        return _get_store(self._tracking_uri)

    def _location(self, model_id: str) -> tuple[str, str | None]:
        """Where a logged model's files are stored, and its run. MLflow never moves a logged
        model's artifacts nor changes its run, so the answer is kept per store (bounded):
        registering many versions of one model asks the tracking store once. Whether the
        model still exists stays MLflow's own check: its store fetches the logged model of a
        `models:/` source on every version, before anything here is recorded."""
        cache = self._locations
        if model_id in cache:
            return cache[model_id]
        store = self._tracking_store()
        if hasattr(store, "logged_model_location"):
            found: tuple[str, str | None] = store.logged_model_location(model_id)
        else:
            lm = store.get_logged_model(model_id)
            found = (lm.artifact_location, lm.source_run_id)
        if len(cache) >= LOCATIONS_KEPT:
            del cache[next(iter(cache))]
        cache[model_id] = found
        return found

    def create_model_version(
        self,
        name: str,
        source: str,
        run_id: str | None = None,
        tags: list[ModelVersionTag] | None = None,
        run_link: str | None = None,
        description: str | None = None,
        local_model_path: str | None = None,
        model_id: str | None = None,
    ) -> Any:
        """Hash the version's files from storage, judge them against the logged model's
        commitment, create the version with the verdict in its tags, commit it once."""
        mid = model_id or model_id_from_source(source)
        location, files, run_id = self._stored_files(name, source, mid, run_id)
        verdict = self._judge(name, source, mid, location, files)
        extra = [ModelVersionTag(FILES_TAG, verdict.digest),
                 ModelVersionTag(STATUS_TAG, verdict.status)]
        mine = {t.key for t in extra}
        all_tags = [t for t in (tags or []) if t.key not in mine] + extra
        mv = super().create_model_version(  # type: ignore[misc]
            name, source, run_id=run_id, tags=all_tags, run_link=run_link,
            description=description, local_model_path=local_model_path, model_id=model_id,
        )
        self._record(verdict.entry(mid, name, str(mv.version), run_id, files), mv.version)
        return mv

    def _stored_files(self, name: str, source: str, mid: str | None, run_id: str | None
                      ) -> tuple[str, list[FileDigest], str | None]:
        """(storage location, its files hashed, the run) of the version being created."""
        store: Any = self
        if mid is not None:
            location, source_run = self._location(mid)
            run_id = run_id or source_run
        elif urlsplit(source).scheme == "models":
            location = store.get_model_version_download_uri(*_name_version(source))
        else:
            location = source
        try:
            with local_directory(location) as root:
                return location, model_files(root), run_id
        except (OSError, DigestError, ValueError) as e:
            raise MlflowException(
                f"flchain refused version of {name!r}: cannot hash the model files at "
                f"{location}: {e}", RESOURCE_CONFLICT
            ) from e

    def _judge(self, name: str, source: str, mid: str | None, location: str,
               files: list[FileDigest]) -> Verdict:
        """Match the files to the logged model's commitment; strict mode raises on a
        mismatch, permissive mode warns and records it."""
        digest = files_root(files)
        match, committed = committed_logged_model(self.commitments, mid, digest)
        detail: dict[str, Any] = {"source": source, "storage_location": location}
        if match is not None:
            detail["logged_model_entry"] = match.index
            model_from = match.entry.detail.get("model_from")  # type: ignore[attr-defined]
            if model_from:
                detail["model_from"] = model_from
            return Verdict(digest, "ok", detail, match.entry)  # type: ignore[arg-type]
        what = f"logged model {mid}" if mid else f"source {source}"
        if committed is None:
            detail["reason"] = "not_committed"
            msg = (f"the ledger has no commitment for {what}; log it through a "
                   "flchain+<db> tracking store (or the server running one)")
        else:
            expected = manifest_files(committed.entry)  # type: ignore[arg-type]
            changes = file_changes(expected, files) if expected is not None else []
            detail["reason"] = "files_changed"
            detail["logged_model_entry"] = committed.index
            detail["changes"] = [c.__dict__ for c in changes[:50]]
            named = describe(changes) if changes else f"files digest {digest}"
            msg = (f"files of {what} differ from its commitment, ledger entry "
                   f"{committed.index} (made at finalize): {named}")
        if self.flchain.strict:
            raise MlflowException(
                f"flchain refused version of {name!r}: {msg}. Nothing was registered. "
                "Re-log the model, or use flchain_mode=permissive to record the mismatch.",
                RESOURCE_CONFLICT,
            )
        warnings.warn(f"flchain: registering {name!r} despite a mismatch (permissive "
                      f"mode): {msg}", MismatchWarning, stacklevel=3)
        return Verdict(digest, "mismatch", detail, None)

    def _record(self, entry: E.Mlflow, version: Any) -> None:
        """Commit the created version once; if that fails, the version is removed again."""
        store: Any = self
        name = entry.name
        try:
            commit_once(self.ledger, entry, self._log_signer(), self.commitments)
        except DuplicateCommitmentError as e:
            store.delete_model_version(name, version)
            raise MlflowException(
                f"flchain refused version of {name!r}: {e} (a registered model of this "
                "name was deleted and made again, or another database shares the ledger "
                f"{self.flchain.where}). The version was removed again; register under "
                "a new name.", RESOURCE_CONFLICT,
            ) from None
        except Exception as e:
            try:
                store.delete_model_version(name, version)
            finally:
                raise MlflowException(
                    f"flchain: version {version} of {name!r} could not be recorded in the "
                    f"ledger ({e}); it was removed again. Fix the ledger at "
                    f"{self.flchain.where} and register again.", INVALID_STATE
                ) from e


@dataclass(frozen=True)
class Verdict:
    """What the registry found for a new version's files: their digest, `ok` or
    `mismatch`, the detail recorded, and the logged model's entry when they match it."""

    digest: str
    status: str
    detail: dict[str, Any]
    logged: E.Mlflow | None

    def entry(self, mid: str | None, name: str, version: str, run_id: str | None,
              files: list[FileDigest]) -> E.Mlflow:
        """The version's `mlflow` entry: the logged model's weights, params and files as
        its parent when they match, nothing claimed when they do not."""
        c = self.logged
        return E.Mlflow(
            kind="model_version", model_id=mid or "", files=E.Digest(self.digest),
            model=c.model if c else None, run_id=run_id, name=name, version=version,
            params=c.params if c else None, parents=[c.files] if c else [],
            status=self.status, detail=files_detail(self.detail, files),
        )


def _name_version(source: str) -> tuple[str, str]:
    from mlflow.store.artifact.utils.models import _parse_model_uri

    parsed = _parse_model_uri(source)
    if parsed.name is None or parsed.version is None:
        raise MlflowException(
            f"flchain: cannot resolve {source!r}; register from models:/<name>/<version> or "
            "from a logged model (models:/m-...)", INVALID_PARAMETER_VALUE
        )
    return parsed.name, str(parsed.version)


class FlchainRegistryStore(LedgerRegistryMixin, SqlAlchemyStore):
    """`flchain+<db>` model registry store: MLflow's SqlAlchemyStore plus the ledger."""

    def __init__(self, store_uri: str, tracking_uri: str | None = None):
        config = parse_store_uri(store_uri)
        super().__init__(config.inner_uri)
        self._open_ledger(config, tracking_uri)


class FlchainWorkspaceRegistryStore(LedgerRegistryMixin, WorkspaceAwareSqlAlchemyStore):
    """The same over MLflow's workspace-aware registry store."""

    def __init__(self, store_uri: str, tracking_uri: str | None = None):
        config = parse_store_uri(store_uri)
        super().__init__(config.inner_uri)
        self._open_ledger(config, tracking_uri)


def build_registry_store(store_uri: str, tracking_uri: str | None = None) -> SqlAlchemyStore:
    """The `mlflow.model_registry_store` builder."""
    if MLFLOW_ENABLE_WORKSPACES.get():
        return FlchainWorkspaceRegistryStore(store_uri, tracking_uri)
    return FlchainRegistryStore(store_uri, tracking_uri)

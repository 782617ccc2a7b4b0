"""The tracking store behind `flchain+<db>`: MLflow's SqlAlchemyStore that commits every
logged model to the ledger when it is finalized.

It is a subclass, not a proxy, so MLflow's `isinstance(store, SqlAlchemyStore)` checks and
its async logging queue (bound to `self.log_batch`) keep working. `finalize_logged_model`
with READY is the first point where all of a model's files exist: the files are hashed
from storage, committed with the run's params, metrics, datasets and parent models, and
only then is the model marked READY. A model that cannot be committed stays PENDING.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from mlflow.entities import LoggedModelStatus, LoggedModelTag
from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    INVALID_STATE,
    RESOURCE_CONFLICT,
)
from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.store.tracking.sqlalchemy_workspace_store import WorkspaceAwareSqlAlchemyStore

from flchain_plugin import entries as E
from flchain_plugin.commit import log_signer
from flchain_plugin.digest import DigestError, FileDigest
from flchain_plugin.entries import EntryError, check_digest
from flchain_plugin.ledger import Ledger, LoggedEntry
from flchain_plugin.notes import KeyFileError, Signer

from .artifacts import in_server, local_directory
from .commitment import (
    MismatchWarning,
    dataset_record,
    describe,
    file_changes,
    logged_model_entry,
    manifest_files,
    model_files,
    run_digest,
)
from .config import PluginConfig, parse_store_uri
from .identity import Commitments, DuplicateCommitmentError, commit_once
from .server_ledger import open_store_ledger
from .view import MlflowQuery
from .weights import MODEL_DIGEST_TAG, safetensors_digest

FILES_TAG = "flchain.files"
ENTRY_TAG = "flchain.entry"
STATUS_TAG = "flchain.status"

class PluginLedger:
    """What both plugin stores hold: the config, the ledger, and its checkpoint key, read
    on the first commit (a store that only reads never creates `<ledger>.key`) and then
    once per store rather than once per commit. A PostgreSQL ledger's key is the file
    $FLCHAIN_LOG_KEY names (`server_ledger`); without it nothing is committed and the
    error says so."""

    flchain: PluginConfig
    ledger: Ledger
    commitments: Commitments
    _signer: Signer | None

    def _open_plugin_ledger(self, config: PluginConfig) -> None:
        self.flchain = config
        self.ledger = open_store_ledger(config)
        self.commitments = Commitments(self.ledger)
        self._signer = None

    def _log_signer(self) -> Signer:
        if self._signer is None:
            try:
                self._signer = log_signer(self.ledger)
            except KeyFileError as e:
                raise MlflowException(f"flchain: nothing was committed: {e}",
                                      INVALID_STATE) from None
        return self._signer


class LedgerTrackingMixin(PluginLedger):
    """Adds the ledger commitment to a SqlAlchemy tracking store (mixed in first)."""

    def _open_ledger(self, config: PluginConfig) -> None:
        self._open_plugin_ledger(config)

    def finalize_logged_model(self, model_id: str, status: LoggedModelStatus) -> Any:
        if LoggedModelStatus(status) != LoggedModelStatus.READY:
            return super().finalize_logged_model(model_id, status)  # type: ignore[misc]
        logged = self._commit_logged_model(model_id)
        result = super().finalize_logged_model(model_id, status)  # type: ignore[misc]
        self.set_logged_model_tags(  # type: ignore[attr-defined]
            model_id,
            [
                LoggedModelTag(FILES_TAG, logged.entry.files),  # type: ignore[attr-defined]
                LoggedModelTag(ENTRY_TAG, str(logged.index)),
                LoggedModelTag(STATUS_TAG, logged.entry.status),  # type: ignore[attr-defined]
            ],
        )
        return result

    def logged_model_location(self, model_id: str) -> tuple[str, str | None]:
        """(artifact location, source run id) of a live logged model, in one narrow query:
        the registry needs only these, once per new version."""
        from mlflow.entities.lifecycle_stage import LifecycleStage
        from mlflow.store.tracking.dbmodels.models import SqlLoggedModel

        store: Any = self
        with store.ManagedSessionMaker() as session:
            row = (
                store._get_query(session, SqlLoggedModel)
                .filter(SqlLoggedModel.model_id == model_id,
                        SqlLoggedModel.lifecycle_stage != LifecycleStage.DELETED)
                .with_entities(SqlLoggedModel.artifact_location, SqlLoggedModel.source_run_id)
                .first()
            )
        if row is None:
            store._raise_model_not_found(model_id)
        return row[0], row[1]

    def _commit_logged_model(self, model_id: str) -> LoggedEntry:
        store: Any = self
        lm = store.get_logged_model(model_id)
        detail: dict[str, Any] = {"artifact_location": lm.artifact_location,
                                  "experiment_id": lm.experiment_id}
        claimed = (lm.tags or {}).get(MODEL_DIGEST_TAG)
        if claimed is not None:
            try:
                check_digest(claimed, MODEL_DIGEST_TAG)
            except EntryError as e:
                raise MlflowException(f"logged model {model_id}: {e}",
                                      INVALID_PARAMETER_VALUE) from None
        try:
            with local_directory(lm.artifact_location) as root:
                files = model_files(root) if root.exists() else []
                weights = safetensors_digest(root, files)
        except (OSError, DigestError, ValueError) as e:
            raise MlflowException(
                f"flchain: cannot hash the files of logged model {model_id} at "
                f"{lm.artifact_location}: {e}. The model stays PENDING; fix the storage and "
                "finalize it again.",
                INVALID_STATE,
            ) from e
        status = "ok"
        model = weights or claimed
        if weights:
            detail["model_from"] = "safetensors"
            if claimed and claimed != weights:
                detail["claimed_model"] = claimed
                status = "mismatch"
                msg = (f"logged model {model_id}: tag {MODEL_DIGEST_TAG}={claimed} differs from "
                       f"the digest of its safetensors weights {weights}")
                if self.flchain.strict:
                    raise MlflowException(
                        f"flchain refused: {msg}. Fix the tag, or use flchain_mode=permissive.",
                        RESOURCE_CONFLICT,
                    )
                warnings.warn(f"flchain: {msg}; recorded as a mismatch (permissive mode)",
                              MismatchWarning, stacklevel=2)
        elif claimed:
            detail["model_from"] = "tag"

        run_id = lm.source_run_id
        params, datasets, parents = self._run_inputs(run_id, model_id, detail)
        entry = logged_model_entry(
            model_id, files, model=model, run_id=run_id, name=lm.name, params=params,
            datasets=datasets, parents=parents, detail=detail, status=status,
        )
        return self._commit_once(entry, files)

    def _run_inputs(self, run_id: str | None, model_id: str, detail: dict[str, Any]
                    ) -> tuple[str | None, list[dict[str, Any]], list[str]]:
        """(params digest, dataset records, parent commitments) of the model's run; parents
        the ledger does not hold are listed in `detail`."""
        if not run_id:
            return None, [], []
        store: Any = self
        run = store.get_run(run_id)
        params = run_digest(run.data.params, run.data.metrics)
        hash_local = not in_server()
        datasets = []
        for di in run.inputs.dataset_inputs:
            ds = di.dataset
            context = next((t.value for t in di.tags if t.key == "mlflow.data.context"), None)
            datasets.append(dataset_record(ds.name, ds.digest, ds.source_type, ds.source,
                                           context, hash_local))
        parents, missing = [], []
        for mi in run.inputs.model_inputs:
            if mi.model_id == model_id:
                continue
            parent = self.commitments.first(MlflowQuery(kind="logged_model", model_id=mi.model_id))
            if parent is None:
                missing.append(mi.model_id)
            else:
                parents.append(parent.entry.files)  # type: ignore[attr-defined]
        if missing:
            detail["uncommitted_parents"] = missing
        return params, datasets, parents

    def _commit_once(self, entry: E.Mlflow, files: list[FileDigest]) -> LoggedEntry:
        """Commit a logged model once: finalizing it again with the same files finds its
        commitment; with other files it is refused, and the first commitment stands."""
        try:
            committed = commit_once(self.ledger, entry, self._log_signer(), self.commitments)
        except DuplicateCommitmentError as dup:
            first: Any = dup.existing.entry
            if first.files == entry.files:
                return dup.existing
            expected = manifest_files(first)
            changes = file_changes(expected, files) if expected is not None else []
            named = describe(changes) if changes else f"files digest {entry.files}"
            raise MlflowException(
                f"flchain refused to finalize logged model {entry.model_id} again: ledger "
                f"entry {dup.existing.index} already commits it with files {first.files}, "
                f"and its files now differ: {named}. One commitment per model: the first "
                "stands; log a new model for new files.",
                RESOURCE_CONFLICT,
            ) from None
        return LoggedEntry(committed.first, entry.encode(), entry)


class FlchainTrackingStore(LedgerTrackingMixin, SqlAlchemyStore):
    """`flchain+<db>` tracking store: MLflow's SqlAlchemyStore plus the ledger."""

    def __init__(self, store_uri: str, default_artifact_root: str):
        config = parse_store_uri(store_uri)
        super().__init__(config.inner_uri, default_artifact_root)
        self._open_ledger(config)


class FlchainWorkspaceTrackingStore(LedgerTrackingMixin, WorkspaceAwareSqlAlchemyStore):
    """The same over MLflow's workspace-aware store (`MLFLOW_ENABLE_WORKSPACES`)."""

    def __init__(self, store_uri: str, default_artifact_root: str):
        config = parse_store_uri(store_uri)
        super().__init__(config.inner_uri, default_artifact_root)
        self._open_ledger(config)


def build_tracking_store(store_uri: str, artifact_uri: str | None = None) -> SqlAlchemyStore:
    """The `mlflow.tracking_store` builder (same defaults as MLflow's sqlite builder)."""
    if artifact_uri is None:
        artifact_uri = os.environ.get("_MLFLOW_SERVER_ARTIFACT_ROOT",
                                      DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
    cls = FlchainWorkspaceTrackingStore if MLFLOW_ENABLE_WORKSPACES.get() else FlchainTrackingStore
    return cls(store_uri, artifact_uri)

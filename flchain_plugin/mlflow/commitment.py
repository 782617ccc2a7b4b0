"""What the ledger commits about an MLflow model, and how a copy is compared with it.

A logged model is committed as the directory digest of its files (MLflow's own
`registered_model_meta`, written into a model directory whenever it is downloaded, is left
out), a digest of its run's params and metrics, its run's dataset inputs and its parent
models. The per-file manifest rides in the entry's `detail` so a refusal can name the file;
it is only trusted when it hashes to the committed `files` root.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from flchain_plugin import entries as E
from flchain_plugin.canonical import canonical_json, json_value, parse_json
from flchain_plugin.digest import (
    DigestError,
    FileDigest,
    copy_files,
    directory_digest,
    directory_files,
    file_digest,
    files_root,
    json_digest,
)

EXCLUDED_FILES = ("registered_model_meta",)
"""Written by MLflow into a model directory at download time; never part of the model."""

MANIFEST_LIMIT = 48 * 1024
"""Above this many bytes of manifest the entry keeps only the root (entries are <= 64 KiB)."""

SOURCE_LIMIT = 512


class TamperedModelError(RuntimeError):
    """A model's files differ from what the ledger committed; `changes` names them."""

    def __init__(self, message: str, changes: Sequence[FileChange] = ()):
        super().__init__(message)
        self.changes = tuple(changes)


class MismatchWarning(UserWarning):
    """Permissive mode let through a model whose files differ from its commitment."""


class DuplicateCommitmentWarning(UserWarning):
    """The ledger holds more than one commitment for one model version or logged model
    (the plugin refuses to write a second): the first stands, the others are ignored."""


class UnknownModelError(RuntimeError):
    """The ledger holds no commitment for this model: it was never logged through the plugin."""


@dataclass(frozen=True)
class FileChange:
    """One difference between a committed manifest and a copy: changed, added or removed."""

    path: str
    change: str
    expected: str | None = None
    actual: str | None = None

    def __str__(self) -> str:
        return f"{self.path} ({self.change})"


def model_files(path: str | os.PathLike[str]) -> list[FileDigest]:
    """The files of a model directory as the ledger commits them, hashed by streaming."""
    return directory_files(path, exclude=EXCLUDED_FILES)


def copy_model_files(
    path: str | os.PathLike[str], dest: str | os.PathLike[str]
) -> list[FileDigest]:
    """Copy a model directory's committed files into `dest`, hashed as they are written:
    what `model_files` would say of the copy, for one read of the source."""
    return copy_files(path, dest, exclude=EXCLUDED_FILES)


def manifest(files: Sequence[FileDigest]) -> list[dict[str, Any]]:
    return [{"digest": f.digest, "path": f.path, "size": f.size} for f in files]


def manifest_files(entry: E.Mlflow) -> list[FileDigest] | None:
    """The per-file manifest of an entry, if it carries one that matches its `files` root."""
    raw = entry.detail.get("manifest")
    if not isinstance(raw, list):
        return None
    try:
        files = [FileDigest(str(m["path"]), int(m["size"]), str(m["digest"])) for m in raw]
    except (KeyError, TypeError, ValueError):
        return None
    return files if files_root(files) == entry.files else None


def file_changes(expected: Sequence[FileDigest], actual: Sequence[FileDigest]) -> list[FileChange]:
    """Changed, added and removed files, in path order."""
    want = {f.path: f for f in expected}
    have = {f.path: f for f in actual}
    out = []
    for path in sorted(want.keys() | have.keys(), key=lambda p: p.encode("utf-8")):
        w, h = want.get(path), have.get(path)
        if w is None:
            out.append(FileChange(path, "added", None, h.digest if h else None))
        elif h is None:
            out.append(FileChange(path, "removed", w.digest, None))
        elif (w.digest, w.size) != (h.digest, h.size):
            out.append(FileChange(path, "changed", w.digest, h.digest))
    return out


def describe(changes: Sequence[FileChange], limit: int = 5) -> str:
    names = ", ".join(str(c) for c in changes[:limit])
    more = len(changes) - limit
    return names + (f" and {more} more" if more > 0 else "")


def run_digest(params: Mapping[str, str], metrics: Mapping[str, float]) -> str:
    """SHA-256 of the canonical JSON `{"metrics": {k: latest value}, "params": {k: v}}`.

    Non-finite metric values are written as the strings "NaN", "Infinity", "-Infinity",
    so an auditor with the run's data can recompute the digest.
    """
    doc = {
        "metrics": {k: json_value(v) for k, v in metrics.items()},
        "params": {k: str(v) for k, v in params.items()},
    }
    return json_digest(doc)


def _local_path(source: str) -> Path | None:
    """The local file a dataset source names, if it names one."""

    try:
        doc = parse_json(source)
    except ValueError:
        return None
    uri = doc.get("uri") if isinstance(doc, dict) else None
    if not isinstance(uri, str) or not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return Path(unquote(parts.path))
    if not parts.scheme and uri.startswith("/"):
        return Path(uri)
    return None


def dataset_record(
    name: str,
    mlflow_digest: str,
    source_type: str,
    source: str,
    context: str | None,
    hash_local: bool,
) -> dict[str, Any]:
    """One dataset input: MLflow's 8-hex fingerprint for cross-reference, and a real SHA-256
    (file digest, or directory digest) where the data is reachable from this process."""
    rec: dict[str, Any] = {
        "context": context,
        "mlflow_digest": mlflow_digest,
        "name": name,
        "sha256": None,
        "source": source[:SOURCE_LIMIT],
        "source_type": source_type,
    }
    path = _local_path(source) if source_type == "local" else None
    if path is None:
        rec["unhashed"] = "data not reachable as a local file"
    elif not hash_local:
        rec["unhashed"] = "client-side path; the server does not read it"
    elif path.is_file():
        rec["sha256"] = file_digest(path)
    elif path.is_dir():
        try:
            rec["sha256"] = directory_digest(path)
        except DigestError as e:
            rec["unhashed"] = str(e)
    else:
        rec["unhashed"] = "path does not exist at finalize"
    return rec


def files_detail(detail: Mapping[str, Any], files: Sequence[FileDigest]) -> dict[str, Any]:
    """`detail` plus size, count and the per-file manifest when it fits in an entry."""
    base = dict(detail)
    base["bytes"] = sum(f.size for f in files)
    base["file_count"] = len(files)
    listed = manifest(files)
    if len(canonical_json(listed)) <= MANIFEST_LIMIT:
        base["manifest"] = listed
    return base


def logged_model_entry(
    model_id: str,
    files: Sequence[FileDigest],
    *,
    model: str | None,
    run_id: str | None,
    name: str | None,
    params: str | None,
    datasets: Iterable[dict[str, Any]],
    parents: Iterable[str],
    detail: Mapping[str, Any],
    status: str = "ok",
) -> E.Mlflow:
    """The `mlflow` entry of a finalized logged model, with its manifest when it fits."""
    return E.Mlflow(
        kind="logged_model",
        model_id=model_id,
        files=E.Digest(files_root(files)),
        model=E.Digest(model) if model else None,
        run_id=run_id,
        name=name,
        params=E.Digest(params) if params else None,
        datasets=list(datasets),
        parents=[E.Digest(p) for p in parents],
        status=status,
        detail=files_detail(detail, files),
    )

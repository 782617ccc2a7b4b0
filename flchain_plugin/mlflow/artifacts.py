"""A local directory holding a model's stored files, wherever MLflow keeps them.

The stores hash what is in storage, not what a client says it uploaded, so the plugin needs
no artifact-repository hook: uploads (including the server's streamed
`log_artifact_from_stream`) all land in storage before `finalize_logged_model`. Local
storage is hashed in place; inside `mlflow server` an `mlflow-artifacts:` location maps to
the `--artifacts-destination`; anything else is downloaded to a temporary directory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

_DESTINATION_ENV = "_MLFLOW_SERVER_ARTIFACT_DESTINATION"  # set by `mlflow server`


def in_server() -> bool:
    """True inside an `mlflow server` worker (which serves or stores artifacts itself)."""
    return "_MLFLOW_SERVER_FILE_STORE" in os.environ


def local_path(uri: str) -> Path | None:
    """The path a `file:` URI or plain path names on this machine; None for remote URIs."""
    parts = urlsplit(uri)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return Path(unquote(parts.path))
    if parts.scheme == "" or (len(parts.scheme) == 1 and parts.scheme.isalpha()):
        return Path(uri)
    return None


def _join(base: str, rel: str) -> str:
    segments = [s for s in rel.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise ValueError(f"artifact path {rel!r} leaves its root; refusing to read it")
    return base.rstrip("/") + ("/" + "/".join(segments) if segments else "")


def server_location(uri: str) -> str:
    """Where an `mlflow-artifacts:` URI is stored, seen from inside the server."""
    parts = urlsplit(uri)
    dest = os.environ.get(_DESTINATION_ENV)
    if parts.scheme != "mlflow-artifacts" or not dest:
        return uri
    return _join(dest, unquote(parts.path))


@contextmanager
def local_directory(artifact_uri: str) -> Iterator[Path]:
    """The directory at `artifact_uri` on this machine: storage itself when it is local,
    otherwise a temporary download that is removed on exit."""
    location = server_location(artifact_uri)
    path = local_path(location)
    if path is not None:
        if not path.is_dir():
            raise FileNotFoundError(f"{artifact_uri}: no model directory at {path}")
        yield path
        return
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with tempfile.TemporaryDirectory(prefix="flchain-mlflow-") as tmp:
        repo = get_artifact_repository(location)
        yield Path(repo.download_artifacts("", dst_path=tmp))

"""Verify before load: download a model, check the copy against the ledger, then deserialize.

MLflow models are pickles more often than not, and unpickling runs code, so the check must
come first and must look at the bytes that will be loaded: the model is copied to a fresh
private directory (`tempfile.mkdtemp`, mode 0700, so no other user can swap a file between
hashing and loading), that copy is matched to the ledger, and only that verified directory
is handed to the flavor's loader. From local storage the copy is made in the kernel and
hashed from the copy as it grows (`copy_model_files`): about one SHA-256 pass over a plain
load. Remote storage is downloaded by MLflow, then the copy is hashed. Only after the load
is the verified directory moved to a caller's `dst_path`, which is never read from (a
model that opens its files again after load finds them there, not at the path it was
loaded from). A tampered or unknown model raises before any pickle is opened.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flchain_plugin.digest import FileDigest
from flchain_plugin.ledger import Ledger
from flchain_plugin.notes import Verifier

from .artifacts import local_path
from .commitment import MismatchWarning, TamperedModelError, copy_model_files
from .config import LEDGER_ENV, MODE_ENV, PREFIX, ConfigError, parse_mode, parse_store_uri
from .verify import Target, Verification, verify_directory
from .view import HttpView, LedgerView, LocalView, pinned_verifier
from .weights import MODEL_DIGEST_TAG

T = TypeVar("T")
LedgerArg = str | os.PathLike[str] | Ledger | LedgerView | None
VerifierArg = str | Verifier | None
"""The log's verifier key: a `notes.Verifier`, a vkey string, or a file holding one."""


def open_view(ledger: LedgerArg = None, tracking_uri: str | None = None,
              verifier: VerifierArg = None) -> LedgerView:
    """The ledger to verify against: given, else `FLCHAIN_LEDGER`, else the one the
    tracking URI implies (`flchain+<db>` → its ledger; `http(s)://` → the server's).

    With a verifier key (`verifier`, else FLCHAIN_LOG_VERIFIER) the view holds only what
    the newest checkpoint signed by that key covers, and a ledger re-signed by any other
    key is refused: a reader other than the writer should always pin it."""
    if isinstance(ledger, LedgerView):
        return ledger
    key = pinned_verifier(verifier)
    if isinstance(ledger, Ledger):
        return LocalView(ledger, key)
    where = os.fspath(ledger) if ledger is not None else os.environ.get(LEDGER_ENV)
    if not where:
        import mlflow

        uri = tracking_uri or mlflow.get_tracking_uri()
        if uri.startswith(PREFIX):
            where = parse_store_uri(uri).ledger
        elif uri.startswith(("http://", "https://")):
            where = uri
        else:
            raise ConfigError(
                f"no ledger to verify against for tracking URI {uri!r}: use a "
                f"{PREFIX}<db> tracking URI, set {LEDGER_ENV}, or pass ledger="
            )
    if where.startswith(("http://", "https://")):
        return HttpView(where, verifier=key)
    return LocalView(Ledger(where, create=False), key)


def _mode(mode: str | None, tracking_uri: str | None) -> bool:
    """True for strict. Explicit argument, then the tracking URI's query, then the env."""
    if mode is None:
        import mlflow

        uri = tracking_uri or mlflow.get_tracking_uri()
        if uri.startswith(PREFIX):
            return parse_store_uri(uri).strict
        return parse_mode(os.environ.get(MODE_ENV) or "strict", MODE_ENV) == "strict"
    return parse_mode(mode, "mode") == "strict"


def resolve(model_uri: str) -> Target:
    """Pin what `model_uri` names; aliases and `latest` are resolved to a version once."""
    if not model_uri.startswith("models:"):
        return Target(uri=model_uri)
    import mlflow
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    got = get_model_name_and_version(mlflow.MlflowClient(), model_uri)
    if len(got) == 1:
        return Target(uri=model_uri, model_id=got[0])
    return Target(uri=model_uri, name=got[0], version=str(got[1]))


def _empty_destination(dst_path: str | os.PathLike[str] | None) -> Path | None:
    """Checked before downloading, so a bad `dst_path` costs nothing."""
    if dst_path is None:
        return None
    dst = Path(dst_path)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ValueError(f"dst_path {dst} is not an empty directory; pass an empty or new one")
    return dst


def _stored_directory(target: Target, tracking_uri: str | None) -> Path | None:
    """The model's stored directory when storage is a path on this machine, else None
    (remote storage, which MLflow downloads). Where it is found does not matter to what
    is trusted: whatever is copied from it must match the ledger."""
    import mlflow

    if target.version is not None or target.model_id is not None:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        if target.version is not None:
            location = client.get_model_version_download_uri(target.name, target.version)
        else:
            location = client.get_logged_model(target.model_id).artifact_location
    else:
        location = target.uri
    path = local_path(location)
    return path if path is not None and path.is_dir() and not path.is_symlink() else None


def _prune_empty_directories(root: Path) -> None:
    """Remove empty directories a download created: the directory digest does not cover
    them (format v1), so nothing it does not cover reaches the loader."""
    for dirpath, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
        if dirpath != os.fspath(root) and not os.listdir(dirpath):
            os.rmdir(dirpath)


def _private_copy(target: Target, private: Path, tracking_uri: str | None
                  ) -> tuple[Path, list[FileDigest] | None]:
    """The model's files in `private`: from local storage copied and hashed in one read
    (the digests of the copy come back), otherwise downloaded by MLflow (None: hash it)."""
    stored = _stored_directory(target, tracking_uri)
    if stored is not None:
        return private, copy_model_files(stored, private)
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=target.download_uri, dst_path=str(private), tracking_uri=tracking_uri
    ))
    if local.is_dir():
        _prune_empty_directories(local)
    return local, None


def _verify_private(
    model_uri: str, ledger: LedgerArg, mode: str | None, tracking_uri: str | None,
    verifier: VerifierArg = None,
) -> tuple[Verification, Path]:
    """Copy the model into a new 0700 directory and verify that copy; it is removed on
    failure."""
    strict = _mode(mode, tracking_uri)
    view = open_view(ledger, tracking_uri, verifier)
    target = resolve(model_uri)
    private = Path(tempfile.mkdtemp(prefix="flchain-"))
    try:
        local, files = _private_copy(target, private, tracking_uri)
        result = verify_directory(local, target, view, strict=strict, files=files)
    except BaseException:
        shutil.rmtree(private, ignore_errors=True)
        raise
    if result.status != "ok":
        warnings.warn(f"flchain: loading {target}, recorded as {result.status!r} in the "
                      "ledger (permissive mode)", MismatchWarning, stacklevel=3)
    return result, private


def _deliver(result: Verification, private: Path, dst: Path) -> Verification:
    """Move the verified directory to the caller's `dst_path`, after every read of it."""
    dst.mkdir(parents=True, exist_ok=True)
    for child in Path(result.path).iterdir():
        shutil.move(child, dst / child.name)
    shutil.rmtree(private, ignore_errors=True)
    return dataclasses.replace(result, path=os.fspath(dst))


def verify_model(
    model_uri: str,
    *,
    ledger: LedgerArg = None,
    dst_path: str | os.PathLike[str] | None = None,
    mode: str | None = None,
    tracking_uri: str | None = None,
    verifier: VerifierArg = None,
) -> Verification:
    """Download `model_uri` into a private directory and verify that copy; nothing is
    deserialized. With `dst_path` (empty or new) the verified copy is then moved there;
    without, it is removed and `path` is "". Raises TamperedModelError (naming files) or
    UnknownModelError; with a pinned `verifier` (see `open_view`), LedgerUnavailableError
    for a ledger signed by another key."""
    dst = _empty_destination(dst_path)
    result, private = _verify_private(model_uri, ledger, mode, tracking_uri, verifier)
    if dst is None:
        shutil.rmtree(private, ignore_errors=True)
        return dataclasses.replace(result, path="")
    return _deliver(result, private, dst)


def _check_weights(model: Any, result: Verification, strict: bool) -> None:
    """A tag-claimed weights digest is checked once the verified model is in memory."""
    entry: Any = result.entry.entry
    claimed = entry.model
    if not hasattr(model, "state_dict") and hasattr(model, "get_raw_model"):
        try:  # a pyfunc wrapper: its flavor's own model, e.g. the torch module
            model = model.get_raw_model()
        except NotImplementedError:
            pass
    if not claimed or entry.detail.get("model_from") != "tag" or not hasattr(model, "state_dict"):
        return
    from flchain_plugin.digest import model_digest

    actual = model_digest(model.state_dict())
    if actual != claimed:
        msg = (f"{result.target}: its weights digest {actual} differs from the {claimed} "
               f"the ledger links it to (set by the {MODEL_DIGEST_TAG} tag at log time)")
        if strict:
            raise TamperedModelError(msg)
        warnings.warn(f"flchain: {msg}", MismatchWarning, stacklevel=3)


def verified(load_fn: Callable[..., T], *, ledger: LedgerArg = None,
             mode: str | None = None, verifier: VerifierArg = None) -> Callable[..., T]:
    """Wrap a flavor's `load_model(model_uri, ...)` so it loads only a verified copy:
    `verified(mlflow.pyfunc.load_model)("models:/name/3")`."""

    @functools.wraps(load_fn)
    def load(model_uri: str, *args: Any, dst_path: str | None = None, **kwargs: Any) -> T:
        dst = _empty_destination(dst_path)
        result, private = _verify_private(model_uri, ledger, mode, None, verifier)
        try:
            model = load_fn(result.path, *args, **kwargs)
        except BaseException:
            shutil.rmtree(private, ignore_errors=True)
            raise
        _check_weights(model, result, _mode(mode, None))
        if dst is not None:
            _deliver(result, private, dst)
        return model

    return load


def load_model(
    model_uri: str,
    *,
    flavor: str = "pyfunc",
    ledger: LedgerArg = None,
    dst_path: str | None = None,
    mode: str | None = None,
    verifier: VerifierArg = None,
    **kwargs: Any,
) -> Any:
    """`mlflow.<flavor>.load_model` of a copy verified against the ledger first."""
    module = importlib.import_module(f"mlflow.{flavor}")
    return verified(module.load_model, ledger=ledger, mode=mode, verifier=verifier)(
        model_uri, dst_path=dst_path, **kwargs
    )

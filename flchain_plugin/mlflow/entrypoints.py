"""MLflow entry points for the `flchain+<db>` schemes. Standard library only.

MLflow loads entry points while it registers its stores and turns an ImportError into a
mere warning, after which the scheme silently does not exist and the user later sees
"unsupported URI". So this module imports nothing that can fail: the scheme always
registers, and the real store is imported when a store is built. If that import fails the
user gets an error that says the plugin is broken and how to fix it, never a store that
quietly logs without the ledger.
"""

from __future__ import annotations

from typing import Any, NoReturn


def _broken(store_uri: str, exc: BaseException) -> NoReturn:
    message = (
        f"{store_uri}: the flchain MLflow plugin failed to import "
        f"({type(exc).__name__}: {exc}). Nothing was logged or registered. Reinstall it "
        "with `pip install 'flchain-plugin[mlflow]'`; to run without the ledger, drop the "
        "'flchain+' prefix from the URI."
    )
    try:
        from mlflow.exceptions import MlflowException
    except Exception:  # pragma: no cover - MLflow itself is what calls this
        raise RuntimeError(message) from exc
    raise MlflowException(message) from exc


def tracking_store(store_uri: str, artifact_uri: str | None = None) -> Any:
    """`mlflow.tracking_store` builder for `flchain+<db>` URIs."""
    try:
        from flchain_plugin.mlflow.store import build_tracking_store
    except Exception as exc:
        _broken(store_uri, exc)
    return build_tracking_store(store_uri, artifact_uri)


def registry_store(store_uri: str, tracking_uri: str | None = None) -> Any:
    """`mlflow.model_registry_store` builder for `flchain+<db>` URIs."""
    try:
        from flchain_plugin.mlflow.registry import build_registry_store
    except Exception as exc:
        _broken(store_uri, exc)
    return build_registry_store(store_uri, tracking_uri)

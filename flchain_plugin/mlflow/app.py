"""`mlflow server --app-name flchain`: MLflow's server plus read-only ledger routes.

Routes under `/flchain/v1`: `root`, `checkpoint`, `entry/<i>`, `proof/<i>?size=`,
`consistency?first=&second=`, `verify`, `find/<digest>?type=`, and `mlflow?kind=&model_id=
&name=&version=` (indices of MLflow entries). Clients check every entry they use with an
inclusion proof against the head the server states, and, given a checkpoint they trust,
that head's consistency with it (see `view.HttpView`).
Each worker opens the ledger once (a file, or for a `flchain+postgresql` backend its schema
in MLflow's database) and keeps no tree state, so several uvicorn workers, and several
servers on one database, serve one consistent log.
"""

from __future__ import annotations

import base64
import os
import threading
from typing import Any

from flask import Blueprint, Flask, jsonify, request

from flchain_plugin.digest import DigestError, format_digest, parse_digest
from flchain_plugin.ledger import Ledger

from .config import LEDGER_ENV, PREFIX, ConfigError, parse_store_uri
from .view import API_PREFIX, MlflowQuery, scan_mlflow

_BACKEND_ENV = "_MLFLOW_SERVER_FILE_STORE"  # set by `mlflow server --backend-store-uri`


def server_ledger_path() -> str:
    """The ledger of this server: `FLCHAIN_LEDGER`, else the one its flchain+ backend implies."""
    if os.environ.get(LEDGER_ENV):
        return os.environ[LEDGER_ENV]
    backend = os.environ.get(_BACKEND_ENV, "")
    if backend.startswith(PREFIX):
        return parse_store_uri(backend).ledger
    raise ConfigError(
        f"--app-name flchain needs a ledger: start the server with --backend-store-uri "
        f"{PREFIX}<db> or set {LEDGER_ENV} (backend is {backend or 'unset'!r})"
    )


class _Bad(ValueError):
    status = 400


class _Missing(LookupError):
    status = 404


def _int_arg(name: str, default: int | None = None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise _Bad(f"{name}={raw!r} is not an integer") from None


class _LedgerRoutes:
    """The read-only routes over one ledger file, each a method; the ledger is opened on
    first use and never created (read-only routes must not make an empty ledger)."""

    def __init__(self, path: str):
        self.path = path
        self._opened: Ledger | None = None
        self._lock = threading.Lock()

    def ledger(self) -> Ledger:
        with self._lock:
            if self._opened is None:
                self._opened = Ledger(self.path, create=False)
            return self._opened

    def root(self) -> Any:
        return jsonify(self.ledger().info())

    def checkpoint(self) -> Any:
        led = self.ledger()
        note = led.latest_checkpoint()
        if note is not None:
            return jsonify({"signed": True, "note": note})
        return jsonify({"signed": False, "note": led.checkpoint().body()})

    def entry(self, index: int) -> Any:
        try:
            got = self.ledger().get(index)
        except IndexError as e:
            raise _Missing(str(e)) from None
        return jsonify({"index": index, "data": base64.b64encode(got.data).decode("ascii"),
                        "entry": got.entry.to_json()})

    def proof(self, index: int) -> Any:
        size = _int_arg("size")  # outside the try: its _Bad is a ValueError too
        try:
            p = self.ledger().inclusion_proof(index, size)
        except (IndexError, ValueError) as e:
            raise _Missing(str(e)) from None
        return jsonify({"index": p.index, "size": p.size, "leaf_hash": p.leaf_hash.hex(),
                        "hashes": [h.hex() for h in p.hashes], "root": format_digest(p.root)})

    def consistency(self) -> Any:
        first, second = _int_arg("first"), _int_arg("second")
        if first is None:
            raise _Bad("first= is required")
        try:
            p = self.ledger().consistency_proof(first, second)
        except ValueError as e:
            raise _Missing(str(e)) from None
        return jsonify({"first": p.size1, "second": p.size2, "hashes": [h.hex() for h in p.hashes],
                        "root1": format_digest(p.root1), "root2": format_digest(p.root2)})

    def verify(self) -> Any:
        report = self.ledger().verify()
        return jsonify({"ok": report.ok, "size": report.size, "root": format_digest(report.root),
                        "problem": str(report.problem) if report.problem else None,
                        "head_signed": report.head_signed, "warnings": list(report.warnings)})

    def find(self, digest: str) -> Any:
        try:
            parse_digest(digest)
        except DigestError as e:
            raise _Bad(str(e)) from None
        found = self.ledger().find(digest, type=request.args.get("type") or None)
        return jsonify({"indices": [e.index for e in found]})

    def mlflow_entries(self) -> Any:
        led = self.ledger()
        size = _int_arg("size", led.size)
        a = request.args
        query = MlflowQuery(kind=a.get("kind"), model_id=a.get("model_id"),
                            name=a.get("name"), version=a.get("version"))
        return jsonify({"indices": [e.index for e in scan_mlflow(led, query, 0, size)]})


def _error(e: Any) -> Any:
    return jsonify({"error": str(e)}), e.status


def ledger_blueprint(path: str) -> Blueprint:
    """The read-only routes over the ledger at `path` (opened on first use)."""
    routes = _LedgerRoutes(path)
    bp = Blueprint("flchain", __name__, url_prefix=API_PREFIX)
    bp.register_error_handler(_Bad, _error)
    bp.register_error_handler(_Missing, _error)
    for rule, view in [("/root", routes.root), ("/checkpoint", routes.checkpoint),
                       ("/entry/<int:index>", routes.entry), ("/proof/<int:index>", routes.proof),
                       ("/consistency", routes.consistency), ("/verify", routes.verify),
                       ("/find/<digest>", routes.find), ("/mlflow", routes.mlflow_entries)]:
        bp.add_url_rule(rule, view.__name__, view, methods=["GET"])
    return bp


def add_routes(app: Flask, path: str | None = None) -> Flask:
    app.register_blueprint(ledger_blueprint(path or server_ledger_path()))
    return app


def create_app() -> Any:
    """The `mlflow.app` factory: MLflow's Flask app with the ledger routes, wrapped in
    MLflow's FastAPI app when served by uvicorn (the 3.x default)."""
    from mlflow.environment_variables import _MLFLOW_SGI_NAME
    from mlflow.server import app

    add_routes(app)
    if _MLFLOW_SGI_NAME.get() == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(app)
    return app

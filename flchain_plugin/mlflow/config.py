"""How the MLflow plugin finds its ledger and mode from the backend-store URI.

The plugin flag is the URI prefix: `flchain+sqlite:///mlflow.db` is MLflow's own
`sqlite:///mlflow.db` with every logged model and model version committed to a ledger.
The ledger defaults to a file beside the SQLite database (`mlflow.db.flchain.db`). On
PostgreSQL it defaults to MLflow's own database, in a schema of its own (`flchain`), so
every server and worker on that database shares one ledger with nothing more to
configure, and the ledger's tables never mix with MLflow's. Other databases name it with
`FLCHAIN_LEDGER` or `?flchain_ledger=` (a file path or a `postgresql://` URL). The URI's
query wins over the environment so one process can hold stores in different modes.
Stdlib only: the entry points import this before MLflow has finished registering its
stores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from flchain_plugin.commit import LEDGER_ENV
from flchain_plugin.store.url import is_postgres_url, redact

PREFIX = "flchain+"
MODE_ENV = "FLCHAIN_MLFLOW_MODE"
MODES = ("strict", "permissive")
_QUERY_LEDGER = "flchain_ledger"
_QUERY_MODE = "flchain_mode"
LEDGER_SCHEMA = "flchain"
"""The schema of MLflow's PostgreSQL database that holds the ledger by default."""


class ConfigError(ValueError):
    """The flchain store URI or its settings are unusable; the message says how to fix it."""


@dataclass(frozen=True)
class PluginConfig:
    """A parsed `flchain+<db>` URI: the database MLflow uses, the ledger, the mode."""

    uri: str
    inner_uri: str
    ledger: str
    mode: str = "strict"
    ledger_schema: str | None = None
    """The schema the default PostgreSQL ledger lives in, created on first open; None when
    the ledger was named (a named ledger is used as it is)."""

    @property
    def strict(self) -> bool:
        return self.mode == "strict"

    @property
    def where(self) -> str:
        """The ledger as messages name it: a server ledger's URL without its password
        (a server's errors reach every HTTP client)."""
        return redact(self.ledger)


def parse_mode(value: str, source: str) -> str:
    """`strict` or `permissive`, case and spaces aside; the error names `source`."""
    mode = value.strip().lower()
    if mode not in MODES:
        raise ConfigError(f"{source}={value!r}: want one of {', '.join(MODES)}")
    return mode


def _sqlite_path(inner: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for in-memory databases)."""
    rest = inner.split("?", 1)[0]
    path = rest[len("sqlite://") :] if rest.startswith("sqlite://") else ""
    if not path.startswith("/") or path in ("/", "/:memory:"):
        return None  # sqlite://host/... or in-memory: no file to sit beside
    return Path(unquote(path[1:]))


def parse_store_uri(uri: str, env: dict[str, str] | None = None) -> PluginConfig:
    """Split `flchain+<db-uri>[?flchain_ledger=...&flchain_mode=...]` into its settings."""
    environ = os.environ if env is None else env
    if not uri.startswith(PREFIX):
        raise ConfigError(f"{uri!r} is not a flchain store URI: want '{PREFIX}<database URI>'")
    rest = uri[len(PREFIX) :]
    parts = urlsplit(rest)
    if not parts.scheme:
        raise ConfigError(f"{uri!r}: no database after '{PREFIX}', e.g. {PREFIX}sqlite:///mlflow.db")
    if parts.scheme.startswith("flchain"):
        raise ConfigError(f"{uri!r}: '{PREFIX}' given twice")
    base, _, qs = rest.partition("?")
    query = parse_qsl(qs, keep_blank_values=True)
    ours = {k: v for k, v in query if k in (_QUERY_LEDGER, _QUERY_MODE)}
    kept = urlencode([(k, v) for k, v in query if k not in ours])
    inner = base + ("?" + kept if kept else "")  # urlunsplit would eat sqlite:////abs's slash

    if _QUERY_MODE in ours:
        mode = parse_mode(ours[_QUERY_MODE], _QUERY_MODE)
    elif environ.get(MODE_ENV):
        mode = parse_mode(environ[MODE_ENV], MODE_ENV)
    else:
        mode = "strict"

    ledger = ours.get(_QUERY_LEDGER) or environ.get(LEDGER_ENV) or ""
    if ledger:
        return PluginConfig(uri=uri, inner_uri=inner, ledger=_named_ledger(ledger), mode=mode)
    dialect = parts.scheme.split("+")[0]
    if dialect in ("postgresql", "postgres"):
        return PluginConfig(uri=uri, inner_uri=inner, ledger=postgres_ledger_url(inner),
                            mode=mode, ledger_schema=LEDGER_SCHEMA)
    db = _sqlite_path(inner) if dialect == "sqlite" else None
    if db is None:
        raise ConfigError(
            f"{uri!r}: cannot place the ledger beside this database; set {LEDGER_ENV}="
            f"/path/to/ledger.db or add ?{_QUERY_LEDGER}=/path/to/ledger.db"
        )
    return PluginConfig(uri=uri, inner_uri=inner, mode=mode,
                        ledger=str(db.with_name(db.name + ".flchain.db").absolute()))


def _named_ledger(ledger: str) -> str:
    """A ledger named by the user: a `postgresql://` URL as it is, else an absolute path."""
    if is_postgres_url(ledger):
        return ledger
    if "://" in ledger:
        raise ConfigError(f"ledger {ledger!r}: a store writes to a local ledger file or a "
                          "postgresql:// ledger; give a path or a postgresql:// URL")
    return str(Path(ledger).expanduser().absolute())


def postgres_ledger_url(inner: str) -> str:
    """The ledger in MLflow's own PostgreSQL database, schema `flchain`: the libpq URL of
    SQLAlchemy's `postgresql[+driver]://...` (same host, user, database and connection
    parameters), with the schema as the connection's search path."""
    parts = urlsplit(inner)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = " ".join([v for k, v in query if k == "options"] + [f"-csearch_path={LEDGER_SCHEMA}"])
    kept = [(k, v) for k, v in query if k != "options"] + [("options", options)]
    return urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(kept, quote_via=quote),
                       ""))

"""`flchain mlflow ...`: check MLflow models against the ledger from the command line.

`flchain mlflow verify models:/name/3` downloads the model, verifies the copy exactly as
`load_model` does (nothing is deserialized) and prints the lineage: the version, its
logged model, the run's params digest and datasets, parent models, and the Flower or
Lightning entries of the same weights down to the client updates. Exit status 1 when the
model does not verify, 2 for bad input.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import click
from rich import box
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..mlflow.commitment import TamperedModelError, UnknownModelError
from ..mlflow.config import ConfigError
from ..mlflow.verify import Verification
from ..mlflow.view import LedgerUnavailableError
from ..notes import Verifier
from ..pinning import VERIFIER_ENV
from .errors import Group, InputError, VerificationFailed
from .root import Output, Settings, common_options, key_verifier_option, kv_table, short_digest


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's log lines, progress bars and warnings off while the command runs: its stderr
    is the one line of the verdict (the JSON document or the table says the rest)."""
    from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

    bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    logging_on = MLFLOW_LOGGING_STREAM.enabled
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    MLFLOW_LOGGING_STREAM.enabled = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        MLFLOW_LOGGING_STREAM.enabled = logging_on
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar


@click.group("mlflow", cls=Group)
def mlflow() -> None:
    """Check MLflow models and versions against the ledger."""


def _lineage_table(v: Verification) -> Table:
    t = Table(box=box.SIMPLE_HEAD, title="lineage", title_justify="left")
    for col in ("relation", "entry", "what", "digests"):
        t.add_column(col, overflow="fold")
    for s in v.lineage:
        e = s.entry
        what = " ".join(f"{k}={e[k]}" for k in ("kind", "name", "version", "model_id", "run",
                                                 "run_id", "round", "node", "epoch", "step",
                                                 "status") if k in e)
        digests = "\n".join(f"{k} {short_digest(e[k])}" for k in
                            ("files", "model", "file", "update", "parent", "params") if k in e)
        relation = (Text(s.relation) if s.verified else
                    Text(f"{s.relation}\nunverified: {s.note}", style="yellow"))
        t.add_row(relation, f"#{s.index} {e.get('type', '')}", what, digests)
    return t


def _datasets_table(v: Verification) -> Table | None:
    logged = next((s for s in v.lineage if s.entry.get("kind") == "logged_model"), None)
    datasets = (logged.entry.get("datasets") or []) if logged else []
    if not datasets:
        return None
    t = Table(box=box.SIMPLE_HEAD, title="datasets of the run", title_justify="left")
    for col in ("name", "context", "mlflow digest", "sha256"):
        t.add_column(col, overflow="fold")
    for d in datasets:
        sha = d.get("sha256")
        t.add_row(d.get("name", ""), d.get("context") or "", d.get("mlflow_digest", ""),
                  short_digest(sha) if sha else
                  Text(d.get("unhashed", "not hashed"), style="yellow"))
    return t


@mlflow.command("verify")
@click.argument("model_uri")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI",
              help="MLflow tracking URI (flchain+<db> or http(s)://).")
@click.option("--permissive", is_flag=True,
              help="Accept a version recorded as a mismatch (warn instead of fail).")
@click.option("--keep", "dst_path", default=None, type=click.Path(file_okay=False),
              help="Keep a copy of the verified model in this empty directory.")
@key_verifier_option("Pin the log's verifier key: only what a checkpoint signed with it covers "
                     f"verifies (default: ${VERIFIER_ENV}).")
@common_options
def verify(settings: Settings, out: Output, model_uri: str, tracking_uri: str | None,
           permissive: bool, dst_path: str | None, key_verifier: Verifier | None) -> None:
    """Download MODEL_URI, verify the copy against the ledger and print its lineage.

    The ledger is --ledger (a file or a server URL) if given, else the one the tracking
    URI names, as for `load_model`.
    """
    import mlflow as _mlflow

    from ..mlflow.load import verify_model

    if tracking_uri:
        _mlflow.set_tracking_uri(tracking_uri)
    chosen = settings.chosen
    status = (contextlib.nullcontext() if out.json
              else out.err.status(f"downloading and hashing {model_uri} …"))
    try:
        with status, _quiet_mlflow():
            v = verify_model(model_uri, ledger=chosen, dst_path=dst_path,
                             mode="permissive" if permissive else None, verifier=key_verifier)
    except TamperedModelError as e:
        doc = {"ok": False, "uri": model_uri, "error": str(e),
               "changes": [c.__dict__ for c in e.changes]}
        raise VerificationFailed(str(e), doc) from e
    except (UnknownModelError, LedgerUnavailableError) as e:
        raise VerificationFailed(str(e), {"ok": False, "uri": model_uri, "error": str(e),
                                          "changes": []}) from e
    except (ConfigError, ValueError) as e:
        raise InputError(str(e)) from e
    except _mlflow.exceptions.MlflowException as e:
        raise InputError(f"{model_uri}: {e.message}") from e

    def human() -> None:
        style = "green" if v.status == "ok" else "yellow"
        rows = [
            ("model", str(v.target)),
            ("verdict", Text(f"verified ({v.status})", style=style)),
            ("files", v.files),
            ("entry", f"#{v.entry.index}"),
            ("ledger", v.ledger),
            ("tree", f"size {v.size}, root {v.root}"),
            ("copy", v.path or "removed (--keep DIR keeps it)"),
        ]
        if v.unverified_links:
            rows.insert(2, ("weights link", Text(
                f"UNVERIFIED: {v.unverified_links[0].note} "
                f"({len(v.unverified_links)} lineage entries)", style="yellow")))
        out.console.print(Panel(kv_table(rows), title="flchain mlflow verify", expand=False))
        out.console.print(_lineage_table(v))
        if (t := _datasets_table(v)) is not None:
            out.console.print(t)

    doc = v.to_json()
    out.emit(doc, human)

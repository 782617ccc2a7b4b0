"""The plugin behind a real `mlflow server` on loopback, used by plain `http://` clients.

The server runs `--backend-store-uri flchain+sqlite:///… --artifacts-destination <dir>
--app-name flchain --workers 2` (uvicorn); clients keep a plain http:// tracking URI and
verify over the ledger routes, checking an inclusion proof for every entry they use.
Run this suite on its own with `integrations/mlflow_server/run.sh`.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

mlflow = pytest.importorskip("mlflow")

from mlflow.exceptions import MlflowException  # noqa: E402

from flchain_plugin import merkle  # noqa: E402
from flchain_plugin.checkpoint import verify_checkpoint  # noqa: E402
from flchain_plugin.commit import key_path  # noqa: E402
from flchain_plugin.digest import format_digest, parse_digest  # noqa: E402
from flchain_plugin.ledger import Ledger  # noqa: E402
from flchain_plugin.mlflow import TamperedModelError, load_model, verify_model  # noqa: E402
from flchain_plugin.mlflow.view import HttpView, LedgerUnavailableError  # noqa: E402
from flchain_plugin.notes import generate_key, load_private_key  # noqa: E402

pytestmark = [pytest.mark.mlflow, pytest.mark.timeout(240),
              pytest.mark.xdist_group("mlflow_server")]

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return list(model_input)


@dataclass(frozen=True)
class Server:
    url: str
    dir: Path
    ledger: Path
    artifacts: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = d / "server.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLCHAIN_", "MLFLOW_TRACKING_URI"))}
    cmd = [MLFLOW, "server", "--backend-store-uri", f"flchain+sqlite:///{d}/mlflow.db",
           "--artifacts-destination", str(d / "artifacts"), "--app-name", "flchain",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=d, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if _get(url + "/flchain/v1/root")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        mp = pytest.MonkeyPatch()
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mp.delenv("FLCHAIN_LEDGER", raising=False)
        mp.delenv("FLCHAIN_MLFLOW_MODE", raising=False)
        mlflow.set_tracking_uri(url)
        # An experiment of this server's own: an earlier test module in this process may
        # have left MLflow pointing at an experiment id this server does not have.
        mp.setenv("MLFLOW_EXPERIMENT_ID", mlflow.create_experiment("flchain-server"))
        mlflow.set_experiment(experiment_id=os.environ["MLFLOW_EXPERIMENT_ID"])
        try:
            yield Server(url, d, d / "mlflow.db.flchain.db", d / "artifacts", log)
        finally:
            mlflow.set_tracking_uri(None)
            mp.undo()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def log_echo(data: Path | None = None) -> tuple[str, str]:
    with mlflow.start_run() as run:
        mlflow.log_param("kind", "echo")
        mlflow.log_metric("score", 0.75)
        if data is not None:
            import pandas as pd

            ds = mlflow.data.from_pandas(pd.read_csv(data), source=str(data), name="d")
            mlflow.log_input(ds, context="training")
        info = mlflow.pyfunc.log_model(name="echo", python_model=Echo(),
                                       pip_requirements=["numpy"])
    return info.model_id, run.info.run_id


def mlflow_entries(ledger: Path) -> list[Any]:
    with Ledger(ledger, create=False) as led:
        return [e.entry for e in led.iter_entries(type="mlflow")]


def test_http_client_logs_registers_and_loads_verified(server: Server, tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    model_id, run_id = log_echo(data)
    lm = mlflow.MlflowClient().get_logged_model(model_id)
    assert lm.artifact_location.startswith("mlflow-artifacts:")
    assert lm.tags["flchain.status"] == "ok"
    mv = mlflow.register_model(f"models:/{model_id}", "srv-echo")
    assert mv.tags["flchain.status"] == "ok" and mv.tags["flchain.files"] == lm.tags[
        "flchain.files"]

    model = load_model(f"models:/srv-echo/{mv.version}")  # ledger found from the http URI
    assert model.predict([1, 2]) == [1, 2]

    entries = {(e.kind, e.model_id): e for e in mlflow_entries(server.ledger)}
    logged = entries[("logged_model", model_id)]
    assert logged.run_id == run_id and logged.files == lm.tags["flchain.files"]
    assert logged.datasets[0]["sha256"] is None  # a client path: the server does not read it
    assert "server" in logged.datasets[0]["unhashed"]
    assert entries[("model_version", model_id)].version == str(mv.version)

    check = verify_model(f"models:/srv-echo/{mv.version}")
    assert check.ledger == server.url + "/flchain/v1"
    assert [s.relation for s in check.lineage] == ["self", "logged model"]
    with Ledger(server.ledger, create=False) as led:
        assert led.verify().ok
        assert check.root == format_digest(led.root_at(check.size))


def test_ledger_routes(server: Server) -> None:
    log_echo()
    api = server.url + "/flchain/v1"
    status, root = _get(api + "/root")
    assert status == 200 and root["size"] >= 1
    size, root_hash = root["size"], parse_digest(root["root"])

    status, entry = _get(f"{api}/entry/0")
    data = base64.b64decode(entry["data"])
    assert status == 200 and entry["entry"]["type"] == "mlflow"
    status, proof = _get(f"{api}/proof/0?size={size}")
    merkle.verify_inclusion(0, size, merkle.leaf_hash(data),
                            [bytes.fromhex(h) for h in proof["hashes"]], root_hash)

    # The server signs a checkpoint per batch with the ledger's key file (issue 13, B.2).
    status, cp = _get(api + "/checkpoint")
    log_key = load_private_key(key_path(server.ledger)).verifier
    signed = verify_checkpoint(cp["note"], log_key)
    assert status == 200 and cp["signed"] is True
    assert signed.origin == root["origin"] and 1 <= signed.size <= size + 2
    # A client pinning that key holds exactly what the signed checkpoint covers; pinning
    # any other key refuses the server's ledger.
    pinned = HttpView(server.url, verifier=log_key)
    assert pinned.size >= signed.size and pinned.get(0).index == 0
    with pytest.raises(LedgerUnavailableError, match="not signed by the pinned log key"):
        HttpView(server.url, verifier=generate_key(root["origin"]).verifier)

    status, cons = _get(f"{api}/consistency?first=1&second={size}")
    with Ledger(server.ledger, create=False) as led:
        first_root = led.root_at(1)
        merkle.verify_consistency(1, size, [bytes.fromhex(h) for h in cons["hashes"]],
                                  first_root, root_hash)
        # An auditor's extra signature is stored beside the log's own; verify checks stored
        # checkpoints with the log's key, so the auditor signs with that key's holder here.
        signer = load_private_key(key_path(server.ledger))
        note = led.sign_checkpoint(signer)

    status, cp = _get(api + "/checkpoint")
    assert status == 200 and cp["signed"] is True and cp["note"] == note
    got = verify_checkpoint(cp["note"], signer.verifier)
    assert got.origin == root["origin"] and got.size >= size

    status, rep = _get(api + "/verify")
    assert status == 200 and rep["ok"] is True and rep["problem"] is None
    assert rep["head_signed"] is True and rep["warnings"] == []

    files = entry["entry"]["files"]
    status, found = _get(f"{api}/find/{files}?type=mlflow")
    assert status == 200 and 0 in found["indices"]
    status, sel = _get(f"{api}/mlflow?kind=logged_model&model_id={entry['entry']['model_id']}")
    assert sel["indices"] == [0]

    assert _get(f"{api}/entry/{10**6}")[0] == 404
    assert _get(f"{api}/find/sha256:nothex")[0] == 400
    assert _get(f"{api}/proof/0?size=abc")[0] == 400


def _client_script(url: str, name: str, count: int) -> str:
    return textwrap.dedent(f"""
        import mlflow
        mlflow.set_tracking_uri({url!r})
        class Echo(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input):
                return list(model_input)
        for i in range({count}):
            with mlflow.start_run():
                mlflow.log_metric("i", i)
                info = mlflow.pyfunc.log_model(name="echo", python_model=Echo(),
                                               pip_requirements=["numpy"])
            mlflow.register_model(info.model_uri, {name!r})
        print("done")
    """)


def test_two_clients_logging_concurrently_make_one_consistent_tree(server: Server) -> None:
    before = len(mlflow_entries(server.ledger))
    with Ledger(server.ledger, create=False) as led:
        start = led.size
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    procs = [subprocess.Popen([sys.executable, "-c", _client_script(server.url, f"conc-{c}", 3)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for c in "AB"]
    for p in procs:
        out, err = p.communicate(timeout=200)
        assert p.returncode == 0 and "done" in out, err[-3000:]

    entries = mlflow_entries(server.ledger)
    new = entries[before:]
    assert sorted((e.kind, e.name) for e in new if e.kind == "model_version") == \
        [("model_version", f"conc-{c}") for c in "AB" for _ in range(3)]
    for c in "AB":
        versions = sorted(int(e.version) for e in new if e.name == f"conc-{c}")
        assert versions == [1, 2, 3]
    assert sum(e.kind == "logged_model" for e in new) == 6

    assert server.log.read_text().count("Started server process") >= 2  # two workers serve
    with Ledger(server.ledger, create=False) as led:
        assert led.verify().ok
        heads = [h for h in led.heads() if h.size > start]
        assert [h.size for h in heads] == list(range(start + 1, led.size + 1))
        final = led.head()
        for h in heads:  # every head the workers wrote is a prefix of the final tree
            p = led.consistency_proof(h.size, final.size)
            merkle.verify_consistency(h.size, final.size, p.hashes, h.root, final.root)
    with pytest.raises(MlflowException):  # and the registry kept names apart
        mlflow.MlflowClient().get_model_version("conc-A", "4")


def test_tampered_server_artifacts_are_refused_over_http(server: Server) -> None:
    model_id, _ = log_echo()
    mv = mlflow.register_model(f"models:/{model_id}", "srv-tamper")
    lm = mlflow.MlflowClient().get_logged_model(model_id)
    stored = server.artifacts / lm.artifact_location.removeprefix("mlflow-artifacts:/")
    pkl = stored / "python_model.pkl"
    raw = bytearray(pkl.read_bytes())
    raw[10] ^= 0xFF
    pkl.write_bytes(bytes(raw))

    with pytest.raises(TamperedModelError) as bad:
        load_model(f"models:/srv-tamper/{mv.version}")
    assert [(c.path, c.change) for c in bad.value.changes] == [("python_model.pkl", "changed")]
    with pytest.raises(MlflowException, match=r"flchain refused.*python_model\.pkl \(changed\)"):
        mlflow.register_model(f"models:/{model_id}", "srv-tamper")


def test_http_view_refuses_an_entry_the_server_altered(server: Server) -> None:
    """The client checks each entry's inclusion proof, so a ledger edited in place on the
    server is caught, not believed (restored afterwards)."""
    log_echo()  # so the ledger has an entry whatever ran before
    conn = sqlite3.connect(server.ledger)
    try:
        (data,) = conn.execute("SELECT data FROM entries WHERE idx = 0").fetchone()
        forged = bytes(data).replace(b'"status":"ok"', b'"status":"no"')
        assert forged != bytes(data)
        with conn:
            conn.execute("UPDATE entries SET data = ? WHERE idx = 0", (forged,))
        view = HttpView(server.url)
        with pytest.raises(LedgerUnavailableError, match="not in the tree"):
            view.get(0)
    finally:
        with conn:
            conn.execute("UPDATE entries SET data = ? WHERE idx = 0", (data,))
        conn.close()
    assert HttpView(server.url).get(0).entry.status == "ok"


def test_http_view_holds_the_server_to_a_trusted_checkpoint(server: Server) -> None:
    """A client holding a checkpoint signed by a key the server does not have refuses a
    served tree that does not extend it."""
    from flchain_plugin.checkpoint import Checkpoint, sign_checkpoint
    from flchain_plugin.notes import generate_key

    log_echo()
    with Ledger(server.ledger, create=False) as led:
        key = generate_key(led.origin)
        good = sign_checkpoint(led.checkpoint(), key)
        forged = sign_checkpoint(Checkpoint(led.origin, led.size, b"\x07" * 32), key)
    view = HttpView(server.url, trusted=(good, key.verifier_key))
    assert view.get(0).index == 0
    with pytest.raises(LedgerUnavailableError, match="does not extend the trusted checkpoint"):
        HttpView(server.url, trusted=(forged, key.verifier_key))
    with pytest.raises(LedgerUnavailableError, match="trusted checkpoint does not verify"):
        HttpView(server.url, trusted=(good, generate_key(key.name).verifier_key))

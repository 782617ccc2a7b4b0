"""Two `mlflow server`s (two uvicorn workers each) on ONE PostgreSQL database share one ledger.

Both servers run `--backend-store-uri flchain+postgresql+psycopg://…/<db> --app-name flchain`
with nothing else configured but the log's key file ($FLCHAIN_LOG_KEY, the same file for
both, as `commit.log_signer` wants for a server ledger): the ledger lives in MLflow's own
database, schema `flchain`. Plain `http://` clients log and register concurrently through
both servers; the ledger then verifies under the pinned key, every model version MLflow
holds is committed exactly once, and a version registered through one server loads verified
through the other. The one-commitment-per-identity rule is also raced directly by writer
processes on a PostgreSQL ledger. Runner: `integrations/mlflow_server/run.sh --postgres`.
"""

from __future__ import annotations

import json
import os
import signal
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
psycopg = pytest.importorskip("psycopg")

from flchain_plugin import entries as E  # noqa: E402
from flchain_plugin import merkle  # noqa: E402
from flchain_plugin.commit import LOG_KEY_ENV  # noqa: E402
from flchain_plugin.ledger import Ledger  # noqa: E402
from flchain_plugin.mlflow import load_model, verify_model  # noqa: E402
from flchain_plugin.mlflow.config import parse_store_uri  # noqa: E402
from flchain_plugin.mlflow.view import HttpView, LedgerUnavailableError  # noqa: E402
from flchain_plugin.notes import Verifier, load_private_key  # noqa: E402

pytestmark = [pytest.mark.mlflow, pytest.mark.timeout(600),
              pytest.mark.xdist_group("mlflow_server")]

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
CLIENTS_PER_SERVER = 2
MODELS_PER_CLIENT = 2


@dataclass(frozen=True)
class Cluster:
    urls: tuple[str, str]
    backend: str
    ledger: str
    key: Path
    logs: tuple[Path, Path]
    artifacts: Path

    @property
    def verifier(self) -> Verifier:
        return load_private_key(self.key).verifier


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/flchain/v1/root", timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def _start(d: Path, name: str, backend: str, env: dict[str, str]
           ) -> tuple[subprocess.Popen[bytes], str, Path]:
    port, log = _free_port(), d / f"{name}.log"
    cmd = [MLFLOW, "server", "--backend-store-uri", backend, "--artifacts-destination",
           str(d / "artifacts"), "--app-name", "flchain", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "2"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=d, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc, f"http://127.0.0.1:{port}", log


def _wait(proc: subprocess.Popen[bytes], log: Path, done: Any, what: str) -> None:
    deadline = time.monotonic() + 240  # two servers of two workers on a busy 2-core machine
    while not done():
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"mlflow server: no {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn workers
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def cluster(postgres_server: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    from postgres_server import drop_database, new_database

    d = tmp_path_factory.mktemp("mlflow-pg")
    db = new_database(postgres_server)
    backend = "flchain+" + db.replace("postgresql://", "postgresql+psycopg://", 1)
    key = d / "log.key"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLCHAIN_", "MLFLOW_TRACKING_URI"))}
    env[LOG_KEY_ENV] = str(key)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # The first server creates MLflow's tables; the second starts once they exist
        # (MLflow's own migrations are not safe to run twice at once).
        first, url_a, log_a = _start(d, "server-a", backend, env)
        procs.append(first)
        _wait(first, log_a, lambda: "Uvicorn running" in log_a.read_text(), "tables")
        second, url_b, log_b = _start(d, "server-b", backend, env)
        procs.append(second)
        _wait(first, log_a, lambda: _ready(url_a), "ledger routes")
        _wait(second, log_b, lambda: _ready(url_b), "ledger routes")
        mp = pytest.MonkeyPatch()
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        for k in [k for k in os.environ if k.startswith("FLCHAIN_")]:
            mp.delenv(k)
        mlflow.set_tracking_uri(url_a)
        mp.setenv("MLFLOW_EXPERIMENT_ID", mlflow.create_experiment("flchain-postgres"))
        try:
            yield Cluster((url_a, url_b), backend, parse_store_uri(backend, env={}).ledger,
                          key, (log_a, log_b), d / "artifacts")
        finally:
            mlflow.set_tracking_uri(None)
            mp.undo()
    finally:
        for p in procs:
            _stop(p)
        drop_database(db, postgres_server)


def _client_script(url: str, name: str, count: int, experiment: str) -> str:
    return textwrap.dedent(f"""
        import json, mlflow
        mlflow.set_tracking_uri({url!r})
        mlflow.set_experiment(experiment_id={experiment!r})
        class Echo(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input):
                return list(model_input)
        done = []
        for i in range({count}):
            with mlflow.start_run():
                mlflow.log_metric("i", i)
                info = mlflow.pyfunc.log_model(name="echo", python_model=Echo(),
                                               pip_requirements=["numpy"])
            mv = mlflow.register_model(info.model_uri, {name!r})
            done.append([info.model_id, mv.version])
        print(json.dumps(done))
    """)


@pytest.fixture(scope="module")
def registered(cluster: Cluster) -> list[tuple[str, str, int, str]]:
    """Clients on both servers logging and registering at once, all under one name and
    each also under a name of its own: (server url, model id, version, name) per version."""
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    jobs = []
    for url in cluster.urls:
        for _ in range(CLIENTS_PER_SERVER):
            script = _client_script(url, "pg-shared", MODELS_PER_CLIENT,
                                    os.environ["MLFLOW_EXPERIMENT_ID"])
            jobs.append((url, subprocess.Popen([sys.executable, "-c", script], env=env,
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                               text=True)))
    out = []
    for url, p in jobs:
        stdout, stderr = p.communicate(timeout=400)
        assert p.returncode == 0, stderr[-3000:]
        out += [(url, mid, int(v), "pg-shared") for mid, v in json.loads(stdout.splitlines()[-1])]
    return out


def _mlflow_entries(cluster: Cluster) -> list[Any]:
    with Ledger(cluster.ledger, create=False) as led:
        return [e.entry for e in led.iter_entries(type="mlflow")]


def test_concurrent_clients_on_two_servers_commit_every_version_once(
        cluster: Cluster, registered: list[tuple[str, str, int, str]]) -> None:
    total = 2 * CLIENTS_PER_SERVER * MODELS_PER_CLIENT
    assert sorted(v for *_, v, _ in registered) == list(range(1, total + 1))
    served = {v.version for v in mlflow.MlflowClient().search_model_versions("name='pg-shared'")}
    assert served == {str(v) for v in range(1, total + 1)}  # MLflow holds these, no others

    entries = _mlflow_entries(cluster)
    versions = [(e.name, e.version) for e in entries if e.kind == "model_version"]
    assert sorted(versions, key=lambda nv: int(nv[1])) == \
        [("pg-shared", str(v)) for v in range(1, total + 1)]  # each exactly once
    logged = [e.model_id for e in entries if e.kind == "logged_model"]
    assert sorted(logged) == sorted(mid for _, mid, _, _ in registered)
    by_version = {e.version: e for e in entries if e.kind == "model_version"}
    for _, mid, v, _ in registered:
        assert by_version[str(v)].model_id == mid and by_version[str(v)].status == "ok"

    for log in cluster.logs:  # two uvicorn workers served on each server
        assert log.read_text().count("Started server process") >= 2


def test_one_consistent_signed_tree_in_mlflows_database(
        cluster: Cluster, registered: list[tuple[str, str, int, str]]) -> None:
    with Ledger(cluster.ledger, create=False) as led:
        report = led.verify(verifier=cluster.verifier)
        assert report.ok and report.head_signed, report.problem
        heads = led.heads()
        assert [h.size for h in heads] == list(range(1, led.size + 1))  # one head per batch
        final = led.head()
        for h in heads:  # every head either server wrote is a prefix of the final tree
            p = led.consistency_proof(h.size, final.size)
            merkle.verify_consistency(h.size, final.size, p.hashes, h.root, final.root)
    # Both servers answer with that tree, signed by the one key both were given.
    for url in cluster.urls:
        view = HttpView(url, verifier=cluster.verifier)
        assert view.size == final.size
    # The ledger's tables sit in their own schema of MLflow's database, beside MLflow's.
    with psycopg.connect(cluster.ledger.split("?")[0]) as conn:
        tables = set(conn.execute("SELECT schemaname, tablename FROM pg_tables "
                                  "WHERE tablename IN ('entries', 'heads', 'model_versions')"))
    assert tables == {("flchain", "entries"), ("flchain", "heads"), ("public", "model_versions")}


def test_a_version_loads_verified_through_either_server(
        cluster: Cluster, registered: list[tuple[str, str, int, str]]) -> None:
    key = cluster.verifier
    for _url, _, version, name in registered[:: 2 * MODELS_PER_CLIENT]:
        for url in cluster.urls:  # through the server it was registered on, and the other
            mlflow.set_tracking_uri(url)
            model = load_model(f"models:/{name}/{version}", verifier=key)
            assert model.predict([3, 4]) == [3, 4]
            check = verify_model(f"models:/{name}/{version}", tracking_uri=url, verifier=key)
            assert check.ledger == url + "/flchain/v1"
            assert [s.relation for s in check.lineage] == ["self", "logged model"]
    mlflow.set_tracking_uri(cluster.urls[0])


def test_an_entry_altered_in_the_database_is_refused_by_clients(
        cluster: Cluster, registered: list[tuple[str, str, int, str]]) -> None:
    """Whoever can write MLflow's database can edit the ledger's rows; the clients' proof
    check against the signed head catches it (row restored afterwards)."""
    conn = psycopg.connect(cluster.ledger.split("?")[0], autocommit=True)
    try:
        (data,) = conn.execute("SELECT data FROM flchain.entries WHERE idx = 0").fetchone()
        forged = bytes(data).replace(b'"status":"ok"', b'"status":"no"')
        assert forged != bytes(data)
        conn.execute("UPDATE flchain.entries SET data = %s WHERE idx = 0", (forged,))
        with pytest.raises(LedgerUnavailableError, match="not in the tree"):
            HttpView(cluster.urls[1], verifier=cluster.verifier).get(0)
    finally:
        conn.execute("UPDATE flchain.entries SET data = %s WHERE idx = 0", (data,))
        conn.close()
    assert HttpView(cluster.urls[1], verifier=cluster.verifier).get(0).entry.status == "ok"


def test_a_writer_without_the_log_key_commits_nothing(
        cluster: Cluster, registered: list[tuple[str, str, int, str]],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PostgreSQL ledger has no file to keep a key beside: a store not given
    $FLCHAIN_LOG_KEY refuses to finalize (the model stays PENDING) and says what to set."""
    from mlflow.entities import LoggedModelStatus

    from flchain_plugin.mlflow.store import build_tracking_store

    monkeypatch.delenv(LOG_KEY_ENV, raising=False)
    store = build_tracking_store(cluster.backend, str(tmp_path / "artifacts"))
    size = store.ledger.size
    exp = store.create_experiment("no-key")
    lm = store.create_logged_model(exp)
    root = Path(lm.artifact_location.removeprefix("file://"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(mlflow.exceptions.MlflowException, match=LOG_KEY_ENV):
        store.finalize_logged_model(lm.model_id, LoggedModelStatus.READY)
    assert store.get_logged_model(lm.model_id).status == LoggedModelStatus.PENDING
    assert store.ledger.size == size


_RACER = textwrap.dedent("""
    import hashlib, json, sys, time
    from pathlib import Path
    from flchain_plugin import entries as E
    from flchain_plugin.ledger import Ledger
    from flchain_plugin.mlflow.identity import Commitments, DuplicateCommitmentError, commit_once
    url, me, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    led = Ledger(url)
    index = Commitments(led)
    while not go.exists():
        time.sleep(0.01)
    won, lost = [], []
    for v in range(1, count + 1):
        files = "sha256:" + hashlib.sha256(f"{me}/{v}".encode()).hexdigest()
        entry = E.Mlflow(kind="model_version", model_id="m-" + me, files=E.Digest(files),
                         name="race", version=str(v))
        try:
            won.append([v, commit_once(led, entry, commitments=index).first])
        except DuplicateCommitmentError as dup:
            lost.append([v, dup.existing.index])
    print(json.dumps({"won": won, "lost": lost}))
""")


def test_writer_processes_racing_on_one_identity_commit_it_once(
        postgres_url: str, tmp_path: Path) -> None:
    """The identity check holds across processes on PostgreSQL: it is re-run on whatever
    another writer appended before the append's size check, inside the advisory-locked
    write. Four processes each try to commit versions 1..N of one model name."""
    count, racers = 12, 4
    go = tmp_path / "go"
    env = {**os.environ, LOG_KEY_ENV: str(tmp_path / "log.key")}
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, postgres_url, str(r), str(count),
                               str(go)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(racers)]
    time.sleep(1.0)  # let them connect; then release them at once
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out))

    won = sorted(v for r in results for v, _ in r["won"])
    assert won == list(range(1, count + 1))  # every version committed by exactly one writer
    with Ledger(postgres_url, create=False) as led:
        versions = [(le.index, le.entry.version) for le in led.iter_entries(type="mlflow")]
        assert sorted(v for _, v in versions) == sorted(str(v) for v in range(1, count + 1))
        at = {v: i for i, v in versions}
        for r in results:  # each loser was shown the winner's entry
            assert all(at[str(v)] == i for v, i in r["won"] + r["lost"])
        assert led.verify(verifier=load_private_key(tmp_path / "log.key").verifier).ok


def test_the_ledger_schema_for_a_user_who_may_not_create_one(postgres_url: str) -> None:
    """An MLflow user without the CREATE privilege: a schema the owner made for it is used
    (the store opens and writes its ledger there); a missing one is named with the
    statement that makes it, and nothing else is created."""
    import uuid

    from flchain_plugin.mlflow.server_ledger import open_store_ledger
    from flchain_plugin.store import StoreError

    role = "flchain_mlflow_" + uuid.uuid4().hex[:8]
    admin = psycopg.connect(postgres_url, autocommit=True)
    db = postgres_url.rsplit("/", 1)[1]
    try:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f'REVOKE CREATE ON DATABASE "{db}" FROM PUBLIC')
        backend = "flchain+" + postgres_url.replace("postgresql://postgres@",
                                                    f"postgresql+psycopg://{role}@", 1)
        config = parse_store_uri(backend, env={})
        with pytest.raises(StoreError, match=r"may not create the ledger's schema 'flchain'.*"
                                             r"CREATE SCHEMA flchain AUTHORIZATION"):
            open_store_ledger(config)
        assert admin.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'flchain'"
                             ).fetchone() is None
        admin.execute(f"CREATE SCHEMA flchain AUTHORIZATION {role}")
        with open_store_ledger(config) as led:
            led.append([E.Mlflow(kind="model_version", model_id="m-1", name="n", version="1",
                                 files=E.Digest("sha256:" + "cd" * 32))])
            assert led.size == 1
        owner = admin.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'flchain' "
                              "AND tablename = 'entries'").fetchone()
        assert owner == (role,)
    finally:
        admin.execute("DROP SCHEMA IF EXISTS flchain CASCADE")
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()

"""The `flchain+sqlite` plugin flag against a real MLflow SQLite store, in process.

Log, finalize, register, load; what the ledger commits; lineage from a version back to
Flower client updates; the scheme's registration; the `flchain mlflow verify` command.
Tamper cases are in test_mlflow_tamper.py, the HTTP server in test_mlflow_server.py.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from click.testing import CliRunner  # noqa: E402
from conftest import mlflow_store  # noqa: E402
from mlflow.entities import LoggedModelInput  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from flchain_plugin import entries as E  # noqa: E402
from flchain_plugin.digest import directory_digest, file_digest, model_digest  # noqa: E402
from flchain_plugin.ledger import Ledger  # noqa: E402
from flchain_plugin.mlflow import (  # noqa: E402
    TamperedModelError,
    digest_tags,
    load_model,
    verified,
    verify_model,
)
from flchain_plugin.mlflow.commitment import run_digest  # noqa: E402

pytestmark = [pytest.mark.mlflow, pytest.mark.timeout(180)]


class Scale(mlflow.pyfunc.PythonModel):
    """A tiny pyfunc model whose weights live in an artifact file."""

    def load_context(self, context):
        import numpy as np

        self.w = np.fromfile(context.artifacts["weights"], dtype="<f4")

    def predict(self, context, model_input):
        return [float(x) * float(self.w.sum()) for x in model_input]


@dataclass(frozen=True)
class Env:
    dir: Path
    uri: str
    ledger: Path
    experiment_id: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    d = tmp_path_factory.mktemp("mlflow-store")
    with mlflow_store(d, "flchain-store") as (uri, exp):
        yield Env(d, uri, d / "mlflow.db.flchain.db", exp)


def log_scale(d: Path, value: float = 1.0, tags: dict[str, str] | None = None) -> str:
    """Log a Scale model whose weights are 64 floats of `value`; returns its model id."""
    import numpy as np

    weights = d / f"weights-{value}.bin"
    np.full(64, value, dtype="<f4").tofile(weights)
    info = mlflow.pyfunc.log_model(name="scale", python_model=Scale(),
                                   artifacts={"weights": str(weights)},
                                   pip_requirements=["numpy"], tags=tags)
    return info.model_id


def entries_of(ledger: Path, kind: str | None = None) -> list[E.Mlflow]:
    with Ledger(ledger, create=False) as led:
        out = [e.entry for e in led.iter_entries(type="mlflow")]
    return [e for e in out if kind is None or e.kind == kind]  # type: ignore[attr-defined]


# -- the scheme -------------------------------------------------------------------------


def test_scheme_resolves_with_warnings_as_errors(tmp_path: Path) -> None:
    """Both store groups register `flchain+sqlite` in a fresh interpreter where any warning
    (MLflow's "Failure attempting to register store" is one) is an error; the stores then
    build as subclasses of MLflow's own. (Building runs with warnings on, because MLflow's
    SQLAlchemy models emit deprecation warnings of their own.)"""
    code = f"""
import warnings
from mlflow.tracking._model_registry.utils import _get_store_registry
from mlflow.tracking._tracking_service.utils import _tracking_store_registry
uri = "flchain+sqlite:///{tmp_path}/w.db"
tb = _tracking_store_registry.get_store_builder(uri)
rb = _get_store_registry().get_store_builder(uri)
warnings.resetwarnings()
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as Reg
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as Track
t, r = tb(store_uri=uri, artifact_uri=None), rb(store_uri=uri, tracking_uri=uri)
assert isinstance(t, Track) and isinstance(r, Reg), (type(t), type(r))
print(type(t).__name__, type(r).__name__)
"""
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["FlchainTrackingStore", "FlchainRegistryStore"]
    assert (tmp_path / "w.db.flchain.db").exists()


@pytest.mark.parametrize("module, call", [
    ("flchain_plugin.mlflow.store", "c.search_experiments()"),
    ("flchain_plugin.mlflow.registry", "c.search_registered_models()"),
])
def test_a_broken_plugin_import_is_a_clear_error(tmp_path: Path, module: str, call: str) -> None:
    """The scheme still exists; building the store says the plugin is broken and what to do,
    and nothing is written without the ledger."""
    code = f"""
import sys
sys.modules[{module!r}] = None  # the plugin's store module fails to import
import mlflow
from mlflow.exceptions import MlflowException
uri = "flchain+sqlite:///{tmp_path}/b.db"
try:
    c = mlflow.MlflowClient(tracking_uri=uri if "store" in {module!r} else None,
                            registry_uri=uri)
    {call}
except MlflowException as e:
    print(e.message)
else:
    print("NO ERROR")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "flchain MLflow plugin failed to import" in out, out
    assert "pip install 'flchain-plugin[mlflow]'" in out and "Nothing was logged" in out
    assert not (tmp_path / "b.db").exists()


def test_stores_are_mlflow_subclasses_and_async_logging_goes_through(env: Env) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from flchain_plugin.mlflow.store import FlchainTrackingStore

    store = mlflow.MlflowClient()._tracking_client.store
    assert isinstance(store, FlchainTrackingStore) and isinstance(store, SqlAlchemyStore)
    with mlflow.start_run() as run:
        for i in range(20):
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i, synchronous=False)
        mlflow.log_params({"lr": "0.1"}, synchronous=False)
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")
    assert len(history) == 20
    assert mlflow.get_run(run.info.run_id).data.params == {"lr": "0.1"}


# -- log, finalize, register, load ---------------------------------------------------


def test_log_register_load_commits_and_verifies(env: Env) -> None:
    import pandas as pd

    csv = env.dir / "train.csv"
    pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]}).to_csv(csv, index=False)
    ds = mlflow.data.from_pandas(pd.read_csv(csv), source=str(csv), name="train")
    with mlflow.start_run() as run:
        mlflow.log_params({"lr": "0.01", "epochs": "2"})
        mlflow.log_metric("loss", 0.5)
        mlflow.log_metric("loss", 0.25)
        mlflow.log_input(ds, context="training")
        model_id = log_scale(env.dir, 2.0)
    mv = mlflow.register_model(f"models:/{model_id}", "scale-ok")
    client = mlflow.MlflowClient()
    lm = client.get_logged_model(model_id)

    logged = [e for e in entries_of(env.ledger, "logged_model") if e.model_id == model_id]
    assert len(logged) == 1
    c = logged[0]
    stored = Path(lm.artifact_location)
    assert c.files == directory_digest(stored, exclude=["registered_model_meta"])
    assert c.run_id == run.info.run_id and c.name == "scale" and c.status == "ok"
    assert c.params == run_digest({"lr": "0.01", "epochs": "2"}, {"loss": 0.25})
    assert [d["name"] for d in c.datasets] == ["train"]
    d0 = c.datasets[0]
    assert d0["mlflow_digest"] == ds.digest and d0["context"] == "training"
    assert d0["sha256"] == "sha256:" + hashlib.sha256(csv.read_bytes()).hexdigest()
    assert {m["path"] for m in c.detail["manifest"]} >= {"MLmodel", "python_model.pkl"}
    assert lm.tags["flchain.files"] == c.files and lm.tags["flchain.status"] == "ok"

    v = [e for e in entries_of(env.ledger, "model_version") if e.name == "scale-ok"]
    assert len(v) == 1
    assert (v[0].version, v[0].files, v[0].model_id) == (str(mv.version), c.files, model_id)
    assert v[0].parents == [c.files] and v[0].params == c.params
    assert mv.tags == {"flchain.files": c.files, "flchain.status": "ok"}

    model = load_model(f"models:/scale-ok/{mv.version}")
    assert model.predict([1.0, 2.0]) == [128.0, 256.0]
    assert not (stored / "registered_model_meta").exists(), "load must not touch storage"

    private = env.dir / "tmp"
    private.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "tempdir", str(private))
        check = verify_model("models:/scale-ok/1")
    assert list(private.iterdir()) == [] and check.path == "", "the verified copy is removed"
    assert check.entry.entry.kind == "model_version" and check.files == c.files
    assert [s.relation for s in check.lineage] == ["self", "logged model"]
    with Ledger(env.ledger, create=False) as led:
        assert led.verify().ok
        assert (check.size, check.root) == (led.size, led.head().root_digest)


def test_tags_are_written_inside_the_create_call(env: Env,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """No separate tag write: a registry whose set_model_version_tag fails still
    registers with the flchain tags."""
    from flchain_plugin.mlflow.registry import FlchainRegistryStore

    def no_tag_writes(*a: object, **k: object) -> None:
        raise AssertionError("flchain must not write tags after creating the version")

    monkeypatch.setattr(FlchainRegistryStore, "set_model_version_tag", no_tag_writes)
    with mlflow.start_run():
        model_id = log_scale(env.dir, 3.0)
    mv = mlflow.register_model(f"models:/{model_id}", "scale-tags",
                               tags={"team": "vision", "flchain.status": "forged"})
    got = mlflow.MlflowClient().get_model_version("scale-tags", mv.version)
    assert got.tags["team"] == "vision" and got.tags["flchain.status"] == "ok"


def test_verified_wraps_any_flavor_loader(env: Env) -> None:
    with mlflow.start_run():
        model_id = log_scale(env.dir, 0.5)
    load = verified(mlflow.pyfunc.load_model)
    assert load(f"models:/{model_id}").predict([2.0]) == [64.0]


def test_parent_models_are_committed(env: Env) -> None:
    with mlflow.start_run():
        base = log_scale(env.dir, 1.5)
    with mlflow.start_run() as run:
        mlflow.MlflowClient().log_inputs(run.info.run_id, models=[LoggedModelInput(base)])
        tuned = log_scale(env.dir, 1.75)
    by_id = {e.model_id: e for e in entries_of(env.ledger, "logged_model")}
    assert by_id[tuned].parents == [by_id[base].files]
    check = verify_model(f"models:/{tuned}")
    assert ("parent model", by_id[base].model_id) in [
        (s.relation, s.entry.get("model_id")) for s in check.lineage]


def test_register_refuses_a_model_logged_without_the_plugin(env: Env) -> None:
    plain = env.uri.removeprefix("flchain+")
    mlflow.set_tracking_uri(plain)
    try:
        with mlflow.start_run():
            model_id = log_scale(env.dir, 4.0)
    finally:
        mlflow.set_tracking_uri(env.uri)
    with pytest.raises(MlflowException, match="no commitment for logged model"):
        mlflow.register_model(f"models:/{model_id}", "scale-unlogged")
    assert not mlflow.MlflowClient().search_model_versions("name='scale-unlogged'")
    with pytest.raises(Exception, match="no commitment"):
        load_model(f"models:/{model_id}")


def test_a_deleted_logged_model_gets_no_new_version(env: Env) -> None:
    """The registry remembers where a logged model's files are; deleting the model must
    still stop its next version, before anything is committed."""
    with mlflow.start_run():
        model_id = log_scale(env.dir, 7.0)
    client = mlflow.MlflowClient()
    client.create_registered_model("scale-deleted")
    client.create_model_version("scale-deleted", f"models:/{model_id}", model_id=model_id)
    size = len(entries_of(env.ledger))
    client.delete_logged_model(model_id)
    with pytest.raises(MlflowException):
        client.create_model_version("scale-deleted", f"models:/{model_id}", model_id=model_id)
    assert len(entries_of(env.ledger)) == size
    assert len(client.search_model_versions("name='scale-deleted'")) == 1


def test_a_failed_ledger_append_removes_the_version(env: Env,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with mlflow.start_run():
        model_id = log_scale(env.dir, 5.0)
    registry = mlflow.MlflowClient()._get_registry_client().store

    def disk_full(entries: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(registry.ledger, "append", disk_full)
    with pytest.raises(MlflowException, match=r"could not be recorded.*removed again"):
        mlflow.register_model(f"models:/{model_id}", "scale-append")
    assert not mlflow.MlflowClient().search_model_versions("name='scale-append'")


# -- weights: the link to Flower and Lightning ------------------------------------------


def test_torch_model_links_to_flower_updates_and_checks_its_claim(env: Env) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    weights = model_digest(net.state_dict())

    # What a Flower round records: two accepted updates and the aggregated model.
    with Ledger(env.ledger, create=False) as led:
        base = led.size
        ups = [E.Update(run="fl-1", round=3, node=str(n), update=E.Digest("sha256:" + f"{n}" * 64),
                        parent=E.Digest("sha256:" + "a" * 64), num_examples=10, metrics={},
                        dataset=None, nonce=f"n{n}", key=None, signature=None) for n in (1, 2)]
        agg = E.Model(run="fl-1", round=3, model=E.Digest(weights),
                      parent=E.Digest("sha256:" + "a" * 64), inputs=[base, base + 1],
                      aggregator="FedAvg")
        led.append([*ups, agg])

    with mlflow.start_run():
        info = mlflow.pytorch.log_model(net, name="net", pip_requirements=["torch"],
                                        input_example=x[:2].numpy(), tags=digest_tags(net))
    mv = mlflow.register_model(info.model_uri, "fl-net")
    logged = [e for e in entries_of(env.ledger, "logged_model") if e.model_id == info.model_id]
    assert logged[0].model == weights and logged[0].detail["model_from"] == "tag"

    check = verify_model(f"models:/fl-net/{mv.version}")
    relations = [(s.relation, s.index) for s in check.lineage]
    assert ("same weights (model)", base + 2) in relations
    assert ("aggregated update", base) in relations and ("aggregated update", base + 1) in relations

    loaded = load_model(f"models:/fl-net/{mv.version}", flavor="pytorch")
    assert model_digest(loaded.state_dict()) == weights

    # A logger that claims other weights is caught once the verified files are loaded.
    with mlflow.start_run():
        liar = mlflow.pytorch.log_model(net, name="net", pip_requirements=["torch"],
                                        input_example=x[:2].numpy(),
                                        tags={"flchain.model_digest": "sha256:" + "b" * 64})
    with pytest.raises(TamperedModelError, match="weights digest"):
        load_model(f"models:/{liar.model_id}", flavor="pytorch")
    # ... and through the pyfunc wrapper, which has no state_dict of its own.
    with pytest.raises(TamperedModelError, match="weights digest"):
        load_model(f"models:/{liar.model_id}")


def _safetensors(path: Path, value: float) -> dict[str, object]:
    """A one-tensor safetensors file (JSON header, raw bytes); returns its state dict."""
    import numpy as np

    w = np.full(4, value, dtype="<f4")
    head = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    path.write_bytes(len(head).to_bytes(8, "little") + head + w.tobytes())
    return {"w": w}


def record_federated_model(env: Env, run: str, digest: str) -> int:
    """Append the `model` entry a Flower round would (no inputs); return its index."""
    with Ledger(env.ledger, create=False) as led:
        led.append([E.Model(run=run, round=1, model=E.Digest(digest),
                            parent=E.Digest("sha256:" + "c" * 64), inputs=[],
                            aggregator="FedAvg")])
        return led.size - 1


def test_a_weights_link_claimed_by_tag_is_marked_unverified(env: Env) -> None:
    """Anyone can tag a model with a federated model's digest: the link is shown, as a claim."""
    import numpy as np

    from flchain_plugin.cli import cli

    claimed = model_digest({"w": np.full(4, 8.0, dtype="<f4")})
    fl_index = record_federated_model(env, "fl-claim", claimed)
    with mlflow.start_run():
        model_id = log_scale(env.dir, 8.0, tags={"flchain.model_digest": claimed})
    mv = mlflow.register_model(f"models:/{model_id}", "scale-claim")

    check = verify_model(f"models:/scale-claim/{mv.version}")
    assert check.entry.entry.model == claimed  # the digest stays recorded
    step = next(s for s in check.lineage if s.relation == "same weights (model)")
    assert step.index == fl_index and step.verified is False
    assert step.note == "claimed by tag, weights not re-hashed"
    assert [s.index for s in check.unverified_links] == [fl_index]
    doc = check.to_json()
    assert doc["unverified_links"] == [fl_index]
    assert [s["verified"] for s in doc["lineage"]] == [True, True, False]

    runner = CliRunner()
    res = runner.invoke(cli, ["mlflow", "verify", f"models:/scale-claim/{mv.version}",
                              "--json", "--tracking-uri", env.uri])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    link = next(s for s in out["lineage"] if s["index"] == fl_index)
    assert link["verified"] is False and link["note"] == "claimed by tag, weights not re-hashed"
    human = runner.invoke(cli, ["mlflow", "verify", f"models:/scale-claim/{mv.version}",
                                "--tracking-uri", env.uri], terminal_width=200)
    assert human.exit_code == 0, human.output
    assert "UNVERIFIED: claimed by tag, weights not re-hashed" in human.stdout


def test_a_weights_link_from_safetensors_is_verified(env: Env) -> None:
    weights = env.dir / "link.safetensors"
    digest = model_digest(_safetensors(weights, 5.0))
    fl_index = record_federated_model(env, "fl-st", digest)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="st", python_model=Scale(),
                                       artifacts={"weights": str(weights)},
                                       pip_requirements=["numpy"])
    check = verify_model(f"models:/{info.model_id}")
    assert check.entry.entry.detail["model_from"] == "safetensors"
    step = next(s for s in check.lineage if s.index == fl_index)
    assert step.verified is True and step.note is None and not check.unverified_links


# -- where a verified copy lives --------------------------------------------------------


def test_load_reads_only_a_private_directory_and_copies_to_dst_path(env: Env,
                                                                     tmp_path: Path) -> None:
    import os
    import stat
    import tempfile

    from flchain_plugin.digest import files_root
    from flchain_plugin.mlflow.commitment import model_files

    with mlflow.start_run():
        model_id = log_scale(env.dir, 9.0)
    seen: list[tuple[Path, Path, os.stat_result, str]] = []
    tmp = Path(tempfile.gettempdir()).resolve()

    def loader(path: str) -> object:
        src = Path(path).resolve()
        private = tmp / src.relative_to(tmp).parts[0]
        seen.append((src, private, private.stat(), files_root(model_files(src))))
        return mlflow.pyfunc.load_model(path)

    dst = tmp_path / "keep"
    model = verified(loader)(f"models:/{model_id}", dst_path=str(dst))
    assert model.predict([1.0]) == [9.0 * 64]
    ((src, private, info, loaded_files),) = seen
    assert dst.resolve() not in src.parents and src != dst.resolve()
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    assert files_root(model_files(dst)) == loaded_files  # moved there after the load
    assert not private.exists()

    kept = tmp_path / "kept"
    v = verify_model(f"models:/{model_id}", dst_path=kept)
    assert Path(v.path) == kept and files_root(model_files(kept)) == v.files
    with pytest.raises(ValueError, match="not an empty directory"):
        verify_model(f"models:/{model_id}", dst_path=kept)


# -- the command line ------------------------------------------------------------------


def test_cli_verify_prints_lineage_and_fails_on_tamper(env: Env) -> None:
    from flchain_plugin.cli import cli

    with mlflow.start_run():
        model_id = log_scale(env.dir, 6.0)
    mv = mlflow.register_model(f"models:/{model_id}", "scale-cli")
    runner = CliRunner()
    res = runner.invoke(cli, ["mlflow", "verify", f"models:/scale-cli/{mv.version}", "--json",
                              "--tracking-uri", env.uri])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["ok"] is True and doc["entry"]["kind"] == "model_version"
    assert [s["relation"] for s in doc["lineage"]] == ["self", "logged model"]

    human = runner.invoke(cli, ["mlflow", "verify", "models:/scale-cli/1",
                                "--tracking-uri", env.uri])
    assert human.exit_code == 0 and "verified (ok)" in human.stdout and "lineage" in human.stdout

    # Pinning the log's key (the writer's <ledger>.key): it holds; another key named after
    # the log (a re-signed history) refuses; a key that is no key is a one-line usage error.
    from flchain_plugin.commit import key_path
    from flchain_plugin.notes import generate_key, load_private_key

    writer = load_private_key(key_path(env.ledger)).verifier_key
    pinned = runner.invoke(cli, ["mlflow", "verify", "models:/scale-cli/1", "--json",
                                 "--tracking-uri", env.uri, "--key-verifier", writer])
    assert pinned.exit_code == 0, pinned.output
    with Ledger(env.ledger, create=False) as led:
        other = generate_key(led.origin).verifier_key
    forged = runner.invoke(cli, ["mlflow", "verify", "models:/scale-cli/1",
                                 "--tracking-uri", env.uri], env={"FLCHAIN_LOG_VERIFIER": other})
    assert forged.exit_code == 1 and "not signed by the pinned log key" in forged.stderr
    junk = runner.invoke(cli, ["mlflow", "verify", "models:/scale-cli/1",
                               "--tracking-uri", env.uri, "--key-verifier", "not a key"])
    assert junk.exit_code == 2 and junk.stderr.count("\n") == 1 and "--key-verifier" in junk.stderr

    stored = Path(mlflow.MlflowClient().get_logged_model(model_id).artifact_location)
    weights = stored / "artifacts" / "weights-6.0.bin"
    committed = file_digest(weights)
    weights.write_bytes(b"\0" * 256)
    bad = runner.invoke(cli, ["mlflow", "verify", "models:/scale-cli/1", "--json",
                              "--tracking-uri", env.uri])
    assert bad.exit_code == 1
    doc = json.loads(bad.stdout.strip().splitlines()[-1])
    assert doc["ok"] is False
    assert doc["changes"] == [{"path": "artifacts/weights-6.0.bin", "change": "changed",
                               "expected": committed, "actual": file_digest(weights)}]
    assert committed != file_digest(weights)
    assert "artifacts/weights-6.0.bin" in bad.stderr

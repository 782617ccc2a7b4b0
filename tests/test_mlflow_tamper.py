"""Tampering with stored MLflow model files, against a real SQLite store.

One byte of a weight file changed, a file added, a file deleted, a version's files
overwritten with another model's: strict registration refuses and names the file, load
refuses before anything is unpickled and names the file. Permissive mode records and warns.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from conftest import mlflow_store  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from flchain_plugin.ledger import Ledger  # noqa: E402
from flchain_plugin.mlflow import (  # noqa: E402
    MismatchWarning,
    TamperedModelError,
    load_model,
    verify_model,
)

pytestmark = [pytest.mark.mlflow, pytest.mark.timeout(180)]

WEIGHTS = "artifacts/weights.bin"


class Tripwire(mlflow.pyfunc.PythonModel):
    """Unpickling this model's python_model.pkl is what a refused load must never reach."""

    def predict(self, context, model_input):
        return [len(model_input)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    d = tmp_path_factory.mktemp("mlflow-tamper")
    with mlflow_store(d, "tamper") as (uri, _):
        yield d, uri


def log(d: Path, fill: int) -> tuple[str, Path]:
    """Log a model with a 4 KiB weight file; returns (model id, its stored directory)."""
    weights = d / "weights.bin"
    weights.write_bytes(bytes([fill]) * 4096)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="m", python_model=Tripwire(),
                                       artifacts={"weights": str(weights)},
                                       pip_requirements=["numpy"])
    loc = mlflow.MlflowClient().get_logged_model(info.model_id).artifact_location
    return info.model_id, Path(loc)


def flip_byte(stored: Path) -> str:
    p = stored / WEIGHTS
    raw = bytearray(p.read_bytes())
    raw[1234] ^= 0x01
    p.write_bytes(bytes(raw))
    return WEIGHTS


def add_file(stored: Path) -> str:
    (stored / "artifacts" / "extra.py").write_text("import os\n")
    return "artifacts/extra.py"


def delete_file(stored: Path) -> str:
    (stored / WEIGHTS).unlink()
    return WEIGHTS


TAMPERS: dict[str, tuple[Callable[[Path], str], str]] = {
    "one byte": (flip_byte, "changed"),
    "added file": (add_file, "added"),
    "deleted file": (delete_file, "removed"),
}


def refuses_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any pickle load in this process fail loudly, so a refusal provably came first."""
    import pickle

    import cloudpickle

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("a pickle was read before verification finished")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(cloudpickle, "load", boom)


def test_the_pickle_tripwire_catches_a_real_load(store: tuple[Path, str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard used below is not vacuous: an intact model does reach the unpickler."""
    model_id, _ = log(store[0], 3)
    refuses_unpickling(monkeypatch)
    with pytest.raises(AssertionError, match="pickle was read"):
        load_model(f"models:/{model_id}")


@pytest.mark.parametrize("kind", list(TAMPERS))
def test_tampered_model_is_refused_at_registration_and_load(
    store: tuple[Path, str], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, _ = store
    tamper, change = TAMPERS[kind]
    name = f"t-{kind.replace(' ', '-')}"
    model_id, stored = log(d, 7)
    mlflow.register_model(f"models:/{model_id}", name)  # version 1, before tampering

    path = tamper(stored)

    with pytest.raises(MlflowException) as refused:
        mlflow.register_model(f"models:/{model_id}", name)
    msg = refused.value.message
    assert "flchain refused" in msg and f"{path} ({change})" in msg
    assert "Nothing was registered" in msg
    versions = mlflow.MlflowClient().search_model_versions(f"name='{name}'")
    assert [str(v.version) for v in versions] == ["1"]

    with monkeypatch.context() as m:
        refuses_unpickling(m)
        for uri in (f"models:/{name}/1", f"models:/{model_id}"):
            with pytest.raises(TamperedModelError) as bad:
                load_model(uri)
            assert [(c.path, c.change) for c in bad.value.changes] == [(path, change)]
            assert path in str(bad.value)


def test_overwritten_version_files_are_refused(store: tuple[Path, str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Another model's files copied over a registered version's storage (mlflow#3175)."""
    d, _ = store
    good_id, good = log(d, 1)
    other_id, other = log(d, 2)
    mv = mlflow.register_model(f"models:/{good_id}", "t-overwrite")
    shutil.rmtree(good)
    shutil.copytree(other, good)

    with monkeypatch.context() as m:
        refuses_unpickling(m)
        with pytest.raises(TamperedModelError) as bad:
            load_model(f"models:/t-overwrite/{mv.version}")
    changed = {c.path: c.change for c in bad.value.changes}
    assert changed[WEIGHTS] == "changed" and changed["MLmodel"] == "changed", changed
    assert set(changed.values()) == {"changed"}
    with pytest.raises(MlflowException, match="flchain refused"):
        mlflow.register_model(f"models:/{good_id}", "t-overwrite")
    # The copied model itself is intact and still loads.
    assert load_model(f"models:/{other_id}").predict([1, 2, 3]) == [3]


def test_permissive_mode_records_the_mismatch_and_warns(store: tuple[Path, str]) -> None:
    d, uri = store
    model_id, stored = log(d, 9)
    flip_byte(stored)
    permissive = uri + "?flchain_mode=permissive"
    mlflow.set_tracking_uri(permissive)
    try:
        with pytest.warns(MismatchWarning, match=f"{WEIGHTS} \\(changed\\)"):
            mv = mlflow.register_model(f"models:/{model_id}", "t-permissive")
        with pytest.warns(MismatchWarning, match="recorded as 'mismatch'"):
            loaded = load_model(f"models:/t-permissive/{mv.version}")
        assert loaded.predict([1]) == [1]
    finally:
        mlflow.set_tracking_uri(uri)

    assert mv.tags["flchain.status"] == "mismatch"
    with Ledger(d / "mlflow.db.flchain.db", create=False) as led:
        last = [e.entry for e in led.iter_entries(type="mlflow")][-1]
        assert led.verify().ok
    assert (last.kind, last.name, last.status) == ("model_version", "t-permissive", "mismatch")
    assert last.detail["reason"] == "files_changed"
    assert [c["path"] for c in last.detail["changes"]] == [WEIGHTS]

    # Strict load refuses a version that was only registered permissively.
    with pytest.raises(TamperedModelError, match="strict mode"):
        verify_model(f"models:/t-permissive/{mv.version}")


def test_a_logged_model_is_committed_once(store: tuple[Path, str]) -> None:
    """Finalizing a logged model again with other files is refused in either mode and the
    first commitment stands (it used to supersede it: "the latest wins"); the changed
    files are refused at registration, the first files still register and load."""
    from mlflow.entities import LoggedModelStatus

    d, uri = store
    model_id, stored = log(d, 11)
    original = (stored / WEIGHTS).read_bytes()
    flip_byte(stored)
    for mode in ("strict", "permissive"):
        mlflow.set_tracking_uri(f"{uri}?flchain_mode={mode}")
        try:
            with pytest.raises(MlflowException) as again:
                mlflow.MlflowClient().finalize_logged_model(model_id, LoggedModelStatus.READY)
        finally:
            mlflow.set_tracking_uri(uri)
        assert again.value.error_code == "RESOURCE_CONFLICT"
        assert f"{WEIGHTS} (changed)" in again.value.message
        assert "the first stands" in again.value.message
    with Ledger(d / "mlflow.db.flchain.db", create=False) as led:
        mine = [e for e in led.iter_entries(type="mlflow") if e.entry.model_id == model_id]
        assert led.verify().ok
    assert [e.entry.kind for e in mine] == ["logged_model"]

    with pytest.raises(MlflowException) as refused:
        mlflow.register_model(f"models:/{model_id}", "t-once")
    assert f"{WEIGHTS} (changed)" in refused.value.message
    assert f"its commitment, ledger entry {mine[0].index}" in refused.value.message
    assert not mlflow.MlflowClient().search_model_versions("name='t-once'")

    (stored / WEIGHTS).write_bytes(original)  # back to the committed files
    mlflow.MlflowClient().finalize_logged_model(model_id, LoggedModelStatus.READY)  # no-op
    mv = mlflow.register_model(f"models:/{model_id}", "t-once")
    assert mv.tags["flchain.status"] == "ok"
    assert load_model(f"models:/t-once/{mv.version}").predict([1, 2]) == [2]
    with Ledger(d / "mlflow.db.flchain.db", create=False) as led:
        again_mine = [e for e in led.iter_entries(type="mlflow") if e.entry.model_id == model_id]
    assert [e.entry.kind for e in again_mine] == ["logged_model", "model_version"]
    assert again_mine[1].entry.detail["logged_model_entry"] == mine[0].index

"""Tampering with stored MLflow model files, against a real SQLite store.

One byte of a weight file changed, a file added, a file deleted, a version's files
overwritten with another model's: strict registration refuses and names the file, load
refuses before anything is unpickled and names the file. Permissive mode records and warns.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from conftest import mlflow_store  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from flchain_plugin import entries as E  # noqa: E402
from flchain_plugin.commit import key_path  # noqa: E402
from flchain_plugin.digest import files_root  # noqa: E402
from flchain_plugin.ledger import Ledger  # noqa: E402
from flchain_plugin.mlflow import (  # noqa: E402
    DuplicateCommitmentWarning,
    LedgerUnavailableError,
    MismatchWarning,
    TamperedModelError,
    UnknownModelError,
    load_model,
    verify_model,
)
from flchain_plugin.mlflow.commitment import model_files  # noqa: E402
from flchain_plugin.mlflow.config import ConfigError  # noqa: E402
from flchain_plugin.notes import generate_key, load_private_key  # noqa: E402
from flchain_plugin.pinning import RECENT_CHECKPOINTS  # noqa: E402

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


def ledger_file(d: Path) -> Path:
    return d / "mlflow.db.flchain.db"


def copy_ledger(src: Path, dst: Path) -> Path:
    """A consistent copy of a live ledger (SQLite's backup API), to damage freely."""
    with closing(sqlite3.connect(src)) as a, closing(sqlite3.connect(dst)) as b:
        a.backup(b)
    return dst


def the_log_key(d: Path) -> str:
    """The vkey of the MLflow ledger's own checkpoint key (`<ledger file>.key`)."""
    return load_private_key(key_path(ledger_file(d))).verifier_key


def rewrite(d: Path, dst: Path, model_id: str, files: str) -> Ledger:
    """The ledger as its operator could rewrite it: the same origin and entries, except that
    every commitment of `model_id` now vouches for `files`."""
    with Ledger(ledger_file(d), create=False) as led:
        fake = Ledger(dst, origin=led.origin)
        for le in led.iter_entries():
            e = le.entry
            if isinstance(e, E.Mlflow) and e.model_id == model_id:
                e = dataclasses.replace(e, files=E.Digest(files), detail={})
            fake.append([e])
    return fake


def test_a_pinned_key_refuses_a_rewritten_ledger_re_signed_with_another_key(
        store: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d, _ = store
    model_id, stored = log(d, 21)
    mv = mlflow.register_model(f"models:/{model_id}", "t-pinned")
    uri = f"models:/t-pinned/{mv.version}"
    key = the_log_key(d)
    assert verify_model(uri, verifier=key).entry.entry.files == mv.tags["flchain.files"]

    original = (stored / WEIGHTS).read_bytes()
    flip_byte(stored)
    try:
        tampered = files_root(model_files(stored))
        with rewrite(d, tmp_path / "resigned.db", model_id, tampered) as fake:
            fake.sign_checkpoint(generate_key(fake.origin))
        # Unpinned, the rewritten and re-signed ledger vouches for the tampered files ...
        assert verify_model(uri, ledger=tmp_path / "resigned.db").files == tampered
        # ... pinned (argument, key file, or environment), nothing loads from it.
        (tmp_path / "log.vkey").write_text(key + "\n")
        for pin in (key, str(tmp_path / "log.vkey")):
            with pytest.raises(LedgerUnavailableError, match="not signed by the pinned"):
                load_model(uri, ledger=tmp_path / "resigned.db", verifier=pin)
        monkeypatch.setenv("FLCHAIN_LOG_VERIFIER", key)
        with pytest.raises(LedgerUnavailableError, match="re-signed by another key"):
            verify_model(uri, ledger=tmp_path / "resigned.db")
        # Keeping the genuine checkpoints instead does not help: their roots do not match.
        with rewrite(d, tmp_path / "kept.db", model_id, tampered) as fake, \
                Ledger(ledger_file(d), create=False) as led:
            for size, note in led.store.checkpoints(last=RECENT_CHECKPOINTS):
                fake.store.add_checkpoint(size, note)
        with pytest.raises(LedgerUnavailableError, match="the ledger was rewritten"):
            verify_model(uri, ledger=tmp_path / "kept.db")
        with pytest.raises(TamperedModelError):  # the genuine ledger refuses the files
            verify_model(uri)
    finally:
        (stored / WEIGHTS).write_bytes(original)
    assert load_model(uri).predict([1]) == [1]  # pinned through the environment
    monkeypatch.setenv("FLCHAIN_LOG_VERIFIER", "not a key")
    with pytest.raises(ConfigError, match="FLCHAIN_LOG_VERIFIER: 'not a key' is not a verifier"):
        verify_model(uri)


def test_a_pinned_key_needs_a_checkpoint_covering_the_commitment(
        store: tuple[Path, str], tmp_path: Path) -> None:
    """A commitment no checkpoint signed by the pinned key covers (appended after the last
    one, by a crash between append and sign or by hand) is not loaded."""
    d, _ = store
    model_id, _ = log(d, 22)
    before = copy_ledger(ledger_file(d), tmp_path / "before.db")
    mv = mlflow.register_model(f"models:/{model_id}", "t-uncovered")
    uri = f"models:/t-uncovered/{mv.version}"
    with Ledger(ledger_file(d), create=False) as led:
        committed = led.get(led.size - 1).entry
    with Ledger(before, create=False) as led:
        led.append([committed])  # the same commitment, with no checkpoint after it
    assert verify_model(uri, ledger=before).entry.entry == committed  # unpinned: the head
    with pytest.raises(UnknownModelError, match="signed by the pinned key"):
        verify_model(uri, ledger=before, verifier=the_log_key(d))
    verify_model(uri, verifier=the_log_key(d))  # the plugin's own ledger signed it


def test_a_second_commitment_written_past_the_plugin_never_wins(
        store: tuple[Path, str], tmp_path: Path) -> None:
    """A ledger holding two commitments for one version (written by hand, or by a writer
    without the rule): the first stands and the conflict is reported at load."""
    d, _ = store
    model_id, stored = log(d, 23)
    mv = mlflow.register_model(f"models:/{model_id}", "t-twice")
    uri = f"models:/t-twice/{mv.version}"
    copy = copy_ledger(ledger_file(d), tmp_path / "twice.db")
    original = (stored / WEIGHTS).read_bytes()
    flip_byte(stored)
    try:
        tampered = files_root(model_files(stored))
        with Ledger(copy, create=False) as led:
            first = led.get(led.size - 1)
            led.append([dataclasses.replace(first.entry, files=E.Digest(tampered), detail={})])
            led.sign_checkpoint(load_private_key(key_path(ledger_file(d))))
        with pytest.warns(DuplicateCommitmentWarning, match=f"the first, entry {first.index}"), \
                pytest.raises(TamperedModelError, match=f"ledger entry {first.index} "):
            load_model(uri, ledger=copy, verifier=the_log_key(d))
    finally:
        (stored / WEIGHTS).write_bytes(original)
    with pytest.warns(DuplicateCommitmentWarning, match="2 commitments for version"):
        got = verify_model(uri, ledger=copy, verifier=the_log_key(d))
    assert got.entry.index == first.index


def test_an_empty_directory_in_storage_never_reaches_the_loader(
        store: tuple[Path, str], tmp_path: Path) -> None:
    """Directories are not in the directory digest (format v1). That is safe because the
    loader only ever sees the verified copy, which holds exactly the committed files and
    the directories that contain them: an empty directory added to storage registers and
    loads, and is not there to be found by the model."""
    d, _ = store
    model_id, stored = log(d, 24)
    (stored / "artifacts" / "plugins" / "deeper").mkdir(parents=True)
    (stored / "empty").mkdir()
    mv = mlflow.register_model(f"models:/{model_id}", "t-emptydir")
    got = verify_model(f"models:/t-emptydir/{mv.version}", dst_path=tmp_path / "out")
    manifest = {m["path"] for m in got.entry.entry.detail["manifest"]}
    present = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")}
    parents = {Path(m).parent.as_posix() for m in manifest} - {"."}
    assert present == manifest | parents
    assert not (tmp_path / "out" / "empty").exists()
    assert not (tmp_path / "out" / "artifacts" / "plugins").exists()


def test_a_version_the_shared_ledger_already_commits_is_refused_and_removed(
        store: tuple[Path, str]) -> None:
    """Two MLflow databases sharing one ledger both make version 1 of a name: the second
    commitment of that identity is refused, its version removed again, the first stands."""
    d, uri = store
    model_id, _ = log(d, 25)
    first = mlflow.register_model(f"models:/{model_id}", "t-shared")
    other = f"flchain+sqlite:///{d}/other.db?flchain_ledger={ledger_file(d)}"
    mlflow.set_tracking_uri(other)
    try:
        exp = mlflow.create_experiment("other", artifact_location=str(d / "other-artifacts"))
        with mlflow.start_run(experiment_id=exp):
            info = mlflow.pyfunc.log_model(name="m", python_model=Tripwire(),
                                           pip_requirements=["numpy"])
        with pytest.raises(MlflowException) as refused:
            mlflow.register_model(f"models:/{info.model_id}", "t-shared")
        assert refused.value.error_code == "RESOURCE_CONFLICT"
        assert "version 1 of 't-shared' is already committed" in refused.value.message
        assert "removed again" in refused.value.message
        assert not mlflow.MlflowClient().search_model_versions("name='t-shared'")
    finally:
        mlflow.set_tracking_uri(uri)
    assert str(first.version) == "1"
    got = verify_model("models:/t-shared/1")
    assert got.entry.entry.model_id == model_id  # the first stands

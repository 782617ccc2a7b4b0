"""The MLflow plugin's pure parts: the store URI, what is committed, weights without pickle.

These need no MLflow server; the store, registry and server tests are in the other
test_mlflow_*.py files.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flchain_plugin.canonical import canonical_json
from flchain_plugin.digest import DigestError, FileDigest, files_root, model_digest
from flchain_plugin.mlflow.commitment import (
    dataset_record,
    file_changes,
    logged_model_entry,
    manifest_files,
    model_files,
    run_digest,
)
from flchain_plugin.mlflow.config import ConfigError, parse_store_uri
from flchain_plugin.mlflow.weights import digest_tags, safetensors_digest

pytestmark = pytest.mark.mlflow


# -- the store URI ---------------------------------------------------------------------


def test_sqlite_ledger_sits_beside_the_database(tmp_path: Path) -> None:
    cfg = parse_store_uri(f"flchain+sqlite:///{tmp_path}/mlflow.db", env={})
    assert cfg.inner_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert cfg.ledger == f"{tmp_path}/mlflow.db.flchain.db"
    assert cfg.mode == "strict" and cfg.strict


def test_relative_sqlite_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = parse_store_uri("flchain+sqlite:///runs/m.db", env={})
    assert cfg.inner_uri == "sqlite:///runs/m.db"
    assert cfg.ledger == str(tmp_path / "runs" / "m.db.flchain.db")


def test_query_settings_are_stripped_and_win_over_the_environment() -> None:
    env = {"FLCHAIN_MLFLOW_MODE": "strict", "FLCHAIN_LEDGER": "/env/ledger.db"}
    cfg = parse_store_uri(
        "flchain+sqlite:////d/m.db?timeout=5&flchain_mode=permissive&flchain_ledger=/q/l.db",
        env=env)
    assert cfg.inner_uri == "sqlite:////d/m.db?timeout=5"
    assert (cfg.mode, cfg.ledger) == ("permissive", "/q/l.db")
    cfg = parse_store_uri("flchain+sqlite:////d/m.db", env=env)
    assert (cfg.mode, cfg.ledger) == ("strict", "/env/ledger.db")


def test_databases_without_a_ledger_home_need_a_named_ledger() -> None:
    with pytest.raises(ConfigError, match="FLCHAIN_LEDGER"):
        parse_store_uri("flchain+mysql+pymysql://u@db.example/mlflow", env={})
    cfg = parse_store_uri("flchain+postgresql+psycopg://u@db/mlflow",
                          env={"FLCHAIN_LEDGER": "/var/flchain/ledger.db"})
    assert cfg.inner_uri == "postgresql+psycopg://u@db/mlflow"
    assert cfg.ledger == "/var/flchain/ledger.db" and cfg.ledger_schema is None


def test_postgres_ledger_defaults_to_mlflows_database_in_its_own_schema() -> None:
    """Every server on one MLflow database finds the same ledger with nothing configured:
    the libpq URL of the same database (driver dropped, connection parameters kept), its
    tables in schema `flchain` through the search path."""
    cfg = parse_store_uri("flchain+postgresql+psycopg://u:p%40w@db:5432/mlflow?sslmode=require"
                          "&flchain_mode=permissive", env={})
    assert cfg.inner_uri == "postgresql+psycopg://u:p%40w@db:5432/mlflow?sslmode=require"
    assert cfg.ledger == ("postgresql://u:p%40w@db:5432/mlflow?sslmode=require"
                          "&options=-csearch_path%3Dflchain")
    assert (cfg.ledger_schema, cfg.mode) == ("flchain", "permissive")
    assert "p%40w" not in cfg.where and cfg.where.startswith("postgresql://u:***@db:5432/mlflow")
    # Options of MLflow's own connection are kept, the schema added (libpq decodes %20).
    cfg = parse_store_uri("flchain+postgresql://u@db/m?options=-cstatement_timeout%3D5000",
                          env={})
    assert cfg.ledger == "postgresql://u@db/m?options=-cstatement_timeout%3D5000%20-csearch_path%3Dflchain"


def test_a_named_postgres_ledger_is_used_as_given() -> None:
    url = "postgresql://ledger@db2:5433/audit"
    for cfg in (parse_store_uri(f"flchain+sqlite:////d/m.db?flchain_ledger={url}", env={}),
                parse_store_uri("flchain+postgresql://u@db/m", env={"FLCHAIN_LEDGER": url})):
        assert (cfg.ledger, cfg.ledger_schema) == (url, None)


@pytest.mark.parametrize("uri, match", [
    ("sqlite:///m.db", "not a flchain store URI"),
    ("flchain+", "no database"),
    ("flchain+flchain+sqlite:///m.db", "given twice"),
    ("flchain+sqlite:///m.db?flchain_mode=lenient", "strict, permissive"),
    ("flchain+sqlite:///:memory:", "cannot place the ledger"),
    ("flchain+sqlite:///m.db?flchain_ledger=http://x/l.db", "local ledger file"),
])
def test_bad_store_uris_say_what_to_do(uri: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_store_uri(uri, env={})


def test_entry_point_module_imports_no_framework() -> None:
    """MLflow turns an entry point's ImportError into a warning and drops the scheme, so
    the module it loads must import nothing that can fail (nor MLflow back)."""
    code = ("import sys; import flchain_plugin.mlflow.entrypoints; "
            "bad = [m for m in ('mlflow', 'torch', 'flwr', 'sqlalchemy') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# -- what is committed -----------------------------------------------------------------


def _model_dir(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    (root / "data" / "model.bin").write_bytes(bytes(range(256)) * 40)
    (root / "registered_model_meta").write_text("model_name: x\nmodel_version: '1'\n")
    return root


def test_model_files_leave_out_registered_model_meta(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "m")
    files = model_files(d)
    assert [f.path for f in files] == ["MLmodel", "data/model.bin"]
    assert files[1].digest == "sha256:" + hashlib.sha256(bytes(range(256)) * 40).hexdigest()
    (d / "registered_model_meta").write_text("model_name: y\n")  # MLflow rewrites it on load
    assert files_root(model_files(d)) == files_root(files)


def test_file_changes_name_changed_added_and_removed_files() -> None:
    a = FileDigest("a", 1, "sha256:" + "1" * 64)
    b = FileDigest("b", 1, "sha256:" + "2" * 64)
    b2 = FileDigest("b", 1, "sha256:" + "3" * 64)
    c = FileDigest("c", 5, "sha256:" + "4" * 64)
    got = file_changes([a, b], [b2, c])
    assert [(x.path, x.change) for x in got] == [("a", "removed"), ("b", "changed"),
                                                 ("c", "added")]
    assert file_changes([a, b], [a, b]) == []


def test_manifest_is_trusted_only_when_it_hashes_to_the_committed_root(tmp_path: Path) -> None:
    files = model_files(_model_dir(tmp_path / "m"))
    entry = logged_model_entry("m-1", files, model=None, run_id=None, name="n", params=None,
                               datasets=[], parents=[], detail={})
    assert manifest_files(entry) == files
    assert entry.detail["file_count"] == 2 and entry.detail["bytes"] == sum(f.size for f in files)
    forged = dict(entry.detail)
    forged["manifest"] = [dict(m) for m in entry.detail["manifest"]]
    forged["manifest"][0]["size"] += 1
    bad = type(entry)(**{**{n: getattr(entry, n) for n in entry._NAMES}, "detail": forged})
    assert manifest_files(bad) is None


def test_run_digest_is_canonical_json_of_params_and_latest_metrics() -> None:
    params, metrics = {"lr": "0.1", "epochs": "3"}, {"loss": 0.25, "acc": 1}
    want = hashlib.sha256(canonical_json(
        {"metrics": {"acc": 1.0, "loss": 0.25}, "params": {"epochs": "3", "lr": "0.1"}}
    )).hexdigest()
    assert run_digest(params, metrics) == "sha256:" + want
    assert run_digest(params, {"loss": float("nan")}) != run_digest(params, {"loss": 0.0})
    assert run_digest({"lr": "0.2", "epochs": "3"}, metrics) != run_digest(params, metrics)


def test_dataset_record_commits_a_real_sha256_of_reachable_data(tmp_path: Path) -> None:
    csv = tmp_path / "train.csv"
    csv.write_text("x,y\n1,2\n")
    source = json.dumps({"uri": str(csv)})
    rec = dataset_record("train", "1a2b3c4d", "local", source, "training", hash_local=True)
    assert rec["sha256"] == "sha256:" + hashlib.sha256(b"x,y\n1,2\n").hexdigest()
    assert rec["mlflow_digest"] == "1a2b3c4d" and rec["context"] == "training"
    away = dataset_record("train", "1a2b3c4d", "local", source, None, hash_local=False)
    assert away["sha256"] is None and "server" in away["unhashed"]
    code = dataset_record("df", "9f9f9f9f", "code", json.dumps({"tags": {}}), None, True)
    assert code["sha256"] is None and "not reachable" in code["unhashed"]


# -- weights without unpickling ------------------------------------------------------


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, offset = {}, [], 0
    names = {np.dtype("<f4"): "F32", np.dtype("<i8"): "I64", np.dtype("|u1"): "U8"}
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": names[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_safetensors_weights_digest_equals_the_state_dict_digest(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    state["steps"] = np.arange(5, dtype=np.int64)
    _write_safetensors(tmp_path / "model.safetensors", state)
    files = model_files(tmp_path)
    assert safetensors_digest(tmp_path, files) == model_digest(state)
    assert digest_tags(net) == {"flchain.model_digest": model_digest(net.state_dict())}


def test_safetensors_with_a_lying_header_is_refused(tmp_path: Path) -> None:
    _write_safetensors(tmp_path / "w.safetensors", {"w": np.zeros((2, 2), np.float32)})
    raw = bytearray((tmp_path / "w.safetensors").read_bytes())
    head_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + head_len])
    header["w"]["shape"] = [4, 4]  # claims more bytes than it has
    head = json.dumps(header).encode()
    (tmp_path / "w.safetensors").write_bytes(struct.pack("<Q", len(head)) + head
                                             + raw[8 + head_len:])
    with pytest.raises(DigestError, match="size does not match"):
        safetensors_digest(tmp_path, model_files(tmp_path))
    assert safetensors_digest(tmp_path, []) is None


def test_local_view_reuses_the_entry_the_ledger_decoded(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from flchain_plugin import entries as E
    from flchain_plugin.ledger import Ledger
    from flchain_plugin.mlflow import view as V

    entry = logged_model_entry("m-1", [FileDigest("a", 1, "sha256:" + "1" * 64)], model=None,
                               run_id=None, name="m", params=None, datasets=[], parents=[],
                               detail={})
    with Ledger(tmp_path / "l.db") as led:
        led.append([entry])

        def no_second_decode(data: bytes) -> E.Entry:
            raise AssertionError("LocalView decoded an entry the ledger had already decoded")

        monkeypatch.setattr(V, "decode", no_second_decode)
        got = V.LocalView(led).get(0)
    assert got.entry == entry and got.index == 0


def test_latest_commitment_is_read_newest_first(tmp_path: Path) -> None:
    from flchain_plugin import entries as E
    from flchain_plugin.ledger import Ledger
    from flchain_plugin.mlflow.view import LocalView, MlflowQuery

    def logged(mid: str, n: int) -> E.Entry:
        return logged_model_entry(mid, [FileDigest("a", n, "sha256:" + f"{n:064x}")],
                                  model=None, run_id=None, name="m", params=None, datasets=[],
                                  parents=[], detail={})

    with Ledger(tmp_path / "l.db") as led:
        for n in range(30):  # m-0 committed three times, among other models
            led.append([logged(f"m-{n % 10}", n)])
        view = LocalView(led)
        latest = view.latest_mlflow(kind="logged_model", model_id="m-0")
        assert latest is not None and latest.entry.files == logged("m-0", 20).files
        assert latest == view.mlflow(MlflowQuery(kind="logged_model", model_id="m-0"))[-1]
        assert view.latest_mlflow(kind="logged_model", model_id="m-404") is None


def test_a_download_loses_its_empty_directories_before_the_loader_sees_it(
        tmp_path: Path) -> None:
    """Remote storage is downloaded by MLflow; directories the digest does not cover are
    removed from the copy, so what loads is a function of the committed files alone."""
    from flchain_plugin.mlflow.load import _prune_empty_directories

    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "f").write_bytes(b"x")
    (tmp_path / "keep" / "empty").mkdir()
    _prune_empty_directories(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "keep", "keep/f"]


def test_the_pinned_verifier_key_comes_from_the_argument_or_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flchain_plugin.mlflow.config import ConfigError
    from flchain_plugin.mlflow.view import VERIFIER_ENV, pinned_verifier
    from flchain_plugin.notes import generate_key

    key = generate_key("flchain.local/pin")
    monkeypatch.delenv(VERIFIER_ENV, raising=False)
    assert pinned_verifier() is None
    assert pinned_verifier(key.verifier_key) == key.verifier
    (tmp_path / "log.vkey").write_text(key.verifier_key + "\n")
    assert pinned_verifier(str(tmp_path / "log.vkey")) == key.verifier
    monkeypatch.setenv(VERIFIER_ENV, str(tmp_path / "log.vkey"))
    assert pinned_verifier() == key.verifier
    other = generate_key("flchain.local/pin")
    assert pinned_verifier(other.verifier_key) == other.verifier  # the argument wins
    for bad in ("sha256:" + "0" * 64, str(tmp_path), "x" * 10_000):
        with pytest.raises(ConfigError, match="is not a verifier key"):
            pinned_verifier(bad)
    monkeypatch.setenv(VERIFIER_ENV, "nonsense")
    with pytest.raises(ConfigError, match="FLCHAIN_LOG_VERIFIER: 'nonsense'"):
        pinned_verifier()


def test_a_version_matches_its_own_logged_model_when_another_holds_the_same_files(
        tmp_path: Path) -> None:
    """Two logged models with byte-identical files: a version of the second is judged
    against the second's commitment, not refused because the first one came earlier."""
    from flchain_plugin import entries as E
    from flchain_plugin.ledger import Ledger
    from flchain_plugin.mlflow.identity import Commitments
    from flchain_plugin.mlflow.registry import committed_logged_model

    files = "sha256:" + hashlib.sha256(b"same files").hexdigest()
    other = "sha256:" + hashlib.sha256(b"other files").hexdigest()
    with Ledger(tmp_path / "l.db") as led:
        led.append([E.Mlflow(kind="logged_model", model_id="m-first", files=files)])
        led.append([E.Mlflow(kind="logged_model", model_id="m-second", files=files)])
        match, own = committed_logged_model(Commitments(led), "m-second", files)
        assert match is not None and match.index == 1 and own is match
        # Other files for the same id: no match, and the commitment that stands is named.
        match, own = committed_logged_model(Commitments(led), "m-second", other)
        assert match is None and own is not None and own.index == 1
        # A plain source (no id) matches the oldest logged model with these files.
        match, own = committed_logged_model(Commitments(led), None, files)
        assert match is not None and match.index == 0 and own is match
        assert committed_logged_model(Commitments(led), "m-unknown", files) == (None, None)

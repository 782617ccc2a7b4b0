"""Replay over one real Flower simulation: every aggregator's rounds recomputed bit for bit.

One run of four SuperNodes whose ServerApp trains two rounds with each aggregator in turn,
every phase a LedgerStrategy(keep_updates=True) on the same ledger. Then: replay finds
every round "ok" (DP noise: "not_replayable", with its inputs checked); an altered kept
update or an altered `model` entry makes replay name that round; erasure keeps `verify`
passing while replay and rollback name the erased input; a mirror of the log replays the
same; `lineage --client` answers an access request.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("flwr.simulation")
pytest.importorskip("sklearn")

import torch
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
)
from flwr.simulation import run_simulation
from test_flower_sim import backend, data, net

from flchain_plugin import entries as E
from flchain_plugin.blobs import BlobStore, default_root, pack_tensors
from flchain_plugin.commit import commit, log_signer
from flchain_plugin.flower import LedgerStrategy, signing_mod
from flchain_plugin.flower.keys import ledger_key
from flchain_plugin.ledger import Ledger
from flchain_plugin.replay import replay
from flchain_plugin.vault import MAGIC, NONCE_SIZE, UpdateVault

pytestmark = [pytest.mark.flower, pytest.mark.usefixtures("quiet_flower")]

NODES = 4
ROUNDS = 2
OPTS = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_available_nodes": NODES}


def phases() -> dict[str, Any]:
    """Each aggregator of the issue, with non-default parameters the replay must read."""
    return {
        "FedAvg": lambda: FedAvg(**OPTS),
        "FedProx": lambda: FedProx(proximal_mu=0.1, **OPTS),
        "FedAvgM": lambda: FedAvgM(server_learning_rate=0.7, server_momentum=0.9, **OPTS),
        "FedMedian": lambda: FedMedian(**OPTS),
        "FedTrimmedAvg": lambda: FedTrimmedAvg(beta=0.25, **OPTS),
        "Krum": lambda: Krum(num_malicious_nodes=1, **OPTS),
        "MultiKrum": lambda: MultiKrum(num_malicious_nodes=1, num_nodes_to_select=2, **OPTS),
        "DPServerClipOnly": lambda: DifferentialPrivacyServerSideFixedClipping(
            FedAvg(**OPTS), noise_multiplier=0.0, clipping_norm=0.05, num_sampled_clients=NODES),
        "DPServerNoise": lambda: DifferentialPrivacyServerSideFixedClipping(
            FedAvg(**OPTS), noise_multiplier=0.5, clipping_norm=0.05, num_sampled_clients=NODES),
    }


PHASES = list(phases())


def sgd(state: dict[str, Any], x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Minibatch SGD with fresh randomness: no two updates alike, no run like another."""
    torch.set_num_threads(1)
    m = net()
    m.load_state_dict(state)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    rng = np.random.default_rng()
    for _ in range(3):
        idx = rng.choice(len(x), size=16, replace=False)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(torch.from_numpy(x[idx])),
                                          torch.from_numpy(y[idx])).backward()
        opt.step()
    return m.state_dict()


def client_app(keys: Path, server_key: str) -> ClientApp:
    app = ClientApp(mods=[signing_mod(keys, server_key=server_key)])

    @app.train()
    def fit(msg: Message, ctx: Context) -> Message:
        pid = int(ctx.node_config["partition-id"])
        x, y = data(pid, NODES)
        sd = sgd(msg.content["arrays"].to_torch_state_dict(), x, y)
        n = len(x) + pid  # unequal weights, so weighting mistakes show
        return Message(RecordDict({"arrays": ArrayRecord(sd), "metrics": MetricRecord(
            {"num-examples": n, "loss-proxy": float(pid) / 3})}), reply_to=msg)

    return app


def server_app(ledger: Path, done: list[str]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        with Ledger(ledger) as led:
            for name, make in phases().items():
                LedgerStrategy(make(), ledger=led, keep_updates=True).start(
                    grid, ArrayRecord(net().state_dict()), num_rounds=ROUNDS)
                done.append(name)

    return app


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulated run's directory: ledger.db, ledger.db.blobs/, ledger.db.key."""
    tmp = tmp_path_factory.mktemp("replay")
    ledger = tmp / "ledger.db"
    done: list[str] = []
    run_simulation(server_app=server_app(ledger, done),
                   client_app=client_app(tmp / "keys", ledger_key(ledger).verifier_key),
                   num_supernodes=NODES, backend_config=backend(tmp))
    assert done == PHASES, "the ServerApp did not finish"
    return ledger


def copy_run(ledger: Path, to: Path) -> Path:
    """A copy of the ledger, its key and its blob store to alter."""
    for suffix in ("", ".key"):
        shutil.copy(str(ledger) + suffix, str(to / "ledger.db") + suffix)
    shutil.copytree(default_root(ledger), default_root(to / "ledger.db"))
    return to / "ledger.db"


def flchain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flchain_plugin.cli", *args],
                          capture_output=True, text=True, timeout=120)


def models(ledger: Path) -> list[tuple[int, E.Model]]:
    with Ledger(ledger, create=False) as led:
        return [(le.index, le.entry) for le in led.iter_entries(type="model")]


def phase_rounds(report: Any, name: str) -> list[Any]:
    i = PHASES.index(name)
    return report.rounds[i * ROUNDS:(i + 1) * ROUNDS]


@pytest.fixture(scope="module")
def report(run: Path) -> Any:
    with Ledger(run, create=False) as led:
        assert led.verify().ok
        return replay(led, BlobStore(default_root(run)))


@pytest.mark.parametrize("name", PHASES)
def test_replay_recomputes_each_aggregator_bit_for_bit(report: Any, name: str):
    rounds = phase_rounds(report, name)
    assert [r.round for r in rounds] == list(range(1, ROUNDS + 1))
    if name == "DPServerNoise":
        for r in rounds:
            assert r.status == "not_replayable", r
            assert f"clipped aggregate of {NODES} input(s) was recomputed" in r.detail
            assert "as the run's DP parameters predict" in r.detail
    else:
        for r in rounds:
            assert r.status == "ok", r
            assert f"over {NODES} input(s) gives the recorded model bit for bit" in r.detail
    assert report.ok


def test_run_entry_records_the_aggregator_parameters(run: Path):
    with Ledger(run, create=False) as led:
        runs = [le.entry for le in led.iter_entries(type="run")]
    assert len(runs) == len(PHASES)
    params = {r.strategy: r.aggregation["strategy"][0]["params"] for r in runs}
    assert params["FedAvgM"]["server_momentum"] == 0.9
    assert params["FedTrimmedAvg"]["beta"] == 0.25
    assert params["MultiKrum"]["num_nodes_to_select"] == 2
    assert all(r.aggregation["updates"] == "kept" for r in runs)


def test_cli_audit_replay(run: Path):
    res = flchain("--ledger", str(run), "audit", "replay", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["ok"] and doc["counts"]["ok"] == (len(PHASES) - 1) * ROUNDS
    assert doc["counts"]["not_replayable"] == ROUNDS


def _reencrypt(vault: UpdateVault, digest: str, tensors: dict[str, np.ndarray]) -> None:
    """An operator holding the keys swaps an update for other weights, validly encrypted."""
    key = vault.key_path(digest).read_bytes()
    buf = io.BytesIO()
    pack_tensors(buf, tensors)
    nonce = b"\1" * NONCE_SIZE
    sealed = AESGCM(key).encrypt(nonce, buf.getvalue(), MAGIC + bytes.fromhex(digest[7:]))
    vault.path(digest).write_bytes(MAGIC + nonce + sealed)


def test_altered_update_blob_names_the_round(run: Path, tmp_path: Path):
    ledger = copy_run(run, tmp_path)
    index, target = models(ledger)[PHASES.index("FedMedian") * ROUNDS + 1]
    with Ledger(ledger, create=False) as led:
        update = led.get(target.inputs[2]).entry
    vault = UpdateVault(default_root(ledger))
    tensors = vault.get(update.update)
    _reencrypt(vault, update.update, {k: v + np.float32(1e-6) for k, v in tensors.items()})
    res = flchain("--ledger", str(ledger), "audit", "replay")
    assert res.returncode == 1
    assert f"round 2 (entry {index})" in res.stderr and "altered" in res.stderr
    # a flipped ciphertext byte: it no longer decrypts
    data = bytearray(vault.path(update.update).read_bytes())
    data[-20] ^= 1
    vault.path(update.update).write_bytes(bytes(data))
    with Ledger(ledger, create=False) as led:
        first = replay(led, BlobStore(default_root(ledger))).first_problem
    assert (first.round, first.index, first.status) == (2, index, "differs")
    assert "does not decrypt" in first.detail


def test_altered_model_entry_names_the_round(run: Path, tmp_path: Path):
    ledger = copy_run(run, tmp_path)
    index, target = models(ledger)[PHASES.index("FedAvgM") * ROUNDS]
    fake = "sha256:" + "ab" * 32
    with sqlite3.connect(ledger) as db:
        (data,) = db.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
        db.execute("UPDATE entries SET data = ? WHERE idx = ?",
                   (bytes(data).replace(target.model.encode(), fake.encode(), 1), index))
    with Ledger(ledger, create=False) as led:
        report = replay(led, BlobStore(default_root(ledger)))
    first = report.first_problem
    assert (first.run, first.round, first.index, first.status) == (
        target.run, 1, index, "differs")
    assert f"the entry records {fake}" in first.detail and "gives sha256:" in first.detail
    res = flchain("--ledger", str(ledger), "audit", "replay")
    assert res.returncode == 1 and f"round 1 (entry {index})" in res.stderr


def test_a_dp_round_whose_model_is_not_noise_away_from_its_inputs_differs(run: Path,
                                                                          tmp_path: Path):
    """An operator recording another model for a noisy round: the noise hides nothing."""
    ledger = copy_run(run, tmp_path)
    all_models = models(ledger)
    index, target = all_models[PHASES.index("DPServerNoise") * ROUNDS]
    other = all_models[1][1].model  # FedAvg's round-2 model: two rounds away, stored
    with sqlite3.connect(ledger) as db:
        (data,) = db.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
        db.execute("UPDATE entries SET data = ? WHERE idx = ?",
                   (bytes(data).replace(target.model.encode(), other.encode(), 1), index))
    with Ledger(ledger, create=False) as led:
        first = replay(led, BlobStore(default_root(ledger))).first_problem
    assert (first.index, first.status) == (index, "differs")
    assert "not by the DP noise of std" in first.detail


def test_erasure_keeps_the_log_whole(run: Path, tmp_path: Path):
    ledger = copy_run(run, tmp_path)
    vault = UpdateVault(default_root(ledger))
    index, target = models(ledger)[PHASES.index("Krum") * ROUNDS]
    with Ledger(ledger, create=False) as led:  # not the update Krum made the model
        update = next(u for u in (led.get(i).entry for i in target.inputs)
                      if u.update != target.model)
    res = flchain("--ledger", str(ledger), "erase", update.update, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["destroyed"] == ["update"]
    assert not vault.key_path(update.update).exists() and not vault.path(update.update).exists()
    assert flchain("--ledger", str(ledger), "verify").returncode == 0
    again = flchain("--ledger", str(ledger), "erase", update.update)
    assert again.returncode == 2 and "already erased" in again.stderr

    with Ledger(ledger, create=False) as led:
        report = replay(led, BlobStore(default_root(ledger)))
    erased = [r for r in report.rounds if r.status == "erased"]
    assert [(r.index, r.round) for r in erased] == [(index, 1)]
    assert update.update in erased[0].detail and f"node {update.node}" in erased[0].detail
    assert report.ok  # an erasure is reported, not failed; the next round still replays
    assert phase_rounds(report, "Krum")[1].status == "ok"

    # the access request shows the erased update
    res = flchain("--ledger", str(ledger), "lineage", "--client", update.node, "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert len(doc["updates"]) == len(PHASES) * ROUNDS
    by_update = {u["update"]: u for u in doc["updates"]}
    assert by_update[update.update]["stored"].startswith("erased")
    assert by_update[update.update]["models"] == [target.model]
    assert sum(u["stored"] == "kept (encrypted)" for u in doc["updates"]) == len(
        PHASES) * ROUNDS - 1
    assert doc["members"] and doc["members"][0]["key"] == update.key

    # erased model weights: rollback refuses, naming the erasure
    res = flchain("--ledger", str(ledger), "erase", target.model, "--reason", "test")
    assert res.returncode == 0, res.stderr
    res = flchain("--ledger", str(ledger), "rollback", target.model)
    assert res.returncode == 2 and "were erased (erasure entry" in res.stderr
    assert flchain("--ledger", str(ledger), "verify").returncode == 0


def test_replay_from_a_mirror_with_the_blob_store(run: Path, tmp_path: Path):
    from flchain_plugin.mirror import mirror
    from flchain_plugin.tiles_export import export_tiles

    with Ledger(run, create=False) as led:
        export_tiles(led, tmp_path / "tiles")
    mirror(tmp_path / "tiles", tmp_path / "mirror.db", ledger_key(run).verifier_key)
    res = flchain("--ledger", str(tmp_path / "mirror.db"), "audit", "replay", "--json",
                  "--blobs", str(default_root(run)))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["counts"]["ok"] == (len(PHASES) - 1) * ROUNDS


# -- nothing private on the ledger --------------------------------------------------------


def training_needles() -> tuple[list[bytes], set[bytes]]:
    """What a leak of the clients' training data would look like in a file: each example
    as float32 and float64 bytes, and each value written as JSON (JCS) or numpy writes it."""
    rows: set[bytes] = set()
    texts: set[bytes] = set()
    for pid in range(NODES):
        x, _y = data(pid, NODES)
        for row in x:
            rows.add(row.tobytes())
            rows.add(row.astype(np.float64).tobytes())
        for v in np.unique(x):
            for text in (repr(float(v)), str(v)):
                if len(text.lstrip("-")) >= 8:
                    texts.add(text.encode())
    return sorted(rows), texts


NUMBER = re.compile(rb"-?\d+\.\d+(?:e[-+]?\d+)?")


def leaks(paths: list[Path], needles: tuple[list[bytes], set[bytes]]) -> list[tuple[str, bytes]]:
    """Every needle found: rows by substring search, values among the numbers written."""
    rows, texts = needles
    found = []
    for p in paths:
        blob = p.read_bytes()
        found += [(str(p), n[:40]) for n in rows if n in blob]
        found += [(str(p), n) for n in sorted(set(NUMBER.findall(blob)) & texts)]
    return found


def test_privacy_scan_of_the_ledger_and_its_tiles(run: Path, tmp_path: Path):
    from flchain_plugin.tiles_export import export_tiles

    ledger = copy_run(run, tmp_path)
    with Ledger(ledger, create=False) as led:
        export_tiles(led, tmp_path / "tiles")
    files = [ledger, *(p for p in (tmp_path / "tiles").rglob("*") if p.is_file())]
    needles = training_needles()
    assert len(needles[0]) > 400 and len(needles[1]) > 1000 and len(files) > 3
    assert leaks(files, needles) == []

    # the scan can fail: a client metric carrying one training value is found in both
    x, _y = data(0, NODES)
    with Ledger(ledger, create=False) as led:
        commit(led, [E.Evaluation(run="leak", round=1, model="sha256:" + "0" * 64,
                                  metrics={"first_feature": float(x[3, 5])})],
               signer=log_signer(led))
        export_tiles(led, tmp_path / "tiles")
    files = [ledger, *(p for p in (tmp_path / "tiles").rglob("*") if p.is_file())]
    found = {Path(p).name for p, _ in leaks(files, needles)}
    assert "ledger.db" in found and len(found) >= 2, found

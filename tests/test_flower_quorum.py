"""Flower runs held to a witness quorum: 3 `flchain witness serve` processes, quorum 2.

On the real simulation engine (ServerApp + ClientApps over Ray): with all witnesses up and
with one down the run completes and every checkpoint the server signed is stored with at
least 2 valid cosignatures, which every client checked before training; with two down
the run stops with QuorumError within the configured bound, before any client trained.
A tiles export kept by the strategy ends at the ledger's latest (cosigned) checkpoint.
A server that forks its log cannot get the fork cosigned, and clients that require the
quorum refuse it when it is announced without.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("flwr.simulation")
pytest.importorskip("sklearn")
pytest.importorskip("flchain_plugin.witness_http", reason="the witness server (branch witness)")

from flwr.app import ArrayRecord, Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from test_flower_checks import LoopbackGrid, initial, make_app, server_identity
from test_flower_sim import backend, honest_client, net
from witness_servers import dead_url, witnesses

from flchain_plugin import entries as E
from flchain_plugin.flower import LedgerStrategy, ledger_key, signing_mod
from flchain_plugin.ledger import Ledger
from flchain_plugin.notes import Verifier
from flchain_plugin.quorum import QuorumError, Witnesses, verify_quorum

pytestmark = [pytest.mark.flower, pytest.mark.usefixtures("quiet_flower")]

NODES = 3
ROUNDS = 2
SCENARIOS = ("all-up", "one-down", "two-down", "fork")
BOUND = {"timeout": 1.0, "retries": 1, "backoff": 0.1, "deadline": 3.0}

_ = server_identity  # the LoopbackGrid test needs Flower's task identity set


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    """A ledger key per scenario (witnesses keep state per log) and three witnesses."""
    root = tmp_path_factory.mktemp("quorum")
    ledgers = {s: root / s / "ledger.db" for s in SCENARIOS}
    for path in ledgers.values():
        path.parent.mkdir()
    vkeys = [ledger_key(p).verifier_key for p in ledgers.values()]
    with witnesses(root / "witnesses", ["w0.test", "w1.test", "w2.test"], vkeys) as procs:
        yield ledgers, procs


def client_app(keys: Path, witness_keys: list[str]) -> ClientApp:
    return honest_client([signing_mod(keys, witness_keys=witness_keys, quorum=2)], NODES)


def server_app(ledger: Path, witnessed: Witnesses, tiles: Path,
               result: dict[str, Any]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = LedgerStrategy(FedAvg(fraction_train=1.0, fraction_evaluate=0.0,
                                         min_available_nodes=NODES), ledger=ledger,
                                  witnesses=witnessed, tiles=tiles)
        t0 = time.monotonic()
        try:
            strategy.start(grid, ArrayRecord(net().state_dict()), num_rounds=ROUNDS)
        except QuorumError as e:
            result.update(error=str(e), reasons=e.reasons, seconds=time.monotonic() - t0)
            raise
        result.update(model=strategy.global_model, vkey=strategy.verifier_key)

    return app


def simulate(ledger: Path, urls: list[str], procs: list) -> dict[str, Any]:
    cfg = Witnesses(tuple(zip(urls, [p.vkey for p in procs], strict=True)), 2, **BOUND)
    result: dict[str, Any] = {}
    try:
        run_simulation(server_app=server_app(ledger, cfg, ledger.parent / "tiles", result),
                       client_app=client_app(ledger.parent / "keys", [p.vkey for p in procs]),
                       num_supernodes=NODES, backend_config=backend(ledger.parent))
    except Exception as e:  # what run_simulation passes on from the ServerApp
        result.setdefault("raised", e)
    return result


def assert_witnessed_run(ledger: Path, result: dict[str, Any], procs: list) -> None:
    assert "model" in result, result
    log = Verifier.parse(result["vkey"])
    keys = [p.vkey for p in procs]
    with Ledger(ledger, create=False) as led:
        assert led.verify().ok
        assert not list(led.iter_entries(type="rejected"))  # every client accepted
        updates = [le.entry for le in led.iter_entries(type="update")]
        assert sorted(u.round for u in updates) == [r for r in range(1, ROUNDS + 1)
                                                    for _ in range(NODES)]
        cosigned: dict[int, tuple[str, ...]] = {}
        for size, note in led.store.checkpoints():
            try:
                cosigned[size] = verify_quorum(note, log, keys, 2).cosigners
            except QuorumError:
                continue  # the log's own note, stored before the witnesses answered
        assert set(cosigned) == set(led.checkpoint_sizes(100))  # every signed size
        latest = led.latest_checkpoint()
        assert (ledger.parent / "tiles" / "checkpoint").read_text() == latest
        assert len(verify_quorum(latest, log, keys, 2).cosigners) >= 2


def test_a_run_with_three_witnesses_and_quorum_two(setup):
    ledgers, procs = setup
    ledger = ledgers["all-up"]
    result = simulate(ledger, [p.url for p in procs], procs)
    assert_witnessed_run(ledger, result, procs)


def test_a_run_with_one_witness_down_still_completes(setup):
    ledgers, procs = setup
    ledger = ledgers["one-down"]
    result = simulate(ledger, [procs[0].url, procs[1].url, dead_url()], procs)
    assert_witnessed_run(ledger, result, procs)


def test_a_run_with_two_witnesses_down_stops_with_the_quorum_error(setup):
    ledgers, procs = setup
    ledger = ledgers["two-down"]
    result = simulate(ledger, [procs[0].url, dead_url(), dead_url()], procs)
    assert "model" not in result and isinstance(result["raised"], QuorumError)
    assert result["seconds"] < BOUND["deadline"] + 1.5
    assert "1 of 3 witnesses cosigned, the quorum is 2" in result["error"]
    assert "stopping rather than announcing an unwitnessed checkpoint" in result["error"]
    assert set(result["reasons"]) == {"w1.test", "w2.test"}
    with Ledger(ledger, create=False) as led:  # the run entry is logged; nobody trained
        assert [le.entry.TYPE for le in led.iter_entries()] == ["run"]
        assert not list(led.iter_entries(type="update"))


def test_the_demo_stops_with_one_line_when_the_quorum_fails(tmp_path: Path, setup):
    _, procs = setup
    demo = Path(__file__).resolve().parents[1] / "examples" / "federated_demo.py"
    proc = subprocess.run([sys.executable, str(demo), "--out", str(tmp_path / "demo"),
                           "--rounds", "1", "--clients", "5", "--witness", dead_url(),
                           procs[0].vkey, "--quorum", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert re.match(r"flchain: the run stopped: checkpoint of size \d+: 0 of 1 witnesses "
                    r"cosigned, the quorum is 1", last), proc.stderr[-2000:]
    assert "w0.test:" in last and "unreachable" in last
    assert "Traceback" not in proc.stdout + proc.stderr
    with Ledger(tmp_path / "demo" / "ledger.db", create=False) as led:
        assert not list(led.iter_entries(type="update"))  # nobody trained


def test_a_forked_log_is_not_witnessed_and_clients_refuse_it(setup):
    ledgers, procs = setup
    a = ledgers["fork"]
    keys = [p.vkey for p in procs]
    cfg = Witnesses(tuple((p.url, p.vkey) for p in procs), 2, **BOUND)
    grid = LoopbackGrid(make_app(a.parent / "keys", witness_keys=keys, quorum=2), NODES)
    opts = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_available_nodes": NODES}
    LedgerStrategy(FedAvg(**opts), ledger=a, witnesses=cfg).start(grid, initial(), num_rounds=1)
    with Ledger(a, create=False) as led:
        assert len(list(led.iter_entries(type="update"))) == NODES  # clients pinned it
        origin, size = led.origin, led.size

    b = a.parent / "fork.db"  # the same origin and key, another history beyond `size`
    shutil.copy(a.parent / "ledger.db.key", a.parent / "fork.db.key")
    with Ledger(b, origin=origin) as fork:
        fork.append([E.Erasure(blob=f"sha256:{i:064x}", reason="fork") for i in range(size)])
    with pytest.raises(QuorumError) as err:
        LedgerStrategy(FedAvg(**opts), ledger=b, witnesses=cfg).start(grid, initial(),
                                                                      num_rounds=1)
    assert all("422" in why for why in err.value.reasons.values()), err.value.reasons
    out = subprocess.run([sys.executable, "-m", "flchain_plugin.cli", "witness", "evidence",
                          "--state", str(procs[0].state), "--json"],
                         capture_output=True, text=True, check=True)
    assert any(e["origin"] == origin for e in json.loads(out.stdout)["evidence"])

    # The operator drops the witnesses: clients that require the quorum refuse the fork.
    LedgerStrategy(FedAvg(**opts), ledger=b).start(grid, initial(), num_rounds=1)
    with Ledger(b, create=False) as fork:
        refused = [le.entry for le in fork.iter_entries(type="rejected")]
        assert len(refused) == NODES and not list(fork.iter_entries(type="update"))
        assert all("the checkpoint is not witnessed" in r.detail for r in refused)

"""LedgerStrategy on Flower's deployment engine: SuperLink and SuperNodes as separate
processes on loopback, TLS, SuperNode authentication, the app in examples/flower-app
started with `flwr run`, unchanged from its simulation runs (tests/flower_federation.py
has the harness; integrations/flower-deployment/run.sh runs this file on its own).

The engine test (about 2-4 minutes, most of it the SuperLink's 60 s heartbeat window),
the ledger on PostgreSQL (tests/postgres_server.py's server, a database of its own):
three registered SuperNodes sign with keys named in their `--node-config`; a fourth,
with a key nobody registered, is turned away; one SuperNode is killed with SIGKILL while
it trains in round 2, and the round still ends, records that node's missing answer, and
aggregates the other two. The run's status comes from `flwr list`, the ledger is checked
with `flchain verify`.

The fast tests drive what the Flower edge does with a lost node without the engine: an
instruction nobody answered, and the SuperLink's error reply (from node 1) mapped to the
node through the instruction it answers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flower_federation import Federation, program
from flwr.app import Error, Message
from flwr.serverapp.strategy import FedAvg
from postgres_server import drop_database, new_database
from test_flower_checks import LoopbackGrid, initial, make_app, server_identity  # noqa: F401
from witness_servers import WitnessProcess, start_witness

from flchain_plugin.flower import LedgerStrategy
from flchain_plugin.ledger import Ledger
from flchain_plugin.notes import generate_key, save_private_key

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "flower-app"
SUPERLINK = 1  # the node id Flower gives the SuperLink


# -- the Flower edge, without the engine ------------------------------------------------------


class GoneGrid(LoopbackGrid):
    """Node `gone` never answers round 2: `mode` "silent" leaves its instruction
    unanswered (a reply lost, the round timed out); "superlink" has the SuperLink answer
    for it with NODE_UNAVAILABLE (code 5) from node 1, as Flower does once the node
    missed its heartbeats."""

    def __init__(self, app: Any, nodes: int, mode: str) -> None:
        super().__init__(app, nodes)
        self.gone, self.mode = self.ids[2], mode

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        messages = list(messages)
        round2 = bool(messages) and int(messages[0].content["config"]["server-round"]) == 2
        lost = [m for m in messages if round2 and m.metadata.dst_node_id == self.gone]
        replies = list(super().send_and_receive(
            [m for m in messages if m not in lost], timeout=timeout))
        if self.mode == "superlink":
            for m in lost:
                err = Message(Error(5, "Node is unavailable"), reply_to=m)
                err.metadata.__dict__["_src_node_id"] = SUPERLINK
                replies.append(err)
        return replies


@pytest.mark.parametrize("mode", ["silent", "superlink"])
def test_a_node_lost_mid_run_is_recorded_and_the_run_goes_on(tmp_path: Path, mode: str):
    grid = GoneGrid(make_app(tmp_path / "keys"), 3, mode)
    strategy = LedgerStrategy(
        FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=2,
               min_train_nodes=2), ledger=tmp_path / "ledger.db")
    strategy.start(grid, initial(), num_rounds=3)
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        refused = [le.entry for le in led.iter_entries(type="rejected")]
        models = {le.entry.round: le.entry for le in led.iter_entries(type="model")}
        assert led.verify().ok
    assert [(r.round, r.node, r.reason) for r in refused] == [
        (2, str(grid.gone), "client_error")]
    if mode == "silent":
        assert refused[0].detail.startswith(
            f"no_error: no reply from node {grid.gone} to train instruction ")
        assert "by the round's timeout" in refused[0].detail
    else:
        assert refused[0].detail.startswith(
            f"no_error: the SuperLink answered for node {grid.gone}: error code 5 "
            "(NODE_UNAVAILABLE) to instruction ")
    assert [len(models[r].inputs) for r in (1, 2, 3)] == [3, 2, 3]  # the run went on
    assert models[2].model != models[1].model


def test_a_client_error_names_its_code(tmp_path: Path):
    def fail(pid: int, rnd: int, msg: Message, ctx: Any, signed: Any) -> Message:
        if pid == 0:
            return Message(Error(2, "ValueError: boom"), reply_to=msg)
        return signed(msg, ctx)

    grid = LoopbackGrid(make_app(tmp_path / "keys", fail), 2)
    LedgerStrategy(FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=2,
                          min_train_nodes=1), ledger=tmp_path / "ledger.db").start(
        grid, initial(), num_rounds=1)
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        (refused,) = [le.entry for le in led.iter_entries(type="rejected")]
    assert refused.node == str(grid.ids[0])
    assert refused.detail == ("no_error: error code 2 (CLIENT_APP_RAISED_EXCEPTION): "
                              "ValueError: boom")


# -- the deployment engine ----------------------------------------------------------------------


def _need(program: str, package: str) -> None:
    if shutil.which(program) is None:
        why = f"{program} not found: install {package} (apt-get install {package})"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


def _wait(what: str, check: Any, timeout: float, fed: Any) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"{what} after {timeout} s\n{fed.logs()}")


def _entries(ledger: str, type_: str) -> list[Any]:
    with Ledger(ledger, create=False) as led:
        return [le.entry for le in led.iter_entries(type=type_)]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, postgres_server: str
               ) -> Iterator[dict[str, Any]]:
    """A 2-round run of examples/flower-app on a TLS, node-authenticated federation of
    three SuperNodes (one killed mid-round 2) and a stranger with an unregistered key;
    the ledger on PostgreSQL, its checkpoint key a file the operator made; every
    checkpoint cosigned by two witnesses, each a `flchain witness serve` process."""
    _need("ssh-keygen", "openssh-client")
    root = tmp_path_factory.mktemp("deployment")
    fed = Federation(root)
    ledger = new_database(postgres_server)
    with Ledger(ledger) as led:
        signer = generate_key(led.origin)
    save_private_key(signer, root / "log.key", None)
    fed.server_key = signer.verifier_key  # what every SuperNode pins
    witnesses: list[WitnessProcess] = []
    try:
        witnesses = [start_witness(root / "witnesses", f"w{i}.witness.example",
                                   [signer.verifier_key]) for i in (1, 2)]
        fed.start_superlink()
        nodes = [fed.new_node(f"node{i}", i) for i in range(3)]
        stranger = fed.new_node("stranger", 3)
        for n in nodes:
            fed.register(n)
        allowed = root / "allowed-keys.txt"
        allowed.write_text("".join(f"{n.vkey}\n" for n in nodes))
        for n in [*nodes, stranger]:
            fed.start_node(n)
        _wait("the three SuperNodes are not all connected",
              lambda: all("SuperNode ID:" in n.log.read_text(errors="replace")
                          for n in nodes), 120, fed)
        run_id = fed.run(APP, f'ledger="{ledger}" ledger-key="{root / "log.key"}" '
                              f'blobs="{root / "blobs"}" data-dir="{root / "data"}" '
                              f'policy-allowed-keys="{allowed}" num-server-rounds=2 '
                              'min-nodes=2 fraction-evaluate=0.0 round-timeout=240.0 '
                              'witnesses="' + ";".join(f"{w.url} {w.vkey}" for w in witnesses)
                              + '" quorum=2')
        victim = nodes[2]
        _wait("node2 never got its round-2 instruction",
              lambda: victim.log.read_text(errors="replace").count(
                  "Receiving: train message") >= 2, 240, fed)
        victim.kill()  # mid-round: it holds the instruction and trains
        row = fed.wait_finished(run_id, 300)
        yield {"fed": fed, "ledger": ledger, "nodes": nodes, "stranger": stranger,
               "row": row, "run": run_id, "root": root, "witnesses": witnesses}
    finally:
        fed.stop()
        for w in witnesses:
            w.stop()
        drop_database(ledger, postgres_server)


@pytest.mark.timeout(600)
def test_the_run_completes_and_the_ledger_verifies(deployment: dict[str, Any]):
    row, ledger = deployment["row"], deployment["ledger"]
    assert row["status"] == "finished:completed", (row, deployment["fed"].logs())
    done = subprocess.run([program("flchain"), "--ledger", ledger, "--json", "verify",
                           "--key-verifier", deployment["fed"].server_key],
                          capture_output=True, text=True, env=deployment["fed"].env())
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["ok"] and report["head_signed"], done.stdout
    (run,) = _entries(ledger, "run")
    assert run.run == str(deployment["run"])
    models = {m.model for m in _entries(ledger, "model")}
    stored = {f.name for f in (deployment["root"] / "blobs").rglob("*.npz")}
    assert len(models) == 2 and {m.removeprefix("sha256:") + ".npz" for m in models} <= stored
    assert run.policy["keys"] != "tofu"  # the allow-list file of the run config


@pytest.mark.timeout(600)
def test_each_registered_node_signs_with_the_key_its_node_config_names(
        deployment: dict[str, Any]):
    ledger, nodes = deployment["ledger"], deployment["nodes"]
    members = {m.key: m.node for m in _entries(ledger, "member")}
    assert set(members) == {n.vkey for n in nodes}
    round1 = [u for u in _entries(ledger, "update") if u.round == 1]
    assert sorted(u.key for u in round1) == sorted(n.vkey for n in nodes)
    assert all(u.signature for u in round1)


@pytest.mark.timeout(600)
def test_a_node_killed_mid_round_is_recorded_and_the_run_goes_on(deployment: dict[str, Any]):
    ledger, nodes = deployment["ledger"], deployment["nodes"]
    node_of = {m.key: m.node for m in _entries(ledger, "member")}
    victim = node_of[nodes[2].vkey]
    refused = _entries(ledger, "rejected")
    assert [(r.round, r.node, r.reason) for r in refused] == [(2, victim, "client_error")]
    detail = refused[0].detail
    assert (detail.startswith(f"no_error: the SuperLink answered for node {victim}: "
                              "error code 5 (NODE_UNAVAILABLE)")
            or detail.startswith(f"no_error: no reply from node {victim} to train ")), detail
    models = {m.round: m for m in _entries(ledger, "model")}
    assert sorted(models) == [1, 2]
    assert len(models[1].inputs) == 3 and len(models[2].inputs) == 2
    round2 = {u.key for u in _entries(ledger, "update") if u.round == 2}
    assert round2 == {nodes[0].vkey, nodes[1].vkey}


@pytest.mark.timeout(600)
def test_a_supernode_with_an_unregistered_key_is_kept_out(deployment: dict[str, Any]):
    stranger = deployment["stranger"]
    assert stranger.proc is not None and stranger.proc.poll() not in (None, 0)
    log = stranger.log.read_text(errors="replace")
    assert "[code: 2004]" in log and "Exit Code: 305" in log, log[-2000:]
    keys = {u.key for u in _entries(deployment["ledger"], "update")}
    assert stranger.vkey not in keys and len(keys) == 3


@pytest.mark.timeout(600)
def test_every_round_is_cosigned_by_the_witness_processes(deployment: dict[str, Any],
                                                          tmp_path: Path):
    """The ServerApp announced only checkpoints that both witnesses cosigned after checking
    consistency; an auditor holding the three keys checks the quorum from the ledger."""
    fed, ledger = deployment["fed"], deployment["ledger"]
    run = lambda *a: subprocess.run([program("flchain"), "--ledger", ledger, *a],  # noqa: E731
                                    capture_output=True, text=True, env=fed.env())
    latest = run("checkpoint", "latest")
    assert latest.returncode == 0, latest.stderr
    note = tmp_path / "latest.note"
    note.write_text(latest.stdout)
    assert latest.stdout.count(".witness.example ") == 2, latest.stdout
    args = ["checkpoint", "verify", str(note), "--key-verifier", fed.server_key, "--quorum", "2"]
    for w in deployment["witnesses"]:
        args += ["--witness-verifier", w.vkey]
    done = run(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    with Ledger(ledger, create=False) as led:  # the last round's batch is what was cosigned
        (last,) = [le.index for le in led.iter_entries(type="model") if le.entry.round == 2]
        assert int(latest.stdout.splitlines()[1]) > last


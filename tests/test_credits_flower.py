"""One real Flower simulation paying credits: six clients with different data sizes, one
late, one label-flipped, one refused in round 2 (a signature by another key). Credits must
follow each rule, conserve every round's budget, replay identically, and an edited credit
entry (the SQLite file rewritten and rehashed, as a hostile operator would) must make
replay fail naming it."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("flwr.simulation")
pytest.importorskip("sklearn")

import torch
from click.testing import CliRunner
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from test_flower_sim import backend, data, local_train, net, node_map
from test_ledger_tamper import rehash

from flchain_plugin import entries as E
from flchain_plugin.blobs import BlobStore
from flchain_plugin.cli.root import cli
from flchain_plugin.contracts import (
    Contracts,
    Penalties,
    Quality,
    Quantity,
    Timeliness,
    Validation,
    balances,
    replay_credits,
)
from flchain_plugin.digest import model_digest
from flchain_plugin.flower import LedgerStrategy, signing_mod
from flchain_plugin.flower.protocol import STATEMENT_RECORD, read_statement, statement_record
from flchain_plugin.ledger import Ledger
from flchain_plugin.notes import generate_key

pytestmark = [pytest.mark.flower, pytest.mark.usefixtures("quiet_flower")]

NODES, ROUNDS, BUDGET = 6, 3, 1_000_000
SIZES = {0: 40, 1: 90, 2: 150, 3: 90, 4: 90, 5: 60}
LATE, FLIPPED, REFUSED = 3, 4, 5


def shard(pid: int) -> tuple[np.ndarray, np.ndarray]:
    """Client `pid`'s own slice of the training data, SIZES[pid] rows."""
    x, y = data(0, 1)
    start = sum(SIZES[p] for p in range(pid))
    x, y = x[start:start + SIZES[pid]], y[start:start + SIZES[pid]]
    return (x, 1 - y) if pid == FLIPPED else (x, y)


def minus_loss(model: Any, d: Any) -> float:
    """The server's metric: minus the cross-entropy on its validation set."""
    torch.set_num_threads(1)
    m = net()
    m.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in model.items()})
    with torch.no_grad():
        out = m(torch.from_numpy(d["x"]))
        return -float(torch.nn.functional.cross_entropy(out, torch.from_numpy(d["y"])))


def validation() -> Validation:
    """The server-held validation set (what an auditor names with --validation)."""
    x, y = data(-1, 1)
    return Validation({"x": x, "y": y}, minus_loss)


def contracts() -> Contracts:
    val = validation()
    return Contracts([Quantity(), Timeliness(), (Quality(val, "gtg-shapley"), 2),
                      Quality(val, "loo"), Penalties()], BUDGET)


def client_app(out: Path, keys: Path) -> ClientApp:
    signer = signing_mod(keys)

    def roles(msg: Message, ctx: Context, call_next: Any) -> Message:
        pid = int(ctx.node_config["partition-id"])
        (out / "nodes").mkdir(exist_ok=True)
        (out / "nodes" / str(pid)).write_text(str(ctx.node_id))
        reply = signer(msg, ctx, call_next)
        if (pid == REFUSED and msg.metadata.message_type == "train" and not reply.has_error()
                and int(msg.content["config"]["server-round"]) == 2):
            st = read_statement(reply.content).statement
            reply.content[STATEMENT_RECORD] = statement_record(st.sign(generate_key("c5")))
        return reply

    app = ClientApp(mods=[roles])

    @app.train()
    def fit(msg: Message, ctx: Context) -> Message:
        pid = int(ctx.node_config["partition-id"])
        done = out / "trained" / str(msg.content["config"]["server-round"])
        done.mkdir(parents=True, exist_ok=True)
        if pid == LATE:  # late: replies after every other client of the round has trained
            deadline = time.monotonic() + 60
            while len(list(done.iterdir())) < NODES - 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
        x, y = shard(pid)
        sd, _ = local_train(msg.content["arrays"].to_torch_state_dict(), x, y)
        (done / str(pid)).touch()
        return Message(RecordDict({"arrays": ArrayRecord(sd), "metrics": MetricRecord(
            {"num-examples": len(x)})}), reply_to=msg)

    return app


def server_app(ledger: Path, result: dict[str, Any]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = LedgerStrategy(FedAvg(fraction_train=1.0, fraction_evaluate=0.0,
                                         min_available_nodes=NODES), ledger=ledger,
                                  contracts=contracts())
        strategy.start(grid, ArrayRecord(net().state_dict()), num_rounds=ROUNDS)
        result["run"] = strategy.run_id

    return app


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    tmp = tmp_path_factory.mktemp("credits-sim")
    result: dict[str, Any] = {}
    run_simulation(server_app=server_app(tmp / "ledger.db", result),
                   client_app=client_app(tmp, tmp / "keys"), num_supernodes=NODES,
                   backend_config=backend(tmp))
    assert result, "the ServerApp did not finish"
    return tmp / "ledger.db", node_map(tmp)


def by_rule(entries: list[E.Entry], rnd: int, rule: str, pid: dict[str, int]) -> dict[int, int]:
    return {pid[e.node]: e.amount for e in entries
            if isinstance(e, E.Credit) and e.round == rnd and e.rule == rule}


def test_credits_follow_each_rule_and_conserve_the_budget(simulated: Any) -> None:
    path, pid = simulated
    with Ledger(path, create=False) as led:
        assert led.verify().ok
        logged = list(led.iter_entries())
        heads = sorted(h.size for h in led.heads())
    entries = [le.entry for le in logged]
    run = next(e for e in entries if isinstance(e, E.Run))
    assert run.contracts == contracts().describe()
    refused = {(e.round, pid[e.node]): e.reason for e in entries if isinstance(e, E.Rejected)}
    assert refused == {(2, REFUSED): "bad_signature"}
    for rnd in range(1, ROUNDS + 1):
        model = next(le for le in logged if isinstance(le.entry, E.Model)
                     and le.entry.round == rnd)
        credits = [le for le in logged if isinstance(le.entry, E.Credit) and le.entry.round == rnd]
        # in the round's batch, right after the model entry
        assert [le.index for le in credits] == list(range(model.index + 1,
                                                          model.index + 1 + len(credits)))
        end = next(s for s in heads if s > model.index)
        assert credits[-1].index < end and end == credits[-1].index + 1
        assert sum(le.entry.amount for le in credits) == BUDGET
        quantity = by_rule(entries, rnd, "quantity", pid)
        honest = [p for p in (0, 1, 2) if p in quantity]
        assert [quantity[p] for p in honest] == sorted(quantity[p] for p in honest)
        assert quantity[0] < quantity[1] < quantity[2]  # 40 < 90 < 150 examples
        timely = by_rule(entries, rnd, "timeliness", pid)
        assert timely[LATE] == min(timely.values())  # arrived last
        for rule in ("quality-gtg-shapley", "quality-loo"):
            quality = by_rule(entries, rnd, rule, pid)
            assert quality.get(FLIPPED, 0) < min(quality.get(p, 0) for p in (1, 2))
    # refused in round 2: nothing then, and round 3's share forfeited (bad_signature: 0)
    for rnd in (2, 3):
        mine = [e for e in entries if isinstance(e, E.Credit) and e.round == rnd
                and pid[e.node] == REFUSED]
        assert mine and all(e.amount == 0 and e.rule == "penalty" for e in mine)
    assert by_rule(entries, 1, "quantity", pid)[REFUSED] > 0
    with Ledger(path, create=False) as led:
        assert sum(balances(led).values()) == ROUNDS * BUDGET


def test_replay_is_identical(simulated: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = simulated
    with Ledger(path, create=False) as led:
        report = replay_credits(led, BlobStore(str(path) + ".blobs"), validation=validation())
    assert report.ok, report.differences
    assert report.rounds == ROUNDS and report.credits > 3 * ROUNDS
    # the server stores each update under the digest verification computed, unhashed:
    # every accepted update is there and its tensors hash to that name
    store = BlobStore(str(path) + ".blobs")
    with Ledger(path, create=False) as led:
        updates = [le.entry.update for le in led.iter_entries(type="update")]  # type: ignore[attr-defined]
    assert updates and all(model_digest(store.get(d, check=False)) == d for d in updates)
    monkeypatch.chdir(Path(__file__).parent)
    r = CliRunner().invoke(cli, ["--ledger", str(path), "credits", "--replay", "--validation",
                                 "test_credits_flower:validation", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["replay"]["ok"] is True


def test_an_edited_credit_entry_fails_replay_naming_it(simulated: Any, tmp_path: Path) -> None:
    """The operator moves one token from one client to another in round 2 (the budget
    still adds up), rewrites the row and rehashes the whole tree and heads."""
    path, _ = simulated
    copy = tmp_path / "ledger.db"
    src, dst = sqlite3.connect(path), sqlite3.connect(copy)
    src.backup(dst)  # the WAL's committed pages too
    src.close()
    dst.close()
    shutil.copytree(str(path) + ".blobs", str(copy) + ".blobs")
    with Ledger(copy, create=False) as led:
        credits = [le for le in led.iter_entries(type="credit")
                   if le.entry.round == 2 and le.entry.amount > 0]
    a, b = credits[0], credits[1]
    c = sqlite3.connect(copy)
    with c:
        for le, delta in ((a, -1), (b, +1)):
            forged = dataclasses.replace(le.entry, amount=le.entry.amount + delta)
            c.execute("UPDATE entries SET data = ? WHERE idx = ?", (forged.encode(), le.index))
        rehash(c, rewrite_heads=True)
    c.close()
    with Ledger(copy, create=False) as led:
        report = replay_credits(led, BlobStore(str(copy) + ".blobs"), validation=validation())
    assert not report.ok
    first = report.differences[0]
    assert (first.index, first.round, first.node, first.rule) == (
        a.index, 2, a.entry.node, a.entry.rule)
    assert first.recorded == a.entry.amount - 1 and first.expected == a.entry.amount
    r = CliRunner().invoke(cli, ["--ledger", str(copy), "credits", "--replay", "--validation",
                                 "test_credits_flower:validation"])
    assert r.exit_code == 1
    assert f"round 2 node {a.entry.node} rule {a.entry.rule} (entry {a.index})" in r.output

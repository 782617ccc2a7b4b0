"""Real Flower runs (simulation engine: ServerApp + ClientApps over Ray) with LedgerStrategy.

One run of ten SuperNodes whose roles come from their partition id: four honest clients and
six that misbehave in a different way each round (replaying, stale, altered after signing,
unsigned, broken, forging). Every refusal must carry its reason code, the honest updates
must be aggregated bit for bit as plain FedAvg would, training must converge, the ledger
must verify and the final model's lineage must list exactly the accepted updates.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("flwr.simulation")
pytest.importorskip("sklearn")

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from sklearn.datasets import load_breast_cancer

from flchain_plugin import entries as E
from flchain_plugin.digest import model_digest
from flchain_plugin.flower import LedgerStrategy, client_key, signing_mod
from flchain_plugin.flower.arrays import arrayrecord_digest
from flchain_plugin.flower.protocol import STATEMENT_RECORD, read_statement, statement_record
from flchain_plugin.ledger import Ledger
from flchain_plugin.lineage import lineage
from flchain_plugin.notes import generate_key

pytestmark = [pytest.mark.flower, pytest.mark.usefixtures("quiet_flower")]

NODES = 10
ROUNDS = 3
HONEST = {0, 1, 2, 3}
EXPECTED_REFUSALS = {
    (1, 6): "digest_mismatch", (1, 7): "unsigned", (1, 8): "non_finite",
    (2, 4): "replay", (2, 5): "stale_parent", (2, 6): "digest_mismatch", (2, 7): "unsigned",
    (2, 8): "malformed", (2, 9): "bad_signature",
    (3, 4): "replay", (3, 5): "stale_parent", (3, 6): "digest_mismatch", (3, 7): "unsigned",
    (3, 8): "client_error", (3, 9): "wrong_round",
}
EXPECTED_ACCEPTED = {1: HONEST | {4, 5, 9}, 2: HONEST, 3: HONEST}


# -- the task ------------------------------------------------------------------------------


def data(partition: int, partitions: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(1).permutation(len(x))
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    if partition < 0:
        return x[:100], y[:100]
    return x[100:][partition::partitions], y[100:][partition::partitions]


def net() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def local_train(state: dict[str, Any], x: np.ndarray, y: np.ndarray) -> tuple[dict, float]:
    torch.set_num_threads(1)
    m = net()
    m.load_state_dict(state)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    loss = torch.tensor(0.0)
    for _ in range(10):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
    return m.state_dict(), float(loss.detach())


def honest_client(mods: list[Any], nodes: int) -> ClientApp:
    """Clients that train on their strided share of `nodes` and report its size, behind
    `mods` (the plugin's signing_mod, or a mod choosing one per partition)."""
    app = ClientApp(mods=mods)

    @app.train()
    def fit(msg: Message, ctx: Context) -> Message:
        x, y = data(int(ctx.node_config["partition-id"]), nodes)
        sd, _loss = local_train(msg.content["arrays"].to_torch_state_dict(), x, y)
        return Message(RecordDict({"arrays": ArrayRecord(sd), "metrics": MetricRecord(
            {"num-examples": len(x)})}), reply_to=msg)

    return app


def accuracy(arrays: ArrayRecord) -> tuple[float, float]:
    m = net()
    m.load_state_dict(arrays.to_torch_state_dict())
    x, y = data(-1, 1)
    with torch.no_grad():
        out = m(torch.from_numpy(x))
        loss = float(torch.nn.functional.cross_entropy(out, torch.from_numpy(y)))
    return loss, float((out.argmax(1).numpy() == y).mean())


class RecordingGrid(Grid):
    """The real grid, plus a deep copy of every train reply as it arrived (before any
    strategy touched it), to recompute aggregations independently."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.train_replies: list[list[Message]] = []

    def set_run(self, run: Any) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Any:
        return self.grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        msgs = list(messages)
        replies = list(self.grid.send_and_receive(msgs, timeout=timeout))
        if msgs and msgs[0].metadata.message_type == "train":
            self.train_replies.append([copy.deepcopy(r) for r in replies])
        return replies


def backend(tmp: Path) -> dict[str, Any]:
    return {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"logging_level": logging.ERROR, "log_to_driver": False,
                          "include_dashboard": False}}


def node_map(out: Path) -> dict[str, int]:
    """node id (as the ledger writes it) -> partition id, as the clients reported."""
    return {p.read_text(): int(p.name) for p in (out / "nodes").iterdir()}


# -- the adversarial run ---------------------------------------------------------------------


def adversarial_client_app(out: Path, keys: Path) -> ClientApp:
    signer = signing_mod(keys)

    def resign(reply: Message, key: Any, **changes: Any) -> None:
        rc = reply.content
        st = dataclasses.replace(read_statement(rc).statement, **changes)
        rc[STATEMENT_RECORD] = statement_record(st.sign(key))

    def roles(msg: Message, ctx: Context, call_next: Any) -> Message:
        pid = int(ctx.node_config["partition-id"])
        (out / "nodes").mkdir(exist_ok=True)
        (out / "nodes" / str(pid)).write_text(str(ctx.node_id))
        if pid == 7:  # never signs
            return call_next(msg, ctx)
        if msg.metadata.message_type != "train":
            return signer(msg, ctx, call_next)
        rnd = int(msg.content["config"]["server-round"])
        if pid == 5:  # stale: trains again from the round-1 model it kept
            if rnd == 1:
                ctx.state["r1-arrays"] = msg.content["arrays"]
                ctx.state["r1-config"] = ConfigRecord(dict(msg.content["config"]))
            else:
                cfg = ConfigRecord(dict(ctx.state["r1-config"]))
                cfg["server-round"] = cfg["flchain-round"] = rnd
                msg.content = RecordDict({"arrays": ctx.state["r1-arrays"], "config": cfg})
                del ctx.state["flchain"]  # a restarted client that lost its pins
        reply = signer(msg, ctx, call_next)
        if reply.has_error():
            return reply
        rc = reply.content
        if pid == 4 and rnd == 1:
            ctx.state["r1"] = rc["arrays"]
            ctx.state["nonce"] = ConfigRecord({"nonce": read_statement(rc).statement.nonce})
        if pid == 4 and rnd == 3:  # a fresh update under an old nonce
            resign(reply, client_key(keys, 4), nonce=ctx.state["nonce"]["nonce"])
        if pid == 6 and rnd < 3:  # altered in transit, after signing
            sd = rc["arrays"].to_torch_state_dict()
            sd["2.bias"] += 0.5
            rc["arrays"] = ArrayRecord(sd)
        if pid == 6 and rnd == 3:  # claims 100x its weight after signing
            rc["metrics"]["num-examples"] = int(rc["metrics"]["num-examples"]) * 100
        if pid == 9 and rnd == 2:  # signs with a key that is not the one it registered
            resign(reply, generate_key("client-9"))
        if pid == 9 and rnd == 3:  # signs for the wrong round
            resign(reply, client_key(keys, 9), round=rnd - 1)
        return reply

    app = ClientApp(mods=[roles])

    @app.train()
    def fit(msg: Message, ctx: Context) -> Message:
        pid = int(ctx.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        assert len(msg.content.config_records) == 1  # one ConfigRecord, announcement inside
        x, y = data(pid, NODES)
        if pid == 8 and rnd == 3:
            raise RuntimeError("client crashed")
        if pid == 4 and rnd == 2:  # replays its round-1 update, freshly signed
            arrays = ctx.state["r1"]
        else:
            sd, _loss = local_train(msg.content["arrays"].to_torch_state_dict(), x, y)
            if pid == 8 and rnd == 1:
                sd["0.weight"][3, 4] = float("nan")
            if pid == 8 and rnd == 2:
                sd["0.weight"] = torch.zeros(16, 29)
            if pid == 0:
                (out / "digests").mkdir(exist_ok=True)
                (out / "digests" / str(rnd)).write_text(model_digest(sd))
            arrays = ArrayRecord(sd)
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(
            {"train_loss": 0.0, "num-examples": len(x)})}), reply_to=msg)

    @app.evaluate()
    def ev(msg: Message, ctx: Context) -> Message:
        loss, acc = accuracy(msg.content["arrays"])
        return Message(RecordDict({"metrics": MetricRecord(
            {"loss": loss, "acc": acc, "num-examples": 10})}), reply_to=msg)

    return app


def adversarial_server_app(ledger: Path, result: dict[str, Any]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        rec = RecordingGrid(grid)
        strategy = LedgerStrategy(FedAvg(fraction_train=1.0, fraction_evaluate=0.3,
                                         min_available_nodes=NODES), ledger=ledger)
        central: dict[int, tuple[float, float]] = {}

        def evaluate(rnd: int, arrays: ArrayRecord) -> MetricRecord:
            central[rnd] = accuracy(arrays)
            return MetricRecord({"loss": central[rnd][0], "acc": central[rnd][1]})

        strategy.start(rec, ArrayRecord(net().state_dict()), num_rounds=ROUNDS,
                       evaluate_fn=strategy.evaluate_fn(evaluate))
        # Plain FedAvg on the accepted replies alone, as they arrived.
        with Ledger(ledger, create=False) as led:
            ups = [e.entry for e in led.iter_entries(type="update")]
        plain = {}
        for rnd, replies in enumerate(rec.train_replies, 1):
            nodes = {u.node for u in ups if u.round == rnd}
            accepted = [r for r in replies if not r.has_error()
                        and str(r.metadata.src_node_id) in nodes]
            arrays, _ = FedAvg().aggregate_train(rnd, accepted)
            plain[rnd] = arrayrecord_digest(arrays)
        result.update(run=strategy.run_id, model=strategy.global_model, central=central,
                      plain=plain, key=strategy.verifier_key)

    return app


def test_adversarial_run_refuses_each_attack_and_aggregates_the_rest(tmp_path: Path):
    ledger = tmp_path / "ledger.db"
    result: dict[str, Any] = {}
    run_simulation(server_app=adversarial_server_app(ledger, result),
                   client_app=adversarial_client_app(tmp_path, tmp_path / "keys"),
                   num_supernodes=NODES, backend_config=backend(tmp_path))
    assert result, "the ServerApp did not finish"
    partition = node_map(tmp_path)
    assert len(partition) == NODES
    with Ledger(ledger, create=False) as led:
        assert led.verify().ok
        entries = [le.entry for le in led.iter_entries()]
        runs = [e for e in entries if isinstance(e, E.Run)]
        assert len(runs) == 1 and runs[0].run == result["run"]
        assert runs[0].strategy == "FedAvg" and runs[0].policy["keys"] == "tofu"

        refused = {(e.round, partition[e.node]): e.reason
                   for e in entries if isinstance(e, E.Rejected)}
        assert refused == EXPECTED_REFUSALS
        accepted: dict[int, set[int]] = {}
        for e in entries:
            if isinstance(e, E.Update):
                accepted.setdefault(e.round, set()).add(partition[e.node])
                assert e.key is not None and e.signature is not None
        assert accepted == EXPECTED_ACCEPTED
        members = {partition[e.node] for e in entries if isinstance(e, E.Member)}
        assert members == HONEST | {4, 5, 9}

        # one batch per round: updates, refusals and the model end in one tree head
        models = [(le.index, le.entry) for le in led.iter_entries(type="model")]
        assert [m.round for _, m in models] == [1, 2, 3]
        head_sizes = {h.size for h in led.heads()}
        for index, m in models:
            assert index + 1 in head_sizes
            assert all(led.get(i).entry.round == m.round for i in m.inputs)
            assert len(m.inputs) == len(EXPECTED_ACCEPTED[m.round])
        assert models[-1][1].model == result["model"]

        # the wrapper's model is, bit for bit, plain FedAvg on the accepted replies alone
        assert {m.round: m.model for _, m in models} == result["plain"]

        # the client's digest of its torch state_dict is the server's ArrayRecord digest
        node0 = next(n for n, p in partition.items() if p == 0)
        for rnd in range(1, ROUNDS + 1):
            want = (tmp_path / "digests" / str(rnd)).read_text()
            assert any(isinstance(e, E.Update) and e.node == node0 and e.round == rnd
                       and e.update == want for e in entries)

        # lineage of the final model: exactly the accepted updates, every refusal
        lin = lineage(led, result["model"])
        assert lin.ok, lin.problems
        got = {(led.get(u.index).entry.round, partition[u.node]) for u in lin.accepted_updates()}
        assert got == {(r, p) for r, ps in EXPECTED_ACCEPTED.items() for p in ps}
        assert {(led.get(x.index).entry.round, partition[x.node]): x.reason
                for x in lin.rejections()} == EXPECTED_REFUSALS
        assert [v.source for v in lin.versions] == ["model", "model", "model", "run"]
        assert all(v.blob == "unknown" for v in lin.versions)

    # training converged on the held-out split
    central = result["central"]
    assert central[ROUNDS][0] < central[0][0]
    assert central[ROUNDS][1] > central[0][1]
    assert central[ROUNDS][1] >= 0.85
